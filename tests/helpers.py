"""Shared test helpers: the location of ../shared/data and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# CI checks the project out with ../shared beside it; tests that need it skip when it is absent.
# HAZEFREE_SHARED_DATA points elsewhere (a git worktree whose parent has no shared/).
SHARED_DATA = Path(os.environ.get("HAZEFREE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def make_paired_dataset(root: Path, n: int = 4, size: int = 40, seed: int = 0, first: int = 100) -> Path:
    """``n`` smooth random scenes with synthetic haze in ``root/hazy`` + ``root/clear``, RESIDE names
    (scene ids ``first``, ``first + 1``, ...)."""
    rng = np.random.default_rng(seed)
    (root / "hazy").mkdir(parents=True)
    (root / "clear").mkdir(parents=True)
    for i in range(n):
        base = rng.random((5, 5, 3))
        clear = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
        Image.fromarray(clear).save(root / "clear" / f"{first + i}.png")
        t = np.linspace(0.3, 0.9, size)[None, :, None]
        hazy = clear / 255.0 * t + 0.85 * (1 - t)
        Image.fromarray((hazy * 255).round().astype(np.uint8)).save(root / "hazy" / f"{first + i}_1.png")
    return root
