"""Benchmark: FADE (hazefree.metrics.fade) at 1 MP and other sizes, against SSIM in the same run.

The image is the repository's sample photo (hazefree/samples/canyon.jpg) resized to each size, so
the patch statistics (entropy histograms, NaN patches) are those of a real photo. Timed: ``fade``
on a 1 x 3 x H x W float32 tensor (quantisation to 8 bits included) and, as the reference
operation, ``hazefree.metrics.ssim`` of the same image against a blurred copy (a full-reference
metric of the same size, float64, 11 x 11 Gaussian windows). Both are timed in turn within each
repeat (benchmarks/machine.py ``interleaved_ms``), so a change of load on the shared machine
affects them alike; the ratio fade / ssim is the number to compare across machines.

Usage:
    python benchmarks/fade_speed.py [--repeats 5] [--sizes 1000x1000,1920x1080] [--threads 1]
        [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import cpu_model, interleaved_ms, load_average  # benchmarks/machine.py
from PIL import Image

from hazefree.metrics import ssim
from hazefree.metrics.fade import fade

SAMPLE = Path(__file__).resolve().parents[1] / "hazefree" / "samples" / "canyon.jpg"


def photo(width: int, height: int) -> torch.Tensor:
    """The sample photo resized to ``width`` x ``height``: 1 x 3 x H x W float32 in [0, 1]."""
    with Image.open(SAMPLE) as im:
        rgb = np.asarray(im.convert("RGB"))
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1000x1000,1920x1080")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; torch/OpenCV threads: {args.threads}")
    print(f"Load average at start (1/5/15 min): {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}, "
          f"NumPy {np.__version__}")
    print(f"Settings: {SAMPLE.name} resized, median of {args.repeats} interleaved runs after a warm-up, "
          f"{args.clock} clock.")
    print()
    print("| size (W x H) | MP | FADE (ms) | SSIM (ms) | FADE / SSIM | FADE value |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        image = photo(w, h)
        blurred = torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)
        value = fade(image).item()
        fns = {"fade": lambda: fade(image), "ssim": lambda: ssim(image, blurred)}
        t = interleaved_ms(fns, args.repeats, args.clock)
        print(f"| {w} x {h} | {w * h / 1e6:.2f} | {t['fade']:.0f} | {t['ssim']:.0f} | {t['fade'] / t['ssim']:.2f} "
              f"| {value:.4f} |")


if __name__ == "__main__":
    main()
