"""No-reference measures of an output or a hazy photo: :func:`haze_density`, FADE
(:func:`fade_or_none`, Choi et al. 2015), :func:`clipped_share` and :func:`brightness_ratio`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.fade import FADE_MIN_SIZE, fade
from ..physics import airlight_dark_channel, check_image, dark_channel

HAZE_DENSITY_DESCRIPTION = (
    "haze density = mean over the image of the dark channel of I / A (He et al. 2009, eq. 11 with "
    "omega = 1: the dark-channel estimate of the haze opacity 1 - t; A by the dark-channel rule), "
    "15 x 15 patch at a long side of at most 512 px; 0 = no haze by the prior, lower is clearer"
)
FADE_DESCRIPTION = (
    "FADE = perceptual fog density of Choi, You & Bovik 2015 (IEEE TIP 24(11); D = Df / (Dff + 1), "
    "distances of 12 fog-aware statistics of 8 x 8 patches to the authors' fog-free and foggy "
    "models), on the 8-bit image; lower = less fog"
)
CLIPPED_DESCRIPTION = (
    "clipped pixels = share of the 8-bit image's pixels that are 0 in all three channels or 255 in "
    "all three (detail lost to black or white)"
)


def haze_density(image: Tensor, patch_size: int = 15, max_side: int = 512) -> Tensor:
    """No-reference haze measure: the mean dark channel of ``I / A`` (lower = less haze).

    Why this measure: by the dark channel prior (He et al., CVPR 2009) a haze-free outdoor image has
    a dark channel near 0 almost everywhere, and for a hazy image ``I = J t + A (1 - t)`` it gives
    ``dark(I / A) = 1 - t`` (He et al. eq. 11 with omega = 1). Its mean is therefore an estimate of
    the average haze opacity, in [0, 1], from the photo alone. Dividing by the airlight ``A``
    (estimated on the same image) makes it invariant to exposure: darkening an image, which lowers
    a raw mean dark channel, does not count as dehazing. A contrast-gain measure was the other
    candidate; it needs the input to compare with and rewards over-enhancement and noise, whereas
    this is a property of one image and is computed the same way for input and output.

    Limits: bright objects and sky read as haze (the prior does not hold there), so compare an
    output with its own input rather than different photos; it is blind to colour casts and
    artefacts and favours DCP, whose output it is built to minimise. The image is first reduced
    (area averaging) to a long side of at most ``max_side`` px so that the 15 x 15 patch covers a
    similar part of the scene at any resolution.

    Args:
        image: N x 3 x H x W float tensor in [0, 1].
        patch_size: dark-channel window (odd; He et al. use 15).
        max_side: long side the image is reduced to before measuring (never enlarged).

    Returns:
        float64 tensor of shape N, values in [0, 1].

    Example:
        >>> clear = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6
        >>> hazy = clear * 0.4 + 0.9 * 0.6                       # t = 0.4, A = 0.9
        >>> bool(haze_density(hazy) > haze_density(clear))
        True
    """
    check_image(image, "haze_density: image")
    if max_side < patch_size:
        raise ValueError(f"max_side ({max_side}) must be at least patch_size ({patch_size})")
    x = image.float()
    h, w = x.shape[-2:]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    a = airlight_dark_channel(x, patch_size)
    return dark_channel((x / a).clamp(max=1.0), patch_size).mean(dim=(1, 2, 3)).double()


def fade_or_none(image: Tensor) -> float | None:
    """FADE (:func:`hazefree.metrics.fade.fade`) of a 1 x 3 x H x W image, or None when the image
    is smaller than the 16 x 16 px that FADE needs."""
    if min(image.shape[-2:]) < FADE_MIN_SIZE:
        return None
    return fade(image).item()


def clipped_share(image: Tensor) -> Tensor:
    """Share of pixels clipped to black or white: all three channels 0, or all three 255, once the
    image is quantised to 8 bits as hazefree.io's writer does (clip to [0, 1], floor(255 x + 0.5)).

    Args:
        image: N x 3 x H x W float tensor (values outside [0, 1] count as clipped).

    Returns:
        float64 tensor of shape N, values in [0, 1].

    Example:
        >>> x = torch.full((1, 3, 2, 2), 0.5)
        >>> x[0, :, 0, 0] = 1.0
        >>> clipped_share(x)
        tensor([0.2500], dtype=torch.float64)
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"clipped_share expects a float N x 3 x H x W image, got {shape}")
    levels = torch.floor(image.float().clamp(0.0, 1.0) * 255.0 + 0.5)
    clipped = (levels == 0).all(dim=1) | (levels == 255).all(dim=1)
    return clipped.double().mean(dim=(1, 2))


def brightness_ratio(output: Tensor, hazy: Tensor) -> Tensor:
    """Mean luma of ``output`` over mean luma of its input ``hazy`` (Rec. 601 weights, values
    clipped to [0, 1]), per image.

    Removing haze takes away the airlight's additive light, so an honest result is darker than its
    input (DCP: about 0.4-0.8 on foggy road photos). A ratio far below that marks a result turned
    into a night scene, e.g. by an airlight read from headlights: FADE counts such darkness as
    clarity, and :func:`clipped_share` misses it unless pixels reach exactly 0 in every channel.

    Args:
        output, hazy: N x 3 x H x W float tensors of the same shape.

    Returns:
        float64 tensor of shape N (inf where the input is black).

    Example:
        >>> hazy = torch.full((1, 3, 2, 2), 0.6)
        >>> brightness_ratio(hazy * 0.5, hazy)
        tensor([0.5000], dtype=torch.float64)
    """
    for name, x in (("output", output), ("hazy", hazy)):
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"brightness_ratio expects float N x 3 x H x W images, got {name} {shape}")
    if output.shape != hazy.shape:
        raise ValueError(f"brightness_ratio: output {tuple(output.shape)} and hazy {tuple(hazy.shape)} differ")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)

    def luma(x: Tensor) -> Tensor:
        return (x.double().clamp(0.0, 1.0) * weights).sum(1).mean(dim=(1, 2))

    return luma(output) / luma(hazy)
