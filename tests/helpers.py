"""Shared test helpers: the location of ../shared/data and small generated datasets."""

from __future__ import annotations

import os
import struct
import zlib
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


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no pixel data (a
    decompression bomb as seen by a reader that checks the header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def truncated_png(size: int = 64, keep: int = 400) -> bytes:
    """The first ``keep`` bytes of a real noisy PNG (a file cut off during a copy)."""
    import io

    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()[:keep]


def hazy_ramp(seed: int = 0, size: int = 48):
    """A small 1 x 3 x size x size hazy image: a smooth random scene under a left-to-right haze
    ramp (t 0.25 to 0.9) with a warm airlight; the haze gates' tests share it."""
    import torch

    g = torch.Generator().manual_seed(seed)
    clear = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(size, size), mode="bilinear")
    t = torch.linspace(0.25, 0.9, size).view(1, 1, 1, size)
    return clear * t + torch.tensor([0.8, 0.78, 0.7]).view(1, 3, 1, 1) * (1 - t)
