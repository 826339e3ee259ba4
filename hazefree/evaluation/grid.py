"""Comparison grids: one row of captioned tiles per image (hazy | each method | ground truth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from ..io import atomic_write


# Comparison grid layout, in pixels: gap between tiles and around the grid, caption band under
# each tile (Pillow's default font is 10 px, about 12 px with descenders).
GRID_TILE_HEIGHT = 160
GRID_GAP = 4
GRID_CAPTION = 14
# At most this many image rows in a grid, whatever the number of datasets.
GRID_MAX_ROWS = 12


@dataclass(frozen=True)
class Tile:
    """One picture of a comparison grid (H x W x 3 uint8) and the caption under it."""

    image: np.ndarray
    caption: str


def _to_uint8(x: Tensor) -> np.ndarray:
    return (x[0].float().clamp(0, 1) * 255.0 + 0.5).floor().byte().permute(1, 2, 0).numpy()


def _resize_to_height(pixels: np.ndarray, height: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))


def make_grid(rows: Sequence[Sequence[Tile]], tile_height: int = GRID_TILE_HEIGHT) -> Image.Image:
    """A comparison grid: one row of tiles per image, each resized to ``tile_height`` (aspect kept)
    with its caption under it in Pillow's default font (cut to the tile's width).

    The size is ``GRID_GAP + max over rows of sum(tile width + GRID_GAP)`` by
    ``GRID_GAP + len(rows) * (tile_height + GRID_CAPTION + GRID_GAP)`` pixels, white background.

    Returns:
        An RGB ``PIL.Image.Image``.
    """
    if not rows or not all(rows):
        raise ValueError("make_grid: no tiles")
    if tile_height < 1:
        raise ValueError(f"make_grid: tile_height must be >= 1, got {tile_height}")
    scaled = [[(_resize_to_height(t.image, tile_height), t.caption) for t in row] for row in rows]
    width = GRID_GAP + max(sum(p.shape[1] + GRID_GAP for p, _ in row) for row in scaled)
    height = GRID_GAP + len(scaled) * (tile_height + GRID_CAPTION + GRID_GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = GRID_GAP
    for row in scaled:
        x = GRID_GAP
        for pixels, caption in row:
            canvas.paste(Image.fromarray(pixels), (x, y))
            text = caption
            while text and draw.textlength(text) > pixels.shape[1]:
                text = text[:-4] + "..." if len(text) > 4 else ""
            draw.text((x, y + tile_height), text, fill="black")
            x += pixels.shape[1] + GRID_GAP
        y += tile_height + GRID_CAPTION + GRID_GAP
    return canvas


def write_grid(path: str | Path, rows: Sequence[Sequence[Tile]], tile_height: int = GRID_TILE_HEIGHT) -> None:
    """Write :func:`make_grid` as a PNG (atomically); at most ``GRID_MAX_ROWS`` rows are used."""
    image = make_grid(list(rows)[:GRID_MAX_ROWS], tile_height)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
