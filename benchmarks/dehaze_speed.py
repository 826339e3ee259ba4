"""Benchmark: seconds to dehaze one photo, per method and image size, on the CPU.

Each method runs through ``hazefree.Dehazer`` (the path of ``hazefree dehaze``, without file I/O)
on a real hazy photo resized to each size. The reference is DCP measured in the same run: the
ratio column is method time / DCP time at the same size, so numbers from machines of different
speed (or under different load) stay comparable. Learned models run their network at the model's
working size and carry the transmission to full size with the fast guided filter.

Usage:
    python benchmarks/dehaze_speed.py [--methods dcp,guided-pix2pix,aod-net]
        [--sizes 512x512,1920x1080,3840x2160] [--repeats 3] [--threads 2] [--image PATH]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import (  # benchmarks/machine.py (scripts run from this folder)
    cpu_model,
    load_average,
    median_ms,
)

import hazefree
from hazefree import models
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "ohaze" / "hazy"
REFERENCE = "dcp"


def _photo(path: Path) -> torch.Tensor:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            raise SystemExit(f"error: {path}: no images")
        path = files[0]
    return read_image(path).rgb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated (default: dcp and every model with shipped weights)")
    parser.add_argument("--sizes", default="512x512,1920x1080,3840x2160", help="comma-separated WxH")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a hazy photo (or a folder: its first)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else models.pretrained()
    methods = [REFERENCE] + [m for m in methods if m != REFERENCE]
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    photo = _photo(args.image)

    print(f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; load average (1/5/15 min) "
          f"at start: {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, hazefree {hazefree.__version__}")
    print(f"Input: {args.image} resized to each size; median of {args.repeats} runs after a warm-up; "
          f"ratio = method / {REFERENCE} at the same size.")
    print()
    print("| size (W x H) | method | seconds | ratio to dcp |")
    print("|---|---|---:|---:|")
    dehazers = {m: hazefree.Dehazer(m) for m in methods}
    for w, h in sizes:
        image = F.interpolate(photo, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        times = {m: median_ms(lambda d=d: d(image), args.repeats) / 1e3 for m, d in dehazers.items()}
        for m, t in times.items():
            print(f"| {w} x {h} | {m} | {t:.3f} | {t / times[REFERENCE]:.2f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
