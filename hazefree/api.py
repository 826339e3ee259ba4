"""The one-call Python API: ``hazefree.dehaze(image, method=...)``."""

from __future__ import annotations

import math

from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from . import models
from .models import DehazeOutput
from .physics import AIRLIGHT_METHODS, check_image

__all__ = ["Dehazer", "dehaze", "default_method", "DEFAULT_MODEL"]

# The learned default; ``dcp`` is used until weights for it ship with the package.
DEFAULT_MODEL = "guided-pix2pix"


def default_method() -> str:
    """The method ``hazefree dehaze`` uses when none is given."""
    return DEFAULT_MODEL if models.has_pretrained(DEFAULT_MODEL) else "dcp"


def _resolve_model(method: str, airlight: str | None) -> nn.Module:
    if airlight is not None and airlight not in AIRLIGHT_METHODS:
        raise ValueError(f"unknown airlight method {airlight!r}; choose one of {AIRLIGHT_METHODS}")
    path = Path(method)
    if method not in models.MODELS and (path.suffix in {".safetensors", ".pt", ".pth"}):
        model = models.load_file(path)
    else:
        model = models.load(method)
    return model if airlight is None else models.override_airlight(model, airlight, method)


class Dehazer:
    """A loaded dehazing method, reusable over many images.

    Args:
        method: a registry name (``"dcp"``, ``"guided-pix2pix"``, ...) or a weights file written by
            ``hazefree train``; ``None`` for :func:`default_method`.
        airlight: override the model's airlight estimator (``"max_luma"``, ``"dark_channel"`` or
            ``"dark_channel_brightest"``): A is that estimator's, a learned airlight head or floor
            bypassed (:func:`hazefree.models.override_airlight`); ValueError for a method without
            an airlight (AOD-Net, MSBDN, FFA-Net, GridDehazeNet).
        device: torch device to run on.
        post: optional post-processing of the result, ``"rescale"`` or ``"retinex"`` (Ma et al.
            2021, GP2P-Rescale / GP2P-Retinex; see :mod:`hazefree.postprocess`).
        strength: S >= 0, the method's optical depth scaled: t' = t^S (:mod:`hazefree.strength`);
            1 (default) is the method's own result, 0 the input, above 1 removes more. Methods
            without t and A refuse any other value (ValueError naming the method).
    """

    def __init__(
        self,
        method: str | None = None,
        airlight: str | None = None,
        device: str = "cpu",
        post: str | None = None,
        strength: float = 1.0,
    ):
        from .postprocess import get_post
        from .strength import check_strength, strength_t_min

        self.post = post
        self._post = get_post(post)  # unknown names fail here, before the model is loaded
        self.strength = check_strength(strength)
        self.method = method or default_method()
        self.device = torch.device(device)
        self.model = _resolve_model(self.method, airlight).to(self.device).eval()
        self.t_min = None if self.strength == 1.0 else strength_t_min(self.model, self.method)

    @torch.inference_mode()
    def __call__(self, image: Tensor) -> DehazeOutput:
        """Dehaze an N x 3 x H x W (or 3 x H x W) float tensor in [0, 1]."""
        squeeze = isinstance(image, Tensor) and image.dim() == 3
        if squeeze:
            image = image.unsqueeze(0)
        check_image(image, "image")
        image = image.to(self.device, torch.float32)
        out = self.model(image)
        if self.strength != 1.0:  # S = 1 keeps the method's own result, bit for bit
            from .strength import recompose

            out = out._replace(clear=recompose(image, out.transmission, out.airlight, self.t_min, self.strength))
        if not all(math.isfinite(v.item()) for v in torch.aminmax(out.clear)):  # one pass, no mask
            raise RuntimeError(f"method {self.method!r} produced non-finite pixels")
        if self._post is not None:
            out = out._replace(clear=self._post(out.clear.clamp(0.0, 1.0)))
        if squeeze:
            out = DehazeOutput(*(None if v is None else v.squeeze(0) for v in out))
        return out


def dehaze(
    image: Union[Tensor, str, Path],
    method: str | None = None,
    airlight: str | None = None,
    post: str | None = None,
    strength: float = 1.0,
) -> DehazeOutput:
    """Dehaze one image (a tensor in [0, 1], or an image file) with ``method`` at ``strength``
    (see :class:`Dehazer`), then optionally post-process it (``post="rescale"`` or ``"retinex"``,
    see :mod:`hazefree.postprocess`).

    Returns:
        :class:`DehazeOutput` with ``clear`` (same layout as the input tensor; 1 x 3 x H x W for a
        file), ``transmission`` and ``airlight`` (None for methods that do not model them).

    Example:
        >>> out = dehaze(torch.rand(3, 64, 64), method="dcp")
        >>> out.clear.shape, out.airlight.shape
        (torch.Size([3, 64, 64]), torch.Size([3, 1, 1]))
    """
    if isinstance(image, (str, Path)):
        from .io import read_image

        image = read_image(image).rgb
    return Dehazer(method, airlight, post=post, strength=strength)(image)
