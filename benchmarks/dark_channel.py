"""Benchmark: hazefree.physics.dark_channel against two references.

``dark_channel`` runs its min filter with ``cv2.erode`` on CPU tensors that need no gradient, and
with the torch min filter by doubling otherwise (GPU, autograd); both are timed. References measured
in the same run: the min filter as two ``F.max_pool2d`` passes (what hazefree used first), and
OpenCV's ``cv2.erode`` with a square kernel on a NumPy channel minimum. All give the same values
(checked before timing); the table gives milliseconds and the ratios to the references.

Usage:
    python benchmarks/dark_channel.py [--repeats 5] [--sizes 512x512,1920x1080,3840x2160]
        [--patch 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_model, interleaved_ms, load_average  # benchmarks/machine.py

from hazefree.physics import _min_filter_1d, dark_channel


def max_pool_dark_channel(image: torch.Tensor, patch: int) -> torch.Tensor:
    """The min filter as -max_pool(-x) in two 1-D passes (border windows clipped by -inf padding)."""
    r = patch // 2
    m = -image.amin(dim=1, keepdim=True)
    m = F.max_pool2d(m, kernel_size=(patch, 1), stride=1, padding=(r, 0))
    return -F.max_pool2d(m, kernel_size=(1, patch), stride=1, padding=(0, r))


def doubling_dark_channel(image: torch.Tensor, patch: int) -> torch.Tensor:
    """dark_channel's torch path (GPU tensors, or when a gradient is needed)."""
    r = patch // 2
    m = image.amin(dim=1, keepdim=True)
    return _min_filter_1d(_min_filter_1d(m, r, dim=-2), r, dim=-1)


def opencv_dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """H x W x 3 float32 -> H x W; erode's default border value leaves border windows clipped."""
    return cv2.erode(image.min(axis=2), np.ones((patch, patch), np.uint8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="512x512,1920x1080,3840x2160")
    parser.add_argument("--patch", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; torch/OpenCV threads: {args.threads}")
    print(f"Load average at start (1/5/15 min): {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}")
    print(f"Settings: {args.patch} x {args.patch} patch, float32 RGB, median of {args.repeats} interleaved runs after a warm-up.")
    print()
    print("| size (W x H) | ours (ms) | ours, torch path (ms) | max_pool2d (ms) | cv2.erode (ms) | ours / max_pool2d "
          "| ours / cv2.erode | torch path / max_pool2d |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    gen = torch.Generator().manual_seed(0)
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        image = torch.rand(1, 3, h, w, generator=gen)
        pixels = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy())
        ours = dark_channel(image, args.patch)
        if not torch.equal(ours, doubling_dark_channel(image, args.patch)):
            raise SystemExit(f"{size}: dark_channel's two paths differ")
        if not torch.equal(ours, max_pool_dark_channel(image, args.patch)):
            raise SystemExit(f"{size}: dark_channel differs from the max_pool2d reference")
        if not np.array_equal(ours[0, 0].numpy(), opencv_dark_channel(pixels, args.patch)):
            raise SystemExit(f"{size}: dark_channel differs from cv2.erode")
        t = interleaved_ms(
            {
                "ours": lambda: dark_channel(image, args.patch),
                "torch": lambda: doubling_dark_channel(image, args.patch),
                "pool": lambda: max_pool_dark_channel(image, args.patch),
                "cv": lambda: opencv_dark_channel(pixels, args.patch),
            },
            args.repeats,
        )
        t_ours, t_torch, t_pool, t_cv = t["ours"], t["torch"], t["pool"], t["cv"]
        print(f"| {w} x {h} | {t_ours:.1f} | {t_torch:.1f} | {t_pool:.1f} | {t_cv:.1f} | {t_ours / t_pool:.2f} "
              f"| {t_ours / t_cv:.2f} | {t_torch / t_pool:.2f} |")


if __name__ == "__main__":
    main()
