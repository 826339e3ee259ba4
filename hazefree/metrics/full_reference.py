"""Full-reference image quality metrics: PSNR and SSIM on batches of images.

Inputs are N x C x H x W floating-point tensors with values in [0, 1] (``psnr`` accepts any
``data_range``); every function returns one value per image (shape N) unless ``reduction="mean"``.
All arithmetic runs in float64, so scores do not depend on the input dtype beyond its rounding,
and stays differentiable (SSIM can serve as a loss).

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004. Three windows are available:

    ``"skimage"`` (default)  11 x 11 Gaussian, sigma 1.5, population covariance; equal to
                             ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
                             sigma=1.5, use_sample_covariance=False, data_range=1)``.
    ``"uniform7"``           7 x 7 uniform window with sample covariance: skimage's defaults.
    ``"gaussian11"``         Wang et al.'s ``ssim_index.m``: ``fspecial('gaussian', 11, 1.5)``,
                             ``filter2(..., 'valid')``. It yields the same numbers as ``"skimage"``,
                             whose Gaussian option was designed to match it; the name exists so that a
                             paper's protocol can be stated as it is written. The later ``ssim.m``
                             (2009), which first downsamples images larger than 256 px, is not
                             reproduced.

``y_channel=True`` scores the BT.601 studio-range luma of MATLAB's ``rgb2ycbcr`` (see
:func:`rgb_to_y`), the convention of most dehazing and super-resolution papers; Y is not rounded to
8 bits, so scores can differ from 8-bit pipelines in the 3rd-4th decimal.

Example:
    >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> psnr(x, x.clamp(0.1, 0.9)).shape
    torch.Size([2])
    >>> float(ssim(x, x)[0])
    1.0
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = ["psnr", "ssim", "rgb_to_y", "SSIM_VARIANTS", "SsimVariant", "Reduction"]

SsimVariant = Literal["skimage", "uniform7", "gaussian11"]
Reduction = Literal["none", "mean"]
SSIM_VARIANTS: tuple[str, ...] = ("skimage", "uniform7", "gaussian11")
_REDUCTIONS: tuple[str, ...] = ("none", "mean")

# Wang et al. 2004: C1 = (K1 L)^2, C2 = (K2 L)^2 with K1 = 0.01, K2 = 0.03 and L the dynamic range.
_K1, _K2 = 0.01, 0.03

# MATLAB rgb2ycbcr on [0, 1] input: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, in [16, 235] / 255.
_Y_OFFSET = 16.0 / 255.0
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


class _Window(NamedTuple):
    """A separable SSIM window: 1-D taps (summing to 1) and the covariance normalisation."""

    taps: tuple[float, ...]
    sample_covariance: bool


def _gaussian_taps(sigma: float, radius: int) -> tuple[float, ...]:
    w = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    s = sum(w)
    return tuple(v / s for v in w)


def _window(variant: str) -> _Window:
    if variant in ("skimage", "gaussian11"):
        # sigma 1.5 truncated at 3.5 sigma (scipy's gaussian_filter, as skimage calls it) gives
        # radius int(3.5 * 1.5 + 0.5) = 5, the same 11 taps as MATLAB's fspecial('gaussian', 11, 1.5).
        return _Window(_gaussian_taps(1.5, 5), sample_covariance=False)
    if variant == "uniform7":
        return _Window((1.0 / 7.0,) * 7, sample_covariance=True)
    raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {SSIM_VARIANTS}")


def _check_pair(pred: Tensor, target: Tensor, fn: str) -> None:
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{fn}: pred and target must be torch tensors")
    if pred.dim() != 4 or target.dim() != 4:
        raise ValueError(
            f"{fn}: pred and target must be N x C x H x W, got shapes "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"{fn}: pred and target must be floating-point, got {pred.dtype} and {target.dtype}")
    if pred.numel() == 0:
        raise ValueError(f"{fn}: empty images of shape {tuple(pred.shape)}")
    for name, t in (("pred", pred), ("target", target)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{fn}: {name} contains NaN or Inf values")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def rgb_to_y(image: Tensor) -> Tensor:
    """BT.601 studio-range luma as MATLAB's ``rgb2ycbcr``: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255.

    Args:
        image: N x 3 x H x W RGB in [0, 1].

    Returns:
        N x 1 x H x W luma in [16/255, 235/255] for inputs in [0, 1], in the input dtype.

    Example:
        >>> rgb_to_y(torch.ones(1, 3, 2, 2)).mul(255).round().unique()
        tensor([235.])
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"rgb_to_y expects an N x 3 x H x W RGB tensor, got {shape}")
    w = torch.tensor(_Y_WEIGHTS, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(dim=1, keepdim=True) + _Y_OFFSET


def _prepare(pred: Tensor, target: Tensor, y_channel: bool, fn: str) -> tuple[Tensor, Tensor]:
    _check_pair(pred, target, fn)
    x, y = pred.to(torch.float64), target.to(torch.float64)
    if y_channel:
        if x.shape[1] != 3:
            raise ValueError(f"{fn}: y_channel=True needs 3-channel RGB images, got {x.shape[1]} channels")
        x, y = rgb_to_y(x), rgb_to_y(y)
    return x, y


def psnr(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    reduction: Reduction = "none",
    *,
    y_channel: bool = False,
) -> Tensor:
    """Peak signal-to-noise ratio, 10 log10(L^2 / MSE), per image.

    The MSE of each image is averaged over all its channels and pixels. Identical images give
    ``inf`` (no cap); with ``reduction="mean"`` the mean of per-image PSNRs is returned (the usual
    protocol in dehazing papers, not the PSNR of the pooled MSE), which is ``inf`` if any image is.

    Args:
        pred: N x C x H x W prediction.
        target: N x C x H x W reference.
        data_range: the peak value L (1 for images in [0, 1]).
        reduction: ``"none"`` (N values) or ``"mean"`` (a scalar).
        y_channel: score the BT.601 luma of :func:`rgb_to_y` instead of the channels (C must be 3).

    Returns:
        float64 tensor, shape N or scalar, in dB.

    Example:
        >>> psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1))
        tensor([20.0000], dtype=torch.float64)
    """
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    x, y = _prepare(pred, target, y_channel, "psnr")
    mse = (x - y).square().flatten(1).mean(dim=1)
    # mse == 0 gives L^2 / 0 = inf and log10(inf) = inf: identical images score +inf.
    return _reduce(10.0 * torch.log10(data_range**2 / mse), reduction)


def _filter_valid(x: Tensor, taps: tuple[float, ...]) -> Tensor:
    """Separable 'valid' correlation of every channel of N x C x H x W with the 1-D ``taps``.

    Written as a weighted sum of shifted views: float64 ``conv2d`` has no fast CPU kernel and was
    measured about 2x slower for an 11-tap window on 620 x 460 images.
    """
    k = len(taps)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    z = x[..., 0:h, :] * taps[0]
    for j in range(1, k):
        z.add_(x[..., j : j + h, :], alpha=taps[j])
    out = z[..., 0:w] * taps[0]
    for j in range(1, k):
        out.add_(z[..., j : j + w], alpha=taps[j])
    return out


def ssim(
    pred: Tensor,
    target: Tensor,
    *,
    y_channel: bool = False,
    variant: SsimVariant = "skimage",
    reduction: Reduction = "none",
) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) per image, for images in [0, 1].

    Local statistics are weighted window means (Wang et al. eqs. 14-16: mu_x = sum w_i x_i,
    sigma_x^2 = sum w_i (x_i - mu_x)^2, sigma_xy = sum w_i (x_i - mu_x)(y_i - mu_y)); the index is
    eq. 13, SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    with C1 = (0.01 L)^2, C2 = (0.03 L)^2 and L = 1. It is averaged over all windows lying fully
    inside the image (eq. 17, the MSSIM; skimage's reflect-padded map cropped by (win - 1) / 2 px
    is the same set of windows), then over channels. ``"uniform7"`` scales the variances by
    n / (n - 1) (n = 49), skimage's ``use_sample_covariance=True``.

    Args:
        pred: N x C x H x W prediction in [0, 1].
        target: N x C x H x W reference in [0, 1].
        y_channel: score the BT.601 luma of :func:`rgb_to_y` instead of the channels (C must be 3).
        variant: ``"skimage"`` (default), ``"uniform7"`` or ``"gaussian11"``; see the module docstring.
        reduction: ``"none"`` (N values) or ``"mean"`` (a scalar).

    Returns:
        float64 tensor, shape N or scalar, in [-1, 1]; 1 for identical images.

    Raises:
        ValueError: bad shapes, NaN/Inf, unknown variant, or an image smaller than the window
            (11 px, or 7 px for ``"uniform7"``) in height or width.

    Example:
        >>> x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> bool(ssim(x, (x + 0.05).clamp(0, 1)) < 1)
        True
    """
    window = _window(variant)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    x, y = _prepare(pred, target, y_channel, "ssim")
    k = len(window.taps)
    if x.shape[-2] < k or x.shape[-1] < k:
        raise ValueError(
            f"ssim: images of size {tuple(x.shape[-2:])} are smaller than the {k} x {k} window "
            f"of variant {variant!r}"
        )
    taps = window.taps
    c1, c2 = _K1**2, _K2**2
    cov_norm = k * k / (k * k - 1.0) if window.sample_covariance else 1.0

    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = cov_norm * (_filter_valid(x * x, taps) - mu_xx)
    var_y = cov_norm * (_filter_valid(y * y, taps) - mu_yy)
    cov_xy = cov_norm * (_filter_valid(x * y, taps) - mu_xy)

    s = ((2.0 * mu_xy + c1) * (2.0 * cov_xy + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return _reduce(s.mean(dim=(-2, -1)).mean(dim=1), reduction)
