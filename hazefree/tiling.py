"""Dehazing a large image tile by tile, in memory that does not grow with the image.

What is global about an image is computed once, from a downsampled copy (the *preview*, longer
side at most :data:`PREVIEW_SIDE`; the image itself when it is that small): the airlight and,
for Guided-Pix2Pix, the U-Net's view of the whole image at its working size. Then each tile needs
only its own pixels and a margin around them:

* Guided-Pix2Pix (fast guided filter, Ma et al. 2021 eq. 41 at a working size): the guided
  filter's coefficients (mean_a, mean_b) are computed once at the working size; a tile resizes
  them to its own window and applies t = clamp(mean_a * gray(I) + mean_b), J = (I - A) / t + A
  pointwise (eq. 42). Margin 0: this is the untiled computation, split by pixels.
* DCP (He et al. 2009): dark channel and guided filter run on the tile grown by their reach
  (2 r + patch / 2 = 127 pixels), so the tile's core is exactly the untiled result for the same A.
* Any other model runs on tiles grown by :data:`GENERIC_MARGIN`; neighbouring tiles overlap by
  twice that and are blended with linear weights across the overlap. These models see a tile, not
  the image (their normalisation statistics are per tile), so their results can differ from the
  untiled ones; blending hides the step where two tiles meet.

Tiled results differ from untiled ones only where the preview is a reduced copy of the image (the
airlight; Guided-Pix2Pix's working-size input, reduced in two steps instead of one), so an image
whose longer side is at most :data:`PREVIEW_SIDE` gives the untiled result up to float rounding.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import guided_filter_coefficients, rgb_to_gray
from .physics import estimate_airlight, remove_haze
from .strength import recompose

__all__ = [
    "Window",
    "TileResult",
    "TiledDehazer",
    "auto_tile",
    "plan_tiles",
    "preview_factor",
    "block_mean_preview",
    "resize_window",
    "run_tiles",
    "PREVIEW_SIDE",
    "UNTILED_MAX_PIXELS",
]

# Images up to this many pixels are dehazed whole by default (4096 x 4096, the size of a large
# photo); above it, in tiles of about DEFAULT_TILE pixels a side.
UNTILED_MAX_PIXELS = 4096 * 4096
DEFAULT_TILE = 2048
# Longer side of the downsampled copy that global statistics are taken from.
PREVIEW_SIDE = 2048
# Margin of the tiles of models without a tiled form (the receptive field of the small zoo
# models is about this; the large ones see further and are approximated).
GENERIC_MARGIN = 64


class Window(NamedTuple):
    """A rectangle of an image: rows [top, top + height), columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int

    def grown(self, margin: int, height: int, width: int) -> Window:
        """This window grown by ``margin`` on every side, clipped to a ``height`` x ``width`` image."""
        top, left = max(0, self.top - margin), max(0, self.left - margin)
        bottom = min(height, self.top + self.height + margin)
        right = min(width, self.left + self.width + margin)
        return Window(top, left, bottom - top, right - left)

    def within(self, outer: Window) -> tuple[slice, slice]:
        """Row and column slices of this window inside the array of ``outer``."""
        r, c = self.top - outer.top, self.left - outer.left
        return slice(r, r + self.height), slice(c, c + self.width)


class TileResult(NamedTuple):
    """The dehazed core of one tile: clear 1 x 3 x h x w, transmission 1 x 1 x h x w or None."""

    clear: Tensor
    transmission: Tensor | None


def auto_tile(height: int, width: int) -> int:
    """Default tile size for an image: 0 (whole) up to :data:`UNTILED_MAX_PIXELS`, else the side
    that splits each axis evenly into tiles of about :data:`DEFAULT_TILE` (a multiple of 256, so
    that tile edges meet the 256- or 512-pixel blocks of a tiled GeoTIFF)."""
    if height * width <= UNTILED_MAX_PIXELS:
        return 0
    n = math.ceil(max(height, width) / DEFAULT_TILE)
    return 256 * math.ceil(max(height, width) / n / 256)


def plan_tiles(height: int, width: int, tile: int) -> list[Window]:
    """Disjoint ``tile`` x ``tile`` cores covering the image row by row (smaller at the right and
    bottom edges)."""
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    return [
        Window(top, left, min(tile, height - top), min(tile, width - left))
        for top in range(0, height, tile)
        for left in range(0, width, tile)
    ]


def preview_factor(height: int, width: int, side: int = PREVIEW_SIDE) -> int:
    """Integer reduction factor k that brings the longer side to at most ``side``."""
    return max(1, math.ceil(max(height, width) / side))


def block_mean_preview(read: Callable[[Window], np.ndarray], height: int, width: int, k: int) -> Tensor:
    """The image reduced by k (mean of k x k blocks; the last, partial blocks average what exists),
    read in strips of rows so that only a strip is ever in memory as float.

    Args:
        read: returns the pixels of a window as an h x w x 3 float32 array in [0, 1].
    Returns:
        1 x 3 x ceil(H / k) x ceil(W / k) float32 tensor.
    """
    if k == 1:
        return torch.from_numpy(read(Window(0, 0, height, width))).permute(2, 0, 1)[None].contiguous()
    rows_per_strip = k * max(1, 512 // k)
    starts = np.arange(0, width, k)
    col_counts = np.diff(np.append(starts, width)).astype(np.float32)
    out = []
    for top in range(0, height, rows_per_strip):
        strip = read(Window(top, 0, min(rows_per_strip, height - top), width))
        row_starts = np.arange(0, strip.shape[0], k)
        sums = np.add.reduceat(np.add.reduceat(strip, row_starts, axis=0), starts, axis=1)
        row_counts = np.diff(np.append(row_starts, strip.shape[0])).astype(np.float32)
        out.append(sums / (row_counts[:, None, None] * col_counts[None, :, None]))
    return torch.from_numpy(np.concatenate(out, axis=0)).permute(2, 0, 1)[None].contiguous()


def _axis(n_in: int, n_out: int, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
    # PyTorch's bilinear sampling with align_corners=False: src = (dst + 0.5) * n_in / n_out - 0.5,
    # clamped at 0; the upper neighbour is clamped at the last sample.
    src = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    return i0, (i0 + 1).clamp(max=n_in - 1), (src - i0).float()


def resize_window(x: Tensor, size: tuple[int, int], window: Window) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` restricted to ``window``,
    without forming the full-size result (x is N x C x h x w)."""
    i0, i1, wy = _axis(x.shape[-2], size[0], window.top, window.top + window.height)
    j0, j1, wx = _axis(x.shape[-1], size[1], window.left, window.left + window.width)
    wy, wx = wy.to(x.dtype)[:, None], wx.to(x.dtype)
    rows = x[..., i0, :] * (1 - wy) + x[..., i1, :] * wy
    return rows[..., j0] * (1 - wx) + rows[..., j1] * wx


def _ramp(n: int, rise: bool, fall: bool, width: int) -> Tensor:
    """Weights along one axis of a grown tile: rising linearly over ``width`` samples from the
    start (if ``rise``) and falling to the end (if ``fall``), 1 elsewhere, never 0."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    w = torch.ones(n)
    if rise:
        w = torch.minimum(w, i / width)
    if fall:
        w = torch.minimum(w, i.flip(0) / width)
    return w


class TiledDehazer:
    """A dehazing model split into a global step (once, on a preview) and a per-tile step.

    Args:
        model: the loaded model (``Dehazer.model``), in eval mode.
        size: (H, W) of the full image.
        preview: 1 x 3 x h x w float32 reduced copy of the image (the image itself if small).
        strength: S of :mod:`hazefree.strength` (``Dehazer.strength``); 1 leaves the model's result.

    Use :attr:`margin` to grow each tile's core before reading it, then call the object with the
    grown tile's pixels to get the dehazed core (:class:`TileResult`).
    """

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], preview: Tensor, strength: float = 1.0) -> None:
        from .models import DarkChannelPrior, GuidedPix2Pix
        from .strength import check_strength, strength_t_min

        self.model, self.size = model, size
        # S != 1: every tile recomposes its own t with the image's one A (hazefree.strength)
        self.strength = check_strength(strength)
        self.t_min = None if self.strength == 1.0 else strength_t_min(model, type(model).__name__)
        self.blend = False
        exact_preview = tuple(preview.shape[-2:]) == tuple(size)
        if isinstance(model, GuidedPix2Pix) and (model.work_size is not None or exact_preview):
            self._init_guided_pix2pix(model, preview)
            self._tile = self._guided_pix2pix_tile
            self.margin = 0
        elif isinstance(model, DarkChannelPrior):
            self.airlight = estimate_airlight(preview, model.airlight)
            self._tile = self._dcp_tile
            self.margin = model.reach
        else:
            self._tile = self._generic_tile
            self.margin = GENERIC_MARGIN
            self.blend = True

    def _init_guided_pix2pix(self, model, preview: Tensor) -> None:
        work = model.working_size(*self.size)
        low = preview
        if tuple(preview.shape[-2:]) != work:
            low = F.interpolate(preview, size=work, mode="bilinear", align_corners=False, antialias=True)
        self.airlight, t0 = model.coarse(preview, low)
        self.coefficients = guided_filter_coefficients(rgb_to_gray(low), t0, model.radius, model.eps)

    def _guided_pix2pix_tile(self, hazy: Tensor, window: Window) -> TileResult:
        mean_a, mean_b = (resize_window(c, self.size, window) for c in self.coefficients)
        t = (mean_a * rgb_to_gray(hazy) + mean_b).clamp(self.model.t_min, 1.0)
        if self.strength != 1.0:
            return TileResult(recompose(hazy, t, self.airlight, self.t_min, self.strength), t)
        clear = ((hazy - self.airlight) / t + self.airlight).clamp(0.0, 1.0)
        return TileResult(clear, t)

    def _dcp_tile(self, hazy: Tensor, window: Window) -> TileResult:
        _, t = self.model.transmission(hazy, self.airlight)
        if self.strength != 1.0:
            return TileResult(recompose(hazy, t, self.airlight, self.t_min, self.strength), t)
        return TileResult(remove_haze(hazy, t, self.airlight, t_min=self.model.t_min), t)

    def _generic_tile(self, hazy: Tensor, window: Window) -> TileResult:
        out = self.model(hazy)
        if self.strength != 1.0:  # the tile's own t and A (a generic model sees only its tile)
            return TileResult(recompose(hazy, out.transmission, out.airlight, self.t_min, self.strength), out.transmission)
        return TileResult(out.clear.clamp(0.0, 1.0), out.transmission)

    @torch.inference_mode()
    def __call__(self, hazy: Tensor, grown: Window, core: Window) -> TileResult:
        """Dehaze the grown tile ``hazy`` (1 x 3 x h x w, the pixels of ``grown``); return ``core``
        (or, with :attr:`blend`, the whole grown tile, to be blended by :func:`blend_weights`)."""
        result = self._tile(hazy, grown)
        for name, value in zip(result._fields, result):
            if value is not None and not torch.isfinite(value).all():
                raise RuntimeError(f"the model produced non-finite {name} values in a tile at {tuple(core)}")
        if self.blend:
            return result
        rows, cols = core.within(grown)
        return TileResult(*(None if v is None else v[..., rows, cols] for v in result))

    def blend_weights(self, grown: Window) -> Tensor:
        """1 x 1 x h x w weights of a grown tile: linear ramps over twice the margin at every edge
        that has a neighbour (results are divided by the sum of the weights, see :func:`run_tiles`)."""
        h, w = self.size
        width = 2 * max(1, self.margin)
        wy = _ramp(grown.height, grown.top > 0, grown.top + grown.height < h, width)
        wx = _ramp(grown.width, grown.left > 0, grown.left + grown.width < w, width)
        return (wy[:, None] * wx[None, :])[None, None]


def run_tiles(
    tiler: TiledDehazer,
    read: Callable[[Window], Tensor],
    write: Callable[[Window, TileResult], None],
    tile: int,
) -> None:
    """Dehaze an image tile by tile: ``read(window)`` gives 1 x 3 x h x w pixels, ``write(window,
    result)`` receives every part of the result once (tile cores, or with blending bands of rows)."""
    h, w = tiler.size
    if not tiler.blend:
        for core in plan_tiles(h, w, tile):
            grown = core.grown(tiler.margin, h, w)
            write(core, tiler(read(grown), grown, core))
        return
    # Blending: the grown tiles of one row of tiles are accumulated into a band of rows (weighted
    # sums and the sum of weights); rows that no later tile reaches are divided out and written.
    margin = min(tiler.margin, tile)
    acc_top, num, den, tnum = 0, None, None, None
    for top in range(0, h, tile):
        th = min(tile, h - top)
        bottom = min(h, top + th + margin)
        grow_rows = bottom - acc_top - (0 if num is None else num.shape[-2])
        new = [torch.zeros(1, c, grow_rows, w) for c in (3, 1, 1)]
        num, den, tnum = (
            n if old is None else torch.cat([old, n], dim=-2) for old, n in zip((num, den, tnum), new)
        )
        has_t = False
        for left in range(0, w, tile):
            core = Window(top, left, th, min(tile, w - left))
            grown = core.grown(margin, h, w)
            result = tiler(read(grown), grown, core)
            weight = tiler.blend_weights(grown)
            rows, cols = slice(grown.top - acc_top, grown.top - acc_top + grown.height), slice(grown.left, grown.left + grown.width)
            num[..., rows, cols] += result.clear * weight
            den[..., rows, cols] += weight
            if result.transmission is not None:
                has_t = True
                tnum[..., rows, cols] += result.transmission.mean(dim=1, keepdim=True) * weight
        done = h if top + th >= h else top + th - margin  # the next row's grown tiles start there
        k = done - acc_top
        clear = num[..., :k, :] / den[..., :k, :]
        t = tnum[..., :k, :] / den[..., :k, :] if has_t else None
        write(Window(acc_top, 0, k, w), TileResult(clear, t))
        num, den, tnum = num[..., k:, :], den[..., k:, :], tnum[..., k:, :]
        acc_top = done
