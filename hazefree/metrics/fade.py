"""FADE, the no-reference perceptual fog density of Choi, You & Bovik (IEEE TIP 24(11), 2015).

FADE (Fog Aware Density Evaluator) describes every 8 x 8 patch of an 8-bit RGB image by 12
"fog-aware" statistics (paper Sec. III-A, ``FADE.m``), fits them against two multivariate Gaussian
models published by the authors, one of a fog-free and one of a foggy corpus of 500 images each
(``fade_data/*.mat``), and returns

    D = Df / (Dff + 1)                                                          (paper eq. 13)

where Df and Dff are the mean over patches of the Mahalanobis-like distance (eq. 12)
``sqrt((mu - f) ((C + s 1 1^T) / 2)^-1 (mu - f)^T)`` of a patch's log-features ``f`` (scalar
variance ``s`` of its 12 values) to the fog-free and the foggy model (mean ``mu``, covariance ``C``).
Lower = less perceived fog; a clear photo scores about 0.2-1, a dense fog 2-5.

This is a port of the authors' MATLAB release (``FADE.m``, ``CE.m``, ``border_in.m``,
``border_out.m``), kept to its numerical conventions: the image is cropped to a multiple of 8;
gray is ``rgb2gray`` of the uint8 image (coefficients of the first row of inv(NTSC), rounded to
uint8); variances are MATLAB's ``nanvar`` (n - 1 normalisation, 0 for one value, NaN for none);
``imfilter(..., 'replicate')`` for the 7 x 7 Gaussian of the MSCN; ``conv2(..., 'same')`` with the
20-tap LoG of ``CE.m`` (its even length puts the centre at tap 11) on an image grown by
``border_in`` (10 rows/columns copied, not mirrored, onto each side); patches whose features are
NaN (e.g. a black patch, whose coefficient of variation is 0/0) are left out of the mean
(``nanmean``), as in the release.

The two model files and the LIVE / UT Austin copyright notice that must travel with them are in
``fade_data/``; they are read on first use and cached.

Example:
    >>> x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    >>> fade(x).shape
    torch.Size([1])
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from typing import NamedTuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..io import ImageReadError, quantize

__all__ = ["fade", "fade_file", "fade_pixels", "FadeResult", "FADE_MIN_SIZE"]

PathLike = Union[str, os.PathLike]

_PS = 8  # patch size of the release (the "_ps8" models)
# border_in / border_out of CE.m (ps = 20) grow the image by 10 rows/columns per side; the image
# must have at least 10 rows and columns to copy, i.e. 16 after cropping to a multiple of 8.
_CE_BORDER = 10
FADE_MIN_SIZE = 16

# MATLAB rgb2gray: the first row of inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703]) (the
# luma row of the NTSC matrix), as MATLAB documents it; for uint8 input rounded and saturated.
_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# CE.m parameters (Groen et al.'s contrast-energy model): LoG sigma (pixels), semisaturation and the
# noise thresholds of the gray, blue-yellow and red-green channels.
_CE_SIGMA = 3.25
_CE_SEMISATURATION = 0.1
_CE_THRESHOLDS = (9.225496406318721e-004 * 255, 8.969246659629488e-004 * 255, 2.069284034165411e-004 * 255)

_MODEL_FILES = {
    "fogfree": ("natural_fogfree_image_features_ps8.mat", "mu_fogfreeparam", "cov_fogfreeparam"),
    "foggy": ("natural_foggy_image_features_ps8.mat", "mu_foggyparam", "cov_foggyparam"),
}


class FadeResult(NamedTuple):
    """FADE of one image.

    Attributes:
        density: D = Df / (Dff + 1), the image's perceptual fog density.
        density_map: per-patch Df / (Dff + 1), shape (H // 8) x (W // 8) (patch rows x columns).
        df: mean distance of the patches to the fog-free model.
        dff: mean distance of the patches to the foggy model.
    """

    density: float
    density_map: np.ndarray
    df: float
    dff: float


class _Mvg(NamedTuple):
    mu: np.ndarray  # 12
    cov: np.ndarray  # 12 x 12


@functools.lru_cache(maxsize=None)
def _models() -> tuple[_Mvg, _Mvg]:
    """The fog-free and foggy models of the release, read once from ``fade_data/``."""
    from scipy.io import loadmat

    out = []
    for key in ("fogfree", "foggy"):
        name, mu_key, cov_key = _MODEL_FILES[key]
        ref = resources.files("hazefree.metrics").joinpath("fade_data", name)
        try:
            with resources.as_file(ref) as path:
                data = loadmat(str(path))
            mu = np.asarray(data[mu_key], dtype=np.float64).reshape(-1)
            cov = np.asarray(data[cov_key], dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise RuntimeError(f"FADE model file {ref}: cannot be read ({exc}); reinstall hazefree") from exc
        if mu.shape != (12,) or cov.shape != (12, 12):
            raise RuntimeError(f"FADE model file {ref}: expected a 12-vector and a 12 x 12 matrix")
        out.append(_Mvg(mu, cov))
    return out[0], out[1]


@functools.lru_cache(maxsize=None)
def _ce_kernel() -> np.ndarray:
    """The 20-tap LoG of CE.m: x = -9.75:1:9.75 (to 9.25), Gaussian normalised to sum 1, its second
    derivative made zero-mean and scaled so that sum(0.5 x^2 G'') = 1."""
    s = _CE_SIGMA
    x = -3 * s + np.arange(int(np.floor(6 * s)) + 1, dtype=np.float64)
    gauss = 1.0 / (np.sqrt(2 * np.pi) * s) * np.exp((x**2) / (-2 * s * s))
    gauss = gauss / gauss.sum()
    gx = (x**2 / s**4 - 1 / s**2) * gauss
    gx = gx - gx.sum() / x.size
    return gx / np.sum(0.5 * x * x * gx)


@functools.lru_cache(maxsize=None)
def _mscn_window() -> np.ndarray:
    """fspecial('gaussian', 7, 7/6) / sum: exp(-(x^2 + y^2) / (2 sigma^2)) on a 7 x 7 grid, normalised.

    Built in 2-D as fspecial builds it, not as the outer product of a 1-D Gaussian: the two differ in
    the last bit, and in a flat region that decides whether gray - mu is exactly 0, hence whether
    the patch's negative MSCN pair products (f3) exist or are NaN.
    """
    x = np.arange(-3, 4, dtype=np.float64)
    h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return h / h.sum()


def _local_mean(a: np.ndarray) -> np.ndarray:
    """imfilter(a, fspecial('gaussian', 7, 7/6) / sum, 'replicate')."""
    return cv2.filter2D(a, cv2.CV_64F, _mscn_window(), borderType=cv2.BORDER_REPLICATE)


def _patches(a: np.ndarray) -> np.ndarray:
    """H x W (multiples of 8) -> (H/8) x (W/8) x 64: the distinct 8 x 8 blocks of ``im2col``."""
    h, w = a.shape
    return a.reshape(h // _PS, _PS, w // _PS, _PS).swapaxes(1, 2).reshape(h // _PS, w // _PS, _PS * _PS)


def _nanvar(x: np.ndarray) -> np.ndarray:
    """MATLAB ``nanvar`` along the last axis: n - 1 normalisation over non-NaN values, 0 for one, NaN for none."""
    valid = ~np.isnan(x)
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(axis=-1) / n
        dev = np.where(valid, x - mean[..., None], 0.0)
        var = (dev * dev).sum(axis=-1) / (n - 1)
    var = np.where(n == 1, 0.0, var)
    return np.where(n == 0, np.nan, var)


def _var(x: np.ndarray) -> np.ndarray:
    """MATLAB ``var`` (n - 1) along the last axis of finite data."""
    d = x - x.mean(axis=-1, keepdims=True)
    return (d * d).sum(axis=-1) / (x.shape[-1] - 1)


def _contrast_energy(rgb: np.ndarray) -> np.ndarray:
    """CE.m: perceived contrast energy of the gray, blue-yellow and red-green channels, H x W x 3.

    Each channel is grown by ``border_in`` (the first and last 10 rows, then columns, copied onto
    its sides), filtered by ``conv2(., Gx, 'same')`` and ``conv2(., Gx', 'same')``; the gradient
    magnitude C, trimmed back (``border_out``), is normalised as R = C max(C) / (C + 0.1 max(C)),
    less the channel's noise threshold, and kept where above 1e-7 (else 0).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chans = np.stack([0.299 * r + 0.587 * g + 0.114 * b, 0.5 * r + 0.5 * g - b, r - g], axis=-1)
    c = _CE_BORDER
    grown = np.concatenate([chans[:c], chans, chans[-c:]], axis=0)
    grown = np.ascontiguousarray(np.concatenate([grown[:, :c], grown, grown[:, -c:]], axis=1))
    # conv2 'same' with an n-tap kernel K: out[i] = sum_k A[i + n//2 - k] K[k], i.e. a correlation
    # with K reversed anchored at tap n - 1 - n//2 (= 9 for n = 20); zeros outside the grown image
    # (which the trimmed part never reaches).
    k = _ce_kernel()
    corr = np.ascontiguousarray(k[::-1])
    anchor = k.size - 1 - k.size // 2
    one = np.ones(1, dtype=np.float64)
    cx = cv2.sepFilter2D(grown, cv2.CV_64F, corr, one, anchor=(anchor, 0), borderType=cv2.BORDER_CONSTANT)
    cy = cv2.sepFilter2D(grown, cv2.CV_64F, one, corr, anchor=(0, anchor), borderType=cv2.BORDER_CONSTANT)
    cx = cx[c:-c, c:-c]
    cy = cy[c:-c, c:-c]
    mag = np.sqrt(cx * cx + cy * cy)
    top = mag.max(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):  # a flat channel: 0 / 0 -> NaN -> 0 below
        resp = (mag * top) / (mag + top * _CE_SEMISATURATION)
    resp -= np.asarray(_CE_THRESHOLDS)
    return np.where(resp > 0.0000001, resp, 0.0)


# (c / 64) log2(c / 64) for a histogram count c of an 8 x 8 patch (0 for c = 0, as entropy drops empty bins)
_PLOGP = np.array([0.0] + [(c / 64) * np.log2(c / 64) for c in range(1, 65)])


def _entropy(gray_patches: np.ndarray) -> np.ndarray:
    """MATLAB ``entropy`` of each row of 64 uint8 values: -sum p log2 p over the non-empty bins of
    the 256-bin histogram, summed in increasing grey level (the runs of the sorted row)."""
    p_count, n = gray_patches.shape
    srt = np.sort(gray_patches, axis=1)
    start = np.ones_like(srt, dtype=bool)
    start[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.flatnonzero(start)
    counts = np.diff(np.append(first, p_count * n))
    return -np.bincount(first // n, weights=_PLOGP[counts], minlength=p_count)


def _features(rgb8: np.ndarray) -> np.ndarray:
    """The 12 fog-aware features of FADE.m for every 8 x 8 patch: P x 12 (log(1 + f)), P in patch row-major order."""
    rgb = rgb8.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    gray = np.clip(np.floor(_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b + 0.5), 0, 255)  # rgb2gray, uint8
    lo = np.minimum(np.minimum(r / 255, g / 255), b / 255)  # dark channel Id
    hi = np.maximum(np.maximum(r / 255, g / 255), b / 255)
    with np.errstate(invalid="ignore", divide="ignore"):
        sat = np.where(hi > lo, (hi - lo) / hi, 0.0)  # rgb2hsv saturation, 0 where max == min

    # MSCN (eq. 1-3): mu and sigma from the normalised 7 x 7 Gaussian, replicate border.
    mu = _local_mean(gray)
    mu2 = _local_mean(gray * gray)
    sigma = np.sqrt(np.abs(mu2 - mu * mu))
    mscn = (gray - mu) / (sigma + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = sigma / mu  # 0 / 0 = NaN in black regions, as in MATLAB

    pair = mscn * np.roll(mscn, 1, axis=0)  # circshift(MSCN, [1 0]): the pixel above, wrapping
    pair_p = _patches(pair)
    ce = _contrast_energy(rgb)
    rg = _patches(r - g)
    by = _patches(0.5 * (r + g) - b)

    nr, nc = gray.shape[0] // _PS, gray.shape[1] // _PS
    feats = np.empty((nr, nc, 12), dtype=np.float64)
    feats[..., 0] = _var(_patches(mscn))  # f1: variance of MSCN
    feats[..., 1] = _nanvar(np.where(pair_p < 0, np.nan, pair_p))  # f2: right (>= 0) pair products
    feats[..., 2] = _nanvar(np.where(pair_p > 0, np.nan, pair_p))  # f3: left (<= 0) pair products
    feats[..., 3] = _patches(sigma).mean(axis=-1)  # f4: local sharpness
    feats[..., 4] = _patches(cv).mean(axis=-1)  # f5: coefficient of variation
    for i in range(3):  # f6-f8: contrast energy of gray, blue-yellow, red-green
        feats[..., 5 + i] = _patches(ce[..., i]).mean(axis=-1)
    feats[..., 8] = _entropy(_patches(gray).reshape(nr * nc, -1)).reshape(nr, nc)  # f9: image entropy
    feats[..., 9] = _patches(lo).mean(axis=-1)  # f10: dark channel
    feats[..., 10] = _patches(sat).mean(axis=-1)  # f11: saturation
    # f12: colourfulness, sqrt(var rg + var by) + 0.3 sqrt(mean rg^2 + mean by^2)
    feats[..., 11] = np.sqrt(_var(rg) + _var(by)) + 0.3 * np.sqrt(rg.mean(axis=-1) ** 2 + by.mean(axis=-1) ** 2)
    with np.errstate(invalid="ignore"):
        return np.log(1 + feats.reshape(nr * nc, 12))


def _distances(feat: np.ndarray, model: _Mvg, spread: np.ndarray) -> np.ndarray:
    """Per-patch distance to a model (eq. 12): sqrt(m ((C + s 1 1^T) / 2)^-1 m^T), m = mu - f.

    With B = C / 2 = L L^T (Cholesky), w = L^-1 m and v = L^-1 1, the Sherman-Morrison formula gives
    m (B + (s/2) 1 1^T)^-1 m^T = |w|^2 - (s/2) (v.w)^2 / (1 + (s/2) |v|^2): one factorisation per
    model instead of one solve per patch.
    """
    m = model.mu[None, :] - feat
    lower_inv = np.linalg.inv(np.linalg.cholesky(model.cov / 2))
    w = m @ lower_inv.T
    v = lower_inv.sum(axis=1)
    half = spread / 2
    vw = w @ v
    d2 = np.einsum("pi,pi->p", w, w) - half * vw * vw / (1 + half * (v @ v))
    with np.errstate(invalid="ignore"):
        return np.sqrt(d2)


def fade_pixels(rgb8: np.ndarray) -> FadeResult:
    """FADE of one H x W x 3 uint8 RGB image (the MATLAB release's input), with its density map.

    Args:
        rgb8: H x W x 3 uint8 array, H and W at least 16 (cropped to multiples of 8 first).

    Returns:
        :class:`FadeResult` (density, per-patch map, Df, Dff).

    Raises:
        TypeError / ValueError: not a uint8 H x W x 3 array, or smaller than 16 x 16.

    Example:
        >>> fade_pixels(np.full((32, 32, 3), 128, np.uint8)).density_map.shape
        (4, 4)
    """
    if not isinstance(rgb8, np.ndarray) or rgb8.dtype != np.uint8:
        raise TypeError(f"fade_pixels expects a uint8 numpy array, got {type(rgb8).__name__} "
                        f"{getattr(rgb8, 'dtype', '')}".rstrip())
    if rgb8.ndim != 3 or rgb8.shape[2] != 3:
        raise ValueError(f"fade_pixels expects H x W x 3 RGB, got shape {rgb8.shape}")
    h, w = (rgb8.shape[0] // _PS) * _PS, (rgb8.shape[1] // _PS) * _PS
    if h < FADE_MIN_SIZE or w < FADE_MIN_SIZE:
        raise ValueError(
            f"FADE needs an image of at least {FADE_MIN_SIZE} x {FADE_MIN_SIZE} pixels, got "
            f"{rgb8.shape[0]} x {rgb8.shape[1]}"
        )
    feat = _features(rgb8[:h, :w])
    spread = _nanvar(feat)  # nanvar(feat')': one variance of the 12 values per patch
    fogfree, foggy = _models()
    d_f = _distances(feat, fogfree, spread)
    d_ff = _distances(feat, foggy, spread)
    df, dff = float(np.nanmean(d_f)), float(np.nanmean(d_ff))
    density_map = (d_f / (d_ff + 1)).reshape(h // _PS, w // _PS)
    return FadeResult(df / (dff + 1), density_map, df, dff)


def fade(images: Tensor) -> Tensor:
    """FADE fog density of each image of a batch (Choi et al. 2015, eq. 13: D = Df / (Dff + 1)).

    Each image is first quantised to 8 bits as the project's image writer does
    (:func:`hazefree.io.quantize`: clip to [0, 1], round half up), so that the score is the one the
    saved file would get from :func:`fade_file`.

    Args:
        images: N x 3 x H x W floating-point RGB in [0, 1], H and W at least 16.

    Returns:
        float64 tensor of shape N; lower = less fog.

    Raises:
        TypeError / ValueError: not a floating-point N x 3 x H x W tensor, NaN/Inf values, or an
            image smaller than 16 x 16.

    Example:
        >>> clear = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> bool(fade(0.3 * clear + 0.7)[0] > fade(clear)[0])
        True
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"fade expects a torch tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"fade expects N x 3 x H x W RGB images, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"fade expects floating-point images in [0, 1], got {images.dtype}")
    if images.shape[-2] < FADE_MIN_SIZE or images.shape[-1] < FADE_MIN_SIZE:
        raise ValueError(
            f"FADE needs images of at least {FADE_MIN_SIZE} x {FADE_MIN_SIZE} pixels, got "
            f"{images.shape[-2]} x {images.shape[-1]}"
        )
    x = images.detach().cpu()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("fade: images contain NaN or Inf values")
    values = [fade_pixels(quantize(img.permute(1, 2, 0).numpy(), 8)).density for img in x]
    return torch.tensor(values, dtype=torch.float64)


def fade_file(path: PathLike) -> float:
    """FADE of an image file read as the reference does: ``Image.open(path).convert("RGB")`` (8 bits
    per channel, no EXIF rotation).

    Raises:
        hazefree.io.ImageReadError: the file cannot be read (the message names it).
    """
    try:
        with Image.open(path) as im:
            rgb8 = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, f"cannot be read for FADE: {exc}") from exc
    try:
        return fade_pixels(rgb8).density
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from exc
