"""Dehazing strength: a method's own transmission with its optical depth scaled (issue #24).

With t = exp(-beta d) (Koschmieder, :mod:`hazefree.physics`), scaling the optical depth
tau = -ln t by S gives t' = t^S. The result is recomposed with the method's own airlight A and
its lower bound t_min:

    t_e = max(t, t_min)            the transmission the method's recovery used (Ma et al. eq. 42)
    t'  = max(t_e^S, t_min)        S > 1 never amplifies noise beyond the method's own 1 / t_min
    J   = clip((I - A) / t' + A, 0, 1)

S = 1 is the method's own result (callers skip the recomposition then, so it stays bit for bit
what the method returns), S = 0 gives t' = 1 and J = I, S > 1 removes more haze. Only methods
that produce t and A (and say which t_min they clamp to) can take a strength: DCP, Guided-Pix2Pix,
DehazeNet; AOD-Net, FFA-Net, GridDehazeNet and MSBDN map hazy to clear directly.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

from .physics import _as_airlight

__all__ = ["check_strength", "strength_t_min", "recompose", "recompose_file", "AirlightRecorder", "StrengthError"]


class StrengthError(ValueError):
    """A strength that cannot be used: not a finite number >= 0, or a method without t and A."""


def check_strength(strength: object) -> float:
    """``strength`` as a float; StrengthError unless it is a finite number >= 0."""
    if isinstance(strength, bool) or not isinstance(strength, Real):
        raise StrengthError(f"strength must be a number >= 0, got {strength!r}")
    value = float(strength)
    if not math.isfinite(value) or value < 0:
        raise StrengthError(f"strength must be a finite number >= 0 (1: the method's own result), got {strength!r}")
    return value


def strength_t_min(model: nn.Module, method: str) -> float:
    """The lower bound of t that ``model`` clamps to, if it can take a strength; else StrengthError
    naming ``method``. A model can when it returns t and A and keeps its bound as ``t_min``."""
    t_min = getattr(model, "t_min", None)
    if isinstance(t_min, bool) or not isinstance(t_min, Real):
        raise StrengthError(
            f"method {method!r} cannot take a strength: it has no transmission and airlight to "
            "recompose (use dcp, guided-pix2pix or dehazenet, or leave the strength at 1)"
        )
    return float(t_min)


def recompose(hazy: Tensor, transmission: Tensor, airlight: Tensor, t_min: float, strength: float) -> Tensor:
    """J = clip((I - A) / max(max(t, t_min)^S, t_min) + A, 0, 1) (module docstring).

    Args:
        hazy: N x 3 x H x W image I in [0, 1].
        transmission: N x 1 x H x W (or N x 3 x H x W) transmission t of the method.
        airlight: the method's A, N x 3 x 1 x 1 (or anything :func:`hazefree.physics.remove_haze` takes).
        t_min: the method's lower bound of t.
        strength: S >= 0.
    """
    strength = check_strength(strength)
    a = _as_airlight(airlight, hazy)
    t = transmission.to(hazy.dtype).clamp(min=t_min).pow(strength).clamp_(min=t_min, max=1.0)
    return ((hazy - a) / t + a).clamp_(0.0, 1.0)


class AirlightRecorder:
    """A :class:`~hazefree.api.Dehazer` that remembers the airlight of its last whole-image call
    (``None`` after a tiled one, which does not call it), so that a result can be recomposed at
    another strength later without running the model again (the web page's slider)."""

    def __init__(self, dehazer) -> None:
        self._dehazer = dehazer
        self.airlight: Tensor | None = None

    def __getattr__(self, name: str):
        return getattr(self._dehazer, name)

    def __call__(self, image: Tensor):
        out = self._dehazer(image)
        self.airlight = None if out.airlight is None else out.airlight.detach().cpu()
        return out


def recompose_file(
    source, transmission, airlight: Tensor, t_min: float, strength: float, output, max_pixels: int | None = None
) -> None:
    """Write ``output`` as the method's result for ``source`` at ``strength``, from the saved
    16-bit ``transmission`` map and the ``airlight`` (no model run); written as ``hazefree dehaze``
    writes (format, bit depth, gray, alpha and ICC profile of the input; atomically)."""
    from .io import read_image, write_image

    image = read_image(source, max_pixels=max_pixels)
    t = read_image(transmission, max_pixels=max_pixels).rgb[:, :1]
    clear = recompose(image.rgb, t, airlight.view(1, -1, 1, 1), t_min, strength)
    write_image(output, clear, alpha=image.alpha, bit_depth=image.bit_depth, gray=image.gray, icc_profile=image.icc_profile)
