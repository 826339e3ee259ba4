"""DDU, the down-up module: run any dehazer at 1/S resolution, bring its result back edge-aware.

BILD (Chen et al., ECCV 2022, supplementary §3) wraps its dehazing networks in the "DDU module"
of Zheng et al. (CVPR 2021, "Ultra-high-definition image dehazing via multi-guided bilateral
learning", 4KDehazing) to train on multi-megapixel O-HAZE / NH-HAZE images. :class:`DownUp` is
that wrapper for every registry model:

1. the hazy image I (H x W) is resized by 1/S (bilinear, antialiased) to I_s (h x w), and the
   wrapped model dehazes it: J_s = model(I_s);
2. a small CNN reads [I_s, J_s] and predicts a bilateral grid of 3 x 4 affine colour transforms,
   one cell per 8 x 8 low-resolution pixels and ``bins`` intensity bins (4KDehazing's affine
   bilateral grid, made fully convolutional);
3. a pointwise network maps every full-resolution pixel to three guidance values g_c in [0, 1],
   one per output channel (the "multi-guided" part of 4KDehazing);
4. the grid is sliced trilinearly (``F.grid_sample`` on the 5-D grid) at (x, y, g_c), giving for
   output channel c the row (a_c, b_c) of an affine transform T(I; g)_c = a_c . I + b_c.

The output is

    J = up(J_s - T(I_s; g_s)) + T(I; g)            (1)

where up is bilinear upsampling to H x W and g_s the guidance of I_s. T(I; g) is the
full-resolution, edge-aware part (HDRNet, Gharbi et al. 2017: J = T(I)); the first term adds back, at low
frequency, whatever the affine model misses at low resolution, so a grid that fits J_s exactly
gives J = T(I), and a zero grid gives J = up(J_s). The grid's last convolution starts at zero,
hence **at initialisation DDU returns the wrapped model's output upsampled bilinearly**, and adding
DDU to trained weights changes nothing until it is trained.

Deviations from Zheng et al. (stated in ``docs/ddu.md``):

* the grid is predicted from the wrapped dehazer's low-resolution input *and output* (in 4KDehazing
  the grid network is the dehazer); the wrapped model is any registry model;
* the transforms act on the full-resolution input, plus the correction term of eq. (1) (their code
  applies them to an upsampled network output, then fuses by convolutions); eq. (1) is what makes
  DDU start as bilinear upsampling;
* the grid is fully convolutional (one cell per 8 x 8 low-resolution pixels) instead of a fixed
  16 x 16 grid on a fixed-size thumbnail, so training crops and whole photos see cells of the same
  size; one pointwise guidance network instead of three with BatchNorm (no hidden state:
  ``torch.func.functional_call`` works).

Memory: the full-resolution part is pointwise per pixel, so it runs in bands of at most
``band_pixels`` pixels; with gradients enabled each band is recomputed in the backward pass
(activation checkpointing), so a 4K training step holds only a few full-resolution images at a
time (see ``benchmarks/ddu_memory.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..ops import fast_guided_filter
from .outputs import DehazeOutput

__all__ = ["BilateralUpsampler", "DownUp", "UPSAMPLERS", "check_scale", "wrapper_options"]

UPSAMPLERS = ("bilateral", "bilinear", "guided")
# the fixed fast-guided-filter setting of upsampler="guided": radius in low-resolution pixels
GUIDED_RADIUS, GUIDED_EPS = 2, 1e-4


def check_scale(scale: object) -> int:
    """``scale`` as an int >= 2, or a ValueError that says what DDU's factor is."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(
            f"ddu must be an integer downsampling factor >= 2 (e.g. 4: the model runs at 1/4 of the "
            f"width and height), got {scale!r}; leave it unset to run the model at full resolution"
        )
    return scale


def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BilateralUpsampler(nn.Module):
    """Learned edge-aware upsampling by a sliced bilateral grid of affine transforms, eq. (1).

    Args:
        bins: intensity bins of the grid (HDRNet: 8; 4KDehazing's public code: 16).
        width: feature width of the grid network.
        guide_width: hidden width of the pointwise guidance network.
        band_pixels: the full-resolution part runs in row bands of at most this many pixels.

    Shape:
        (I: N x 3 x H x W, I_s: N x 3 x h x w, J_s: N x 3 x h x w) -> N x 3 x H x W.
    """

    cell = 8  # low-resolution pixels per grid cell (three stride-2 convolutions)

    def __init__(self, bins: int = 8, width: int = 32, guide_width: int = 16, band_pixels: int = 1 << 17) -> None:
        super().__init__()
        self.bins, self.band_pixels = bins, band_pixels
        self.grid_net = nn.Sequential(
            nn.Conv2d(6, width // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 12 * bins, 1),
        )
        # zero grid at initialisation: T = 0 and eq. (1) is plain bilinear upsampling
        nn.init.zeros_(self.grid_net[-1].weight)
        nn.init.zeros_(self.grid_net[-1].bias)
        self.guide = nn.Sequential(nn.Conv2d(3, guide_width, 1), nn.ReLU(), nn.Conv2d(guide_width, 3, 1))

    def grid(self, low: Tensor, low_clear: Tensor) -> Tensor:
        """The bilateral grid, N x 3 x 4 x bins x ceil(h/8) x ceil(w/8) (rows of the affine transforms)."""
        g = self.grid_net(torch.cat([low, low_clear], dim=1))
        n, _, gh, gw = g.shape
        return g.view(n, 3, 4, self.bins, gh, gw)

    def forward(self, image: Tensor, low: Tensor, low_clear: Tensor) -> Tensor:
        grid = self.grid(low, low_clear)
        params = dict(self.guide.named_parameters())
        correction = low_clear - _apply_grid(low, grid, self.guide, params)
        h, w = image.shape[-2:]
        rows = max(1, self.band_pixels // w)
        if rows >= h:
            return _up(correction, (h, w)) + _apply_grid(image, grid, self.guide, params)
        recompute = torch.is_grad_enabled()
        names, values = tuple(params), tuple(params.values())
        bands = []
        for top in range(0, h, rows):
            # the guidance parameters are passed explicitly, so a recomputation in the backward pass
            # uses the tensors of this forward pass (also under torch.func.functional_call)
            args = (image[..., top : top + rows, :], correction, grid, top, h, self.guide, names, *values)
            bands.append(checkpoint(_band, *args, use_reentrant=False) if recompute else _band(*args))
        return torch.cat(bands, dim=-2)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, cell={self.cell}, band_pixels={self.band_pixels}"


def _pixel_xy(top: int, rows: int, height: int, width: int, like: Tensor) -> Tensor:
    """rows x W x 2 normalised (x, y) of the pixel centres of rows ``top`` .. of a ``height``-row image.

    With ``align_corners=False`` these are the coordinates bilinear resizing uses, so images of one
    scene at any resolution address the same points of a grid.
    """
    ys = (torch.arange(top, top + rows, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / width) - 1.0
    return torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)


def _band(
    image: Tensor, correction: Tensor, grid: Tensor, top: int, height: int, guide: nn.Module, names, *values
) -> Tensor:
    """Rows ``top`` .. of eq. (1): ``correction`` upsampled bilinearly there, plus T(I; g)."""
    n, _, rows, width = image.shape
    xy = _pixel_xy(top, rows, height, width, image).expand(n, rows, width, 2)
    up = F.grid_sample(correction, xy, mode="bilinear", padding_mode="border", align_corners=False)
    return up + _apply_grid(image, grid, guide, dict(zip(names, values)), top, height)


def _apply_grid(
    image: Tensor, grid: Tensor, guide: nn.Module, params: dict[str, Tensor], top: int = 0, height: int | None = None
) -> Tensor:
    """T(I; g): slice ``grid`` at every pixel of ``image`` (rows ``top`` .. of an image ``height`` tall).

    Trilinear slicing: x and y from the pixel's position (:func:`_pixel_xy`), z from the guidance
    g_c of output channel c.
    """
    n, _, h, w = image.shape
    height = h if height is None else height
    gmap = torch.sigmoid(torch.func.functional_call(guide, params, (image,)))  # N x 3 x h x w
    xy = _pixel_xy(top, h, height, w, image)
    z = gmap.reshape(n * 3, 1, h, w, 1) * 2.0 - 1.0
    coords = torch.cat([xy.expand(n * 3, 1, h, w, 2), z], dim=-1)  # (N*3) x 1 x h x w x 3
    _, _, four, bins, gh, gw = grid.shape
    cells = grid.reshape(n * 3, four, bins, gh, gw).to(image.dtype)
    coef = F.grid_sample(cells, coords, mode="bilinear", padding_mode="border", align_corners=False)
    coef = coef.view(n, 3, 4, h, w)
    return (coef[:, :, :3] * image.unsqueeze(1)).sum(dim=2) + coef[:, :, 3]


class DownUp(nn.Module):
    """DDU wrapper: ``model`` runs on the image downsampled by ``scale``; see the module docstring.

    Args:
        model: any dehazer returning :class:`DehazeOutput` (a registry model).
        scale: integer downsampling factor S >= 2 (width and height are divided by S, rounded).
        upsampler: ``"bilateral"`` (learned, eq. 1), or the parameter-free references
            ``"bilinear"`` and ``"guided"`` (:func:`~hazefree.ops.fast_guided_filter` of each channel
            of J_s with the full-resolution colour image as guide, radius 2 low-resolution pixels,
            eps 1e-4).
        bins: intensity bins of the bilateral grid.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput`: ``clear`` N x 3 x H x W (clipped to [0, 1]
        in eval mode only); ``transmission`` the wrapped model's, upsampled bilinearly to H x W;
        ``airlight`` and ``coarse_transmission`` the wrapped model's as they are; None where the
        wrapped model gives None. Both sides must be >= S.

    Example:
        >>> from hazefree.models import AODNet
        >>> net = DownUp(AODNet(), scale=4).eval()
        >>> net(torch.rand(1, 3, 64, 48)).clear.shape
        torch.Size([1, 3, 64, 48])
    """

    def __init__(self, model: nn.Module, scale: int, upsampler: str = "bilateral", bins: int = 8) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown DDU upsampler {upsampler!r}; choose one of {', '.join(UPSAMPLERS)}")
        self.upsampler_kind = upsampler
        self.model = model
        self.upsampler = BilateralUpsampler(bins=bins) if upsampler == "bilateral" else None

    def low_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the wrapped model sees for an H x W input."""
        return max(1, round(height / self.scale)), max(1, round(width / self.scale))

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        size = hazy.shape[-2:]
        if min(size) < self.scale:
            raise ValueError(
                f"image of {size[0]} x {size[1]} pixels is smaller than the DDU factor {self.scale}; "
                f"each side must be >= ddu x the wrapped model's minimum size"
            )
        low = F.interpolate(hazy, size=self.low_size(*size), mode="bilinear", align_corners=False, antialias=True)
        out = self.model(low)
        if self.upsampler is not None:
            clear = self.upsampler(hazy, low, out.clear)
        elif self.upsampler_kind == "guided":
            clear = fast_guided_filter(hazy, low, out.clear, GUIDED_RADIUS, GUIDED_EPS)
        else:
            clear = _up(out.clear, size)
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        t = None if out.transmission is None else _up(out.transmission, size)
        return out._replace(clear=clear, transmission=t)

    def wrapper_options(self) -> dict[str, object]:
        """The options that rebuild this wrapper with :func:`hazefree.models.create` (weights metadata)."""
        return {"ddu": self.scale, "ddu_upsampler": self.upsampler_kind}

    def extra_repr(self) -> str:
        return f"scale={self.scale}, upsampler={self.upsampler_kind!r}"


def wrapper_options(module: nn.Module) -> dict[str, object]:
    """The ``ddu*`` options of ``module`` if it is a :class:`DownUp`, else {}."""
    return module.wrapper_options() if isinstance(module, DownUp) else {}
