"""Synthetic haze from clear images with depth: I = J t + A (1 - t), t = exp(-beta d)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..physics import add_haze
from .pairs import _images


@dataclass(frozen=True)
class DepthSample:
    """A clear image and its depth (or disparity) map, as stored in ``clear/`` + ``depth/``."""

    clear: Path
    depth: Path
    disparity: bool


def find_depth_samples(root: str | Path) -> list[DepthSample]:
    """Pairs ``root/clear/<stem>.*`` + ``root/depth/<stem>.*``.

    8-bit depth files are taken as Middlebury disparity (larger = nearer, 0 = unknown); 16-bit
    files as metric depth from a depth sensor (0 = unknown).
    """
    root = Path(root)
    clear_dir, depth_dir = root / "clear", root / "depth"
    if not (clear_dir.is_dir() and depth_dir.is_dir()):
        raise ValueError(f"{root}: expected sub-folders clear/ and depth/")
    depth_files = {p.stem: p for p in depth_dir.iterdir() if p.is_file()}
    out = []
    for c in _images(clear_dir):
        d = depth_files.get(c.stem)
        if d is None:
            warnings.warn(f"{c}: no depth map in {depth_dir}")
            continue
        out.append(DepthSample(c, d, disparity=_bit_depth(d) == 8))
    if not out:
        raise ValueError(f"{root}: no clear/depth pairs found")
    return out


def _bit_depth(path: Path) -> int:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"{path}: cannot read depth map")
    return 16 if arr.dtype == np.uint16 else 8


def read_depth(sample: DepthSample) -> Tensor:
    """Relative depth in [0, 1] (1 = farthest), 1 x 1 x H x W; unknown pixels are set to the farthest.

    Disparity is converted to depth as 1 / disparity; both are normalised by their maximum so that
    ``beta`` in :func:`synthesize_haze` has the same meaning for every source.
    """
    import cv2

    raw = cv2.imread(str(sample.depth), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{sample.depth}: cannot read depth map")
    raw = raw.astype(np.float64)
    if raw.ndim == 3:
        raw = raw[..., 0]
    valid = raw > 0
    if sample.disparity:
        depth = np.where(valid, 1.0 / np.maximum(raw, 1e-6), 0.0)
    else:
        valid &= raw < np.iinfo(np.uint16).max  # saturated sensor readings are unknown too
        depth = np.where(valid, raw, 0.0)
    far = depth[valid].max() if valid.any() else 1.0
    depth = np.where(valid, depth, far) / far
    return torch.from_numpy(depth.astype(np.float32))[None, None]


def synthesize_haze(
    clear: Tensor, depth: Tensor, beta: float, airlight: Sequence[float] | Tensor
) -> tuple[Tensor, Tensor]:
    """Render haze on ``clear`` (1 x 3 x H x W) from relative ``depth``; returns (hazy, transmission)."""
    if depth.shape[-2:] != clear.shape[-2:]:
        depth = F.interpolate(depth, size=clear.shape[-2:], mode="bilinear", align_corners=False)
    t = torch.exp(-beta * depth)
    return add_haze(clear, t, torch.as_tensor(airlight, dtype=clear.dtype)), t


# --- in-memory training data with deterministic crops ----------------------------------------


def _draw_airlight(u: Tensor, airlight_range: tuple[float, float], tint: float = 0.1) -> Tensor:
    """An airlight (3,) from four uniforms: a level in ``airlight_range``, times 1 + tint (u - 1/2) per
    channel (tint 0.1: +-5 %, grey-ish; 0.5: +-25 %, as yellow dust or a blue dusk)."""
    level = airlight_range[0] + (airlight_range[1] - airlight_range[0]) * u[0].item()
    return (level * (1.0 + tint * (u[1:4] - 0.5))).clamp(0.0, 1.0)


def density_field(shape: tuple[int, int], variation: float, generator: torch.Generator, cells: int = 4) -> Tensor:
    """A smooth random factor on beta, exp(variation * n), 1 x 1 x H x W: n is a ``cells`` x ``cells``
    grid of standard normals, upsampled bicubically, so haze is denser in some regions of the scene
    than its depth says (non-homogeneous haze, as in NH-HAZE; RIDCP's realistic synthesis)."""
    grid = torch.randn(1, 1, cells, cells, generator=generator)
    return torch.exp(variation * F.interpolate(grid, size=shape, mode="bicubic", align_corners=True))
