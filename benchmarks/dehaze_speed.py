"""Benchmark: seconds to dehaze one photo, per method and image size, on the CPU.

Each method runs through ``hazefree.Dehazer`` (the path of ``hazefree dehaze``, without file I/O)
on a real hazy photo resized to each size. The reference is DCP measured in the same run: the
ratio column is method time / DCP time at the same size, so numbers from machines of different
speed (or under different load) stay comparable. Learned models run their network at the model's
working size and carry the transmission to full size with the fast guided filter.

A second reference calibrates DCP itself: OpenCV's gray guided filter (cv2.ximgproc.guidedFilter,
r = 60, float32) on the same image, timed in turn with the methods. The DCP targets of issue 16
(1080p in 0.15 s, 4K in 0.6 s) were set where that filter took 26 ms at 1080p, so they read as
DCP <= 5.8x OpenCV's guided filter at the same size on any machine. CPU time (all threads of the
process) is printed beside the wall time: on a machine shared with other jobs it shows the work
done, where the wall time also counts the waiting.

Usage:
    python benchmarks/dehaze_speed.py [--methods dcp,guided-pix2pix,aod-net]
        [--sizes 512x512,1920x1080,3840x2160] [--repeats 3] [--threads 2] [--image PATH]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from machine import (  # benchmarks/machine.py (scripts run from this folder)
    cpu_model,
    interleaved_ms,
    load_average,
)

import hazefree
import hazefree.ops
from hazefree import models
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "ohaze" / "hazy"
REFERENCE = "dcp"
OPENCV_GF = "OpenCV guided filter"


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
    cv2.setNumThreads(args.threads)
    photo = _photo(args.image)

    print(f"Machine: {cpu_model()}, {torch.get_num_threads()} torch/OpenCV threads; load average (1/5/15 min) "
          f"at start: {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, hazefree {hazefree.__version__}")
    print(f"Input: {args.image} resized to each size; median of {args.repeats} interleaved runs after a warm-up; "
          f"ratio = method / {REFERENCE} at the same size; {OPENCV_GF}: gray guide, r = 60, eps = 1e-4.")
    print()
    print(f"| size (W x H) | method | seconds | CPU seconds | ratio to dcp | ratio to {OPENCV_GF} |")
    print("|---|---|---:|---:|---:|---:|")
    dehazers = {m: hazefree.Dehazer(m) for m in methods}
    for w, h in sizes:
        image = F.interpolate(photo, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        gray = np.ascontiguousarray(hazefree.ops.rgb_to_gray(image)[0, 0].numpy())
        fns = {m: (lambda d=d: d(image)) for m, d in dehazers.items()}
        fns[OPENCV_GF] = lambda: cv2.ximgproc.guidedFilter(gray, gray, 60, 1e-4)
        wall = interleaved_ms(fns, args.repeats)
        cpu = interleaved_ms(fns, args.repeats, clock="cpu")
        for m in [*methods, OPENCV_GF]:
            t = wall[m] / 1e3
            print(f"| {w} x {h} | {m} | {t:.3f} | {cpu[m] / 1e3:.3f} | {wall[m] / wall[REFERENCE]:.2f} | "
                  f"{wall[m] / wall[OPENCV_GF]:.2f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
