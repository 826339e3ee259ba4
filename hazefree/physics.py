"""Atmospheric scattering model and airlight estimation.

The haze model (Koschmieder; used by every method here):

    I(z) = J(z) t(z) + A (1 - t(z)),    t(z) = exp(-beta d(z))

with I the hazy image, J the clear scene, A the RGB atmospheric light (airlight) and t the
transmission. Tensors are N x C x H x W floats in [0, 1]; an airlight is N x 3 x 1 x 1 so that it
broadcasts over the image; a transmission is N x 1 x H x W (or N x 3 x H x W per channel).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence, Union, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import plain_cpu, rgb_to_gray

__all__ = [
    "AirlightMethod",
    "transmission_from_depth",
    "add_haze",
    "remove_haze",
    "dark_channel",
    "opened_maximum",
    "estimate_airlight",
    "estimate_airlights",
    "airlight_max_luma",
    "airlight_dark_channel",
    "airlight_floor",
    "check_image",
    "fit_haze_model",
    "transmission_of",
]

AirlightMethod = Literal["max_luma", "dark_channel", "dark_channel_brightest"]
AIRLIGHT_METHODS: tuple[str, ...] = get_args(AirlightMethod)

# The smallest airlight channel value used anywhere. A black airlight makes I / A undefined (DCP)
# and has no physical meaning; 1e-3 is below one 8-bit grey level.
MIN_AIRLIGHT = 1e-3


def check_image(image: Tensor, name: str = "image", channels: int | None = 3) -> None:
    """Raise ValueError unless ``image`` is a finite N x C x H x W float tensor in [0, 1]."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(f"{name} must be N x C x H x W, got shape {tuple(image.shape)}")
    if channels is not None and image.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {image.shape[1]}")
    if not image.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [0, 1], got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    lo, hi = (v.item() for v in torch.aminmax(image))  # one pass; a NaN makes both NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")


def _as_airlight(airlight: Union[Tensor, float, tuple], like: Tensor) -> Tensor:
    a = torch.as_tensor(airlight, dtype=like.dtype, device=like.device)
    if a.dim() == 0:
        a = a.expand(3)
    if a.dim() == 1:
        a = a.view(1, -1, 1, 1)
    elif a.dim() == 2:
        a = a.view(a.shape[0], a.shape[1], 1, 1)
    if a.dim() != 4 or a.shape[1] not in (1, 3) or a.shape[-2:] != (1, 1):
        raise ValueError(f"airlight must be a scalar, (3,), N x 3 or N x 3 x 1 x 1, got {tuple(a.shape)}")
    return a


def transmission_from_depth(depth: Tensor, beta: Union[float, Tensor]) -> Tensor:
    """Transmission t = exp(-beta d) (Beer-Lambert) for depth ``d`` >= 0 in scene units.

    ``beta`` is a float or an N-element tensor (one scattering coefficient per image).
    """
    if not torch.isfinite(depth).all() or (depth < 0).any():
        raise ValueError("depth must be finite and non-negative")
    b = torch.as_tensor(beta, dtype=depth.dtype, device=depth.device)
    if b.dim() == 1:
        b = b.view(-1, 1, 1, 1)
    return torch.exp(-b * depth)


def add_haze(
    clear: Tensor,
    t_or_depth: Tensor,
    airlight: Union[Tensor, float, tuple],
    beta: Union[float, Tensor, None] = None,
) -> Tensor:
    """Render haze, I = J t + A (1 - t).

    Args:
        clear: N x 3 x H x W clear image J in [0, 1].
        t_or_depth: transmission in [0, 1] (if ``beta`` is None) or depth (if ``beta`` is given),
            N x 1 x H x W or N x 3 x H x W.
        airlight: A as a scalar, (3,), N x 3 or N x 3 x 1 x 1, in [0, 1].
        beta: scattering coefficient; when given, ``t = exp(-beta * t_or_depth)``.

    Returns:
        The hazy image I, N x 3 x H x W in [0, 1].
    """
    check_image(clear, "clear")
    t = t_or_depth if beta is None else transmission_from_depth(t_or_depth, beta)
    if beta is None and (t.min() < 0 or t.max() > 1):
        raise ValueError("transmission must lie in [0, 1]; pass beta= to give a depth map")
    a = _as_airlight(airlight, clear)
    return (clear * t + a * (1.0 - t)).clamp(0.0, 1.0)


def remove_haze(
    hazy: Tensor,
    transmission: Tensor,
    airlight: Union[Tensor, float, tuple],
    t_min: float = 0.1,
    clamp: bool = True,
) -> Tensor:
    """Invert the haze model, J = (I - A) / max(t, t_min) + A (Ma et al. 2021, eq. 42).

    ``t_min`` bounds the amplification of noise where the transmission is small (He et al. use 0.1);
    with ``clamp`` the result is clipped to [0, 1]. Gradients flow through every input.
    """
    a = _as_airlight(airlight, hazy)
    t = transmission.clamp(min=t_min) if t_min > 0 else transmission
    if torch.is_grad_enabled() and any(v.requires_grad for v in (hazy, t, a)):
        clear = (hazy - a) / t + a
        return clear.clamp(0.0, 1.0) if clamp else clear
    # no gradient: the same operations in place, one image-sized temporary instead of four
    clear = (hazy - a).div_(t).add_(a)
    return clear.clamp_(0.0, 1.0) if clamp else clear


def dark_channel(image: Tensor, patch_size: int = 15) -> Tensor:
    """Dark channel (He et al., CVPR 2009, eq. 5): min over colour channels, then a min filter.

    The min filter uses a ``patch_size`` x ``patch_size`` square window clipped at the border.
    Returns N x 1 x H x W.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd int, got {patch_size}")
    m = image.amin(dim=1, keepdim=True)
    r = patch_size // 2
    if r == 0:
        return m
    if plain_cpu(m) and m.dtype in (torch.float32, torch.float64) and not (
        m.requires_grad and torch.is_grad_enabled()
    ):
        return _min_filter_opencv(m, patch_size)
    # a square window is two 1-D passes, which is exact for a min
    return _min_filter_1d(_min_filter_1d(m, r, dim=-2), r, dim=-1)


def _min_filter_opencv(m: Tensor, patch_size: int) -> Tensor:
    """The same min filter by ``cv2.erode`` (a library primitive, ~3x faster on the CPU): erosion
    with a square kernel, whose default border value (the dtype's maximum) never wins, so border
    windows are clipped exactly as in :func:`_min_filter_1d`; a min has no rounding, so the two
    agree bit for bit (checked by benchmarks/dark_channel.py and tests/test_physics.py)."""
    import cv2  # imported here: physics is imported with hazefree, cv2 is needed only now

    kernel = np.ones((patch_size, patch_size), np.uint8)
    out = torch.empty_like(m, memory_format=torch.contiguous_format)
    for i in range(m.shape[0]):
        cv2.erode(m[i, 0].contiguous().numpy(), kernel, dst=out[i, 0].numpy())
    return out


def _min_filter_1d(x: Tensor, r: int, dim: int) -> Tensor:
    """Min over the window [i - r, i + r] along ``dim``, clipped at the border.

    By doubling: after padding with +inf, the minimum over width s gives the one over width 2 s in
    one elementwise ``minimum`` of two shifted views, so a window of 2 r + 1 costs about log2(2 r)
    passes over memory; on CPU that is an order of magnitude faster than F.max_pool2d with a 15 x 1
    kernel, with the same result.
    """
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [r, r]
    m = F.pad(x, pad, value=float("inf"))  # the border window is clipped: +inf never wins
    width, size = 1, 2 * r + 1
    while 2 * width <= size:
        m = torch.minimum(m.narrow(dim, 0, m.shape[dim] - width), m.narrow(dim, width, m.shape[dim] - width))
        width *= 2
    # the window of `size` is covered by two overlapping windows of `width`
    return torch.minimum(m.narrow(dim, 0, n), m.narrow(dim, size - width, n))


def _top_indices(values: Tensor, k: int) -> Tensor:
    """Indices (N x k, ascending) of the ``k`` largest of each row of ``values`` (N x M); among equal
    values the lowest indices. ``topk`` alone leaves ties in an unspecified order, and 8-bit photos
    tie on most ranks, so this rule is what makes A reproducible outside PyTorch (ONNX callers)."""
    kth = values.topk(k, dim=1).values[:, -1:]
    above, tied = values > kth, values == kth
    wanted = k - above.sum(dim=1, keepdim=True)
    picked = above | (tied & (tied.cumsum(dim=1) <= wanted))
    return picked.nonzero()[:, 1].view(values.shape[0], k)


def _top_k_mean(values: Tensor, image: Tensor, fraction: float) -> Tensor:
    """Mean RGB of the pixels with the largest ``values`` (the top ``fraction``, at least one)."""
    n, _, h, w = image.shape
    k = max(1, int(math.ceil(fraction * h * w)))
    idx = _top_indices(values.reshape(n, -1), k)  # N x k
    rgb = image.reshape(n, image.shape[1], -1)
    picked = torch.gather(rgb, 2, idx.unsqueeze(1).expand(-1, image.shape[1], -1))
    return picked.mean(dim=2).view(n, -1, 1, 1)


def airlight_max_luma(image: Tensor, top_fraction: float = 1e-3) -> Tensor:
    """Airlight as the brightest-luma pixels (Ma et al. 2021, Sec. III-E: the pixel of maximum Y).

    Deviation: instead of the single brightest pixel, the mean RGB of the brightest
    ``top_fraction`` of pixels (at least one) is used, so a single hot pixel or specular highlight
    moves A by at most 1/k of its excess. With ``top_fraction=0`` it is the paper's single pixel.

    Returns N x 3 x 1 x 1, each channel clamped to [MIN_AIRLIGHT, 1].
    """
    luma = rgb_to_gray(image)
    return _top_k_mean(luma, image, top_fraction).clamp(MIN_AIRLIGHT, 1.0)


def airlight_dark_channel(
    image: Tensor,
    patch_size: int = 15,
    top_fraction: float = 1e-3,
    brightest_fraction: float = 0.1,
    dark: Tensor | None = None,
) -> Tensor:
    """Airlight by the dark channel prior (He et al. 2009, Sec. 4.4).

    Among the ``top_fraction`` (0.1 %) of pixels with the brightest dark channel, He et al. take the
    one of highest intensity; for robustness to single hot pixels this takes the mean RGB of the
    brightest ``brightest_fraction`` of those candidates (at least one); ties rank by pixel index
    (lowest first) at both steps. ``dark`` may pass the
    image's dark channel if it is already computed. Returns N x 3 x 1 x 1.
    """
    n, c, h, w = image.shape
    dark = (dark_channel(image, patch_size) if dark is None else dark).reshape(n, -1)
    k = max(1, int(math.ceil(top_fraction * h * w)))
    cand = _top_indices(dark, k)  # N x k
    # the luma of the candidates only (the same per-pixel arithmetic as on the whole image)
    cand_rgb = torch.gather(image.reshape(n, c, -1), 2, cand.unsqueeze(1).expand(-1, c, -1))
    luma = rgb_to_gray(cand_rgb.unsqueeze(-1)).reshape(n, k)
    m = max(1, int(math.ceil(brightest_fraction * k)))
    best = torch.gather(cand, 1, _top_indices(luma, m))
    rgb = torch.gather(image.reshape(n, c, -1), 2, best.unsqueeze(1).expand(-1, c, -1))
    return rgb.mean(dim=2).view(n, c, 1, 1).clamp(MIN_AIRLIGHT, 1.0)


def airlight_floor(
    hazy: Tensor, transmission: Tensor, clip_fraction: float = 0.01, saturated: float = 0.98
) -> Tensor:
    """The smallest airlight for which the recovered scene stays at most 1 on all but
    ``clip_fraction`` of the pixels, given the transmission.

    From eq. 1, J_c = (I_c - A_c) / t + A_c <= 1 holds iff A_c >= (I_c - t) / (1 - t) (t < 1). An
    airlight read off the haziest pixels is too dark wherever no pixel is opaque (light haze), and then
    bright surfaces come out above 1; this bound, with the model's own t, says how far A must rise.
    Pixels with a channel at or above ``saturated`` are left out: they clip for any A < 1.
    Returns N x 3 x 1 x 1, each channel at most 1 (-inf where every pixel is saturated).
    """
    n, c, h, w = hazy.shape
    t = transmission.expand(n, 1, h, w)
    bound = (hazy - t) / (1.0 - t).clamp_min(1e-3)
    bound = bound.masked_fill((hazy >= saturated).any(dim=1, keepdim=True), float("-inf"))
    k = max(1, int(math.ceil(clip_fraction * h * w)))
    return bound.reshape(n, c, -1).topk(k, dim=2).values[..., -1:].view(n, c, 1, 1)


def opened_maximum(image: Tensor, size: int) -> Tensor:
    """Per channel, the largest value of ``image`` after a ``size`` x ``size`` grey opening (a min
    filter, then a max filter; windows clipped at the border): the brightest region at least that
    large. A light source smaller than the window (a headlight, a street lamp) does not count, an
    extended bright region (fog, sky) does, so it bounds an airlight read off single pixels.
    Returns N x C x 1 x 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd int, got {size}")
    r = size // 2
    if r == 0:
        return image.amax(dim=(2, 3), keepdim=True)
    # separable 1-D passes (exact for min and max); max_pool2d's k x k kernel costs k^2 per pixel
    eroded = _min_filter_1d(_min_filter_1d(image, r, dim=-2), r, dim=-1)
    return -_min_filter_1d(_min_filter_1d(-eroded, r, dim=-2), r, dim=-1).amin(dim=(2, 3), keepdim=True)


def estimate_airlight(image: Tensor, method: str = "max_luma") -> Tensor:
    """Airlight by name: ``"max_luma"`` (Guided-Pix2Pix), ``"dark_channel"`` (He et al., mean of
    the brightest 10 % of the candidates) or ``"dark_channel_brightest"`` (He et al.'s exact rule:
    the single brightest candidate, which does not pull A below an opaque white haze)."""
    return estimate_airlights(image, (method,))[method]


def estimate_airlights(image: Tensor, methods: Sequence[str] = AIRLIGHT_METHODS) -> dict[str, Tensor]:
    """Several airlight estimates (see :func:`estimate_airlight`) by name, each once however often
    it is named; the dark channel is computed once for all the rules that need it."""
    unknown = [m for m in methods if m not in AIRLIGHT_METHODS]
    if unknown:
        raise ValueError(f"unknown airlight method {unknown[0]!r}; choose one of {AIRLIGHT_METHODS}")
    dark = functools.cache(lambda: dark_channel(image))  # computed on first use, then shared
    rules = {
        "max_luma": lambda: airlight_max_luma(image),
        "dark_channel": lambda: airlight_dark_channel(image, dark=dark()),
        "dark_channel_brightest": lambda: airlight_dark_channel(image, brightest_fraction=0.0, dark=dark()),
    }
    return {m: rules[m]() for m in dict.fromkeys(methods)}


def transmission_of(hazy: Tensor, clear: Tensor, airlight: Tensor) -> tuple[Tensor, Tensor]:
    """The transmission that renders ``clear`` into ``hazy`` under ``airlight`` (N x 3 x 1 x 1, grey
    or tinted): per pixel the least-squares t of I = J t + A (1 - t) over the colour channels (eq. 1),
    t = sum_c (I_c - A_c)(J_c - A_c) / sum_c (J_c - A_c)^2, clamped to [0, 1].

    Returns (t, contrast), both N x 1 x H x W; contrast = sum_c (J_c - A_c)^2. Where it is small J is
    close to A, and any t renders I close to A: t is undetermined there.
    """
    dj, di = clear - airlight, hazy - airlight
    contrast = dj.pow(2).sum(1, keepdim=True)
    return ((di * dj).sum(1, keepdim=True) / (contrast + 1e-8)).clamp(0.0, 1.0), contrast


def fit_haze_model(
    hazy: Tensor, clear: Tensor, airlights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Recover a grey airlight A and the transmission t from a synthetic (hazy, clear) pair.

    Inverts I = J t + A (1 - t) for a pair rendered with it (RESIDE, our synthetic haze): for each
    candidate A the per-pixel least-squares t over the colour channels is
    t = sum_c (I_c - A)(J_c - A) / sum_c (J_c - A)^2, and the A with the smallest re-rendering error
    wins. Where J is close to A, t is undetermined and barely matters: any t renders I close to A.

    Args:
        hazy, clear: N x 3 x H x W in [0, 1].
        airlights: candidate grey levels; default 0.50, 0.51, ..., 1.00.

    Returns:
        (airlight N x 3 x 1 x 1, transmission N x 1 x H x W in [0, 1], fit PSNR in dB (N,)); the fit
        PSNR of the re-rendered hazy image tells whether the pair follows the scattering model at all
        (RESIDE pairs: about 60 dB; real cloud or fog pairs: far lower).
    """
    check_image(hazy, "hazy")
    check_image(clear, "clear")
    if hazy.shape != clear.shape:
        raise ValueError(f"hazy and clear differ in shape: {tuple(hazy.shape)} vs {tuple(clear.shape)}")
    if airlights is None:
        airlights = torch.linspace(0.5, 1.0, 51)
    n = hazy.shape[0]
    best_err = torch.full((n,), float("inf"), dtype=hazy.dtype, device=hazy.device)
    best_a = torch.zeros(n, dtype=hazy.dtype, device=hazy.device)
    best_t = torch.zeros_like(hazy[:, :1])
    for a in airlights.tolist():
        t, _ = transmission_of(hazy, clear, torch.full((1, 3, 1, 1), a, dtype=hazy.dtype, device=hazy.device))
        err = ((clear - a) * t - (hazy - a)).pow(2).flatten(1).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_a = torch.where(better, torch.full_like(best_a, a), best_a)
        best_t = torch.where(better.view(-1, 1, 1, 1), t, best_t)
    fit_db = -10.0 * torch.log10(best_err.clamp_min(1e-12))
    return best_a.view(n, 1, 1, 1).expand(n, 3, 1, 1).contiguous(), best_t, fit_db
