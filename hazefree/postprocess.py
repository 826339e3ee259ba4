"""Post-processing of dehazed images from Guided-Pix2Pix (Ma et al., JSTARS 2021, Sec. III-E).

Table I of the paper reports, beside the network output GP2P-G, two post-processed variants:

* **GP2P-Rescale** (:func:`rescale`). The paper names it ("the rescaled ... results", "the details
  ... can be enhanced by the rescale method") but gives no formula. Our reading: the linear
  min-max mapping that eq. 50 applies to the Retinex output, applied to the dehazed image itself,
  i.e. a per-image contrast stretch ``(J - min J) / (max J - min J)`` over all pixels and channels
  together (one range for the three channels, so that the white balance is kept). Eq. 46,
  ``J = (I - A) / t + A``, is not confined to [0, 1]; the stretch is the alternative to clipping
  its result into the display range. hazefree's models clip ``J`` already, so on their outputs
  ``rescale`` only changes images that do not reach both 0 and 1; to rescale the unclipped estimate,
  pass ``remove_haze(I, t, A, clamp=False)`` (``rescale`` accepts any finite values).
* **GP2P-Retinex** (:func:`retinex`): multi-scale Retinex in the log domain (eq. 47) followed by a
  mapping of ``mean +- d_r * std`` of the Retinex output to the display range (eqs. 48-50).

Both take and return N x 3 x H x W float tensors with values in [0, 1], image by image.

Example:
    >>> x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    >>> y = rescale(x); float(y.min()), float(y.max())
    (0.0, 1.0)
    >>> retinex(x).shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .physics import check_image

__all__ = ["rescale", "retinex", "gaussian_blur", "POST_METHODS", "get_post", "describe_post"]

POST_METHODS: tuple[str, ...] = ("rescale", "retinex")

# Scales of the paper's multi-scale Retinex (Sec. III-E, below eq. 47), in pixels.
RETINEX_SIGMAS: tuple[float, ...] = (15.0, 80.0, 250.0)
# d_r is not given in the paper. 1.2 is the "dynamic" default of the GIMP Retinex filter, whose
# range mapping mean +- dynamic * std is exactly eqs. 48-49.
RETINEX_DYNAMIC = 1.2
# Gaussian taps are kept up to 4 sigma (the discarded tail weighs 6e-5 of the kernel), as scipy.
_TRUNCATE = 4.0
# A Retinex output whose standard deviation is below this is treated as flat. r is a difference of
# logarithms: one 8-bit grey level at mid-grey is log(129 / 128) = 8e-3, float32 rounding of a
# flat image's r is ~1e-7, so 1e-5 separates "no detail" from "rounding noise" with room both ways.
_FLAT_STD = 1e-5


def _check(image: Tensor, fn: str) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{fn}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{fn}: image must be N x 3 x H x W, got shape {tuple(image.shape)}")


def rescale(image: Tensor, per_channel: bool = False) -> Tensor:
    """GP2P-Rescale: stretch each image linearly so that its minimum maps to 0 and its maximum to 1.

    The min-max mapping of eq. 50 applied to the dehazed image (see the module docstring for why
    this is our reading of the paper). An image that already spans [0, 1] is returned unchanged; a
    constant image (no range to stretch) is returned clipped to [0, 1].

    Args:
        image: N x 3 x H x W float tensor with finite values (any range, e.g. an unclipped eq. 46
            estimate).
        per_channel: stretch each channel on its own range (changes the colour balance) instead of
            one range for the three channels (the default).

    Returns:
        N x 3 x H x W tensor in [0, 1], same dtype.

    Example:
        >>> rescale(torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)).flatten()
        tensor([0.0000, 0.5000, 1.0000])
    """
    _check(image, "rescale")
    if not image.is_floating_point():
        raise ValueError(f"rescale: image must be floating-point, got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"rescale: empty image of shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("rescale: image contains NaN or Inf values")
    dims = (2, 3) if per_channel else (1, 2, 3)
    lo = image.amin(dim=dims, keepdim=True)
    hi = image.amax(dim=dims, keepdim=True)
    span = hi - lo
    flat = span <= 0
    # Dividing by 1 where the span is 0 leaves constant images (or channels) as they are.
    out = torch.where(flat, image, (image - lo) / torch.where(flat, torch.ones_like(span), span))
    return out.clamp(0.0, 1.0)


def _gaussian_taps(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT lengths with small prime factors are the fast ones."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _blur_axis(x: Tensor, sigma: float, dim: int) -> Tensor:
    """Gaussian blur of ``x`` along ``dim``: zero-padded linear convolution by real FFTs, divided by
    the blur of ones, so each output is the Gaussian-weighted mean of the pixels inside the image."""
    n = x.shape[dim]
    # scipy's truncation rule (radius = round(4 sigma)); taps farther than n - 1 from the centre
    # never meet a pixel, so truncating there as well is exact.
    radius = min(int(_TRUNCATE * sigma + 0.5), n - 1)
    if radius == 0:
        return x
    taps = _gaussian_taps(sigma, radius, x.dtype, x.device)
    size = _fft_size(n + 2 * radius)  # >= the full linear convolution: no circular wrap-around
    kernel = torch.fft.rfft(taps, n=size)

    def convolve(v: Tensor, axis: int) -> Tensor:
        spectrum = torch.fft.rfft(v, n=size, dim=axis)
        shape = [1] * v.dim()
        shape[axis] = kernel.shape[0]
        full = torch.fft.irfft(spectrum * kernel.view(shape), n=size, dim=axis)
        return full.narrow(axis, radius, n)  # output i is centred on input i

    ones = torch.ones(n, dtype=x.dtype, device=x.device)
    weight_shape = [1] * x.dim()
    weight_shape[dim] = n
    weight = convolve(ones, 0).view(weight_shape)
    return convolve(x, dim) / weight


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of every channel, with edge-renormalised weights.

    Implemented as two 1-D convolutions (rows, then columns) computed with real FFTs on zero-padded
    signals, so the cost is O(H W log(H W)) whatever ``sigma`` (the Retinex scale sigma = 250 would
    need 2001 taps per pass as a direct convolution). Taps are truncated at round(4 sigma), as in
    ``scipy.ndimage.gaussian_filter``. At the border
    each output is divided by the weight of the taps that fall inside the image, i.e. it is the
    Gaussian-weighted mean of the image's own pixels (no reflected or zero pixels enter the mean).

    Args:
        image: N x C x H x W floating-point tensor.
        sigma: standard deviation in pixels (> 0).

    Returns:
        N x C x H x W blurred tensor, same dtype.
    """
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"gaussian_blur: sigma must be a finite number > 0, got {sigma!r}")
    if not isinstance(image, Tensor) or image.dim() != 4 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"gaussian_blur: image must be a floating-point N x C x H x W tensor, got {shape}")
    return _blur_axis(_blur_axis(image, sigma, 2), sigma, 3)


def retinex(
    image: Tensor,
    sigmas: Sequence[float] = RETINEX_SIGMAS,
    weights: Sequence[float] | None = None,
    dynamic: float = RETINEX_DYNAMIC,
) -> Tensor:
    """GP2P-Retinex: multi-scale Retinex with a mean +- d_r std range mapping (Ma et al. eqs. 47-50).

    Eq. 47: ``r = sum_k w_k (log J - log(F_k * J))`` per channel, with ``F_k * J`` the Gaussian blur
    of scale ``sigmas[k]`` (:func:`gaussian_blur`). The logarithms are taken of ``J + 1/255``: on
    8-bit values this is the usual ``log(I + 1)`` of Retinex implementations (the constant factor
    255 cancels in the difference), and it keeps black pixels finite. Eqs. 48-49: ``min_r, max_r =
    mu_r -+ d_r sigma_r`` with the mean and standard deviation of ``r`` over all pixels and channels
    of the image. Eq. 50: ``(r - min_r) / (max_r - min_r)``, clipped to [0, 1] (the paper's
    0 ... 255). A flat ``r`` (a constant image) maps to 0.5, the limit of eq. 50 at ``r = mu_r``.

    The sigmas are in pixels, as in the paper, whose images were 512 x 512; they are not scaled
    with the image size.

    Args:
        image: N x 3 x H x W float tensor in [0, 1].
        sigmas: Gaussian scales in pixels (the paper's 15, 80, 250).
        weights: one weight per scale; default equal weights 1 / len(sigmas) (the paper's 1/3).
        dynamic: d_r of eqs. 48-49 (> 0); smaller values give more contrast and more clipping.

    Returns:
        N x 3 x H x W tensor in [0, 1], same dtype.

    Example:
        >>> x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
        >>> y = retinex(x); y.shape, bool(y.min() >= 0 and y.max() <= 1)
        (torch.Size([2, 3, 32, 48]), True)
    """
    _check(image, "retinex")
    check_image(image, "retinex: image")
    if len(sigmas) == 0:
        raise ValueError("retinex: sigmas must not be empty")
    if weights is None:
        weights = [1.0 / len(sigmas)] * len(sigmas)
    if len(weights) != len(sigmas):
        raise ValueError(f"retinex: {len(weights)} weights for {len(sigmas)} sigmas")
    if not (isinstance(dynamic, (int, float)) and math.isfinite(dynamic) and dynamic > 0):
        raise ValueError(f"retinex: dynamic must be a finite number > 0, got {dynamic!r}")
    # float32 at least: the FFT blur and the log differences need more than half precision.
    work = image.to(torch.promote_types(image.dtype, torch.float32))
    eps = 1.0 / 255.0
    log_j = torch.log(work + eps)
    r = torch.zeros_like(work)
    for sigma, w in zip(sigmas, weights):
        # The blur is a normalised mean, so F * (J + eps) = F * J + eps.
        r += w * (log_j - torch.log(gaussian_blur(work, float(sigma)) + eps))
    mu = r.mean(dim=(1, 2, 3), keepdim=True)
    sd = r.std(dim=(1, 2, 3), keepdim=True, correction=0)
    flat = sd <= _FLAT_STD
    low = mu - dynamic * sd
    span = torch.where(flat, torch.ones_like(sd), 2.0 * dynamic * sd)
    out = torch.where(flat, torch.full_like(r, 0.5), (r - low) / span)
    return out.clamp(0.0, 1.0).to(image.dtype)


def get_post(name: str | None) -> Callable[[Tensor], Tensor] | None:
    """The post-processing function called ``name`` (None for none); ValueError for unknown names."""
    if name is None or name == "none":
        return None
    if name == "rescale":
        return rescale
    if name == "retinex":
        return retinex
    raise ValueError(f"unknown post-processing {name!r}; choose one of {POST_METHODS}")


def describe_post(name: str | None) -> str:
    """One line stating the post-processing and its settings (for reports)."""
    if name is None or name == "none":
        return "post-processing: none"
    if name == "rescale":
        return "post-processing: rescale (GP2P-Rescale: per-image min-max stretch, one range for RGB)"
    if name == "retinex":
        sig = "/".join(f"{s:g}" for s in RETINEX_SIGMAS)
        return (f"post-processing: retinex (GP2P-Retinex, eqs. 47-50: sigmas {sig} px, equal weights, "
                f"d_r = {RETINEX_DYNAMIC:g})")
    raise ValueError(f"unknown post-processing {name!r}; choose one of {POST_METHODS}")
