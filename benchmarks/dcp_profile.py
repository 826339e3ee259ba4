"""Profile: CPU time of each step of DCP inference (``hazefree.Dehazer("dcp")``) on one thread.

Runs the steps of :meth:`hazefree.models.dcp.DarkChannelPrior.forward` (inference path) one by one
on a hazy photo resized to each size, and the whole ``Dehazer`` call, and prints the median CPU
time of each (CPU time: on a shared machine it counts the work, not the waiting). The steps do not
add up to the whole: the rest is the first touch of the fresh image-sized arrays (page faults) and
the Python around them.

Usage:
    python benchmarks/dcp_profile.py [--sizes 1920x1080,3840x2160] [--repeats 5] [--image PATH]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from dehaze_speed import DEFAULT_IMAGE, _photo  # benchmarks/dehaze_speed.py
from machine import cpu_model, interleaved_ms, load_average

import hazefree
from hazefree.ops import _LUMA, _cpu_kernels, guided_filter
from hazefree.physics import dark_channel, estimate_airlight


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1920x1080,3840x2160")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    kernels = _cpu_kernels()
    model = hazefree.Dehazer("dcp")
    m = model.model
    print(f"Machine: {cpu_model()}; 1 thread; load average (1/5/15 min) at start: {load_average()}")
    print(f"CPU ms per step, median of {args.repeats} runs after a warm-up; input {args.image}")
    print()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print("| step | " + " | ".join(f"{w} x {h} (ms)" for w, h in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    rows: dict[str, list[float]] = {}
    for w, h in sizes:
        img = F.interpolate(_photo(args.image), size=(h, w), mode="bilinear", antialias=True,
                            align_corners=False).clamp(0, 1)
        with torch.inference_mode():
            image = img.numpy()
            a = estimate_airlight(img, m.airlight)
            a_rows = a.reshape(1, 3).numpy()
            dark = dark_channel(img).reshape(1, -1)
            luma = np.asarray(_LUMA, dtype=np.float32)
            gray, scaled_min = (torch.from_numpy(v) for v in kernels.gray_and_scaled_min(image, luma, a_rows, 1))
            coarse = dark_channel(scaled_min, m.patch_size).mul_(-m.omega).add_(1.0)
            t = guided_filter(gray, coarse, m.radius, m.eps).clamp_(0.0, 1.0)
            steps = {
                "airlight (dark channel, top 0.1 %, brightest 10 %)": lambda: estimate_airlight(img, m.airlight),
                "  of which torch.topk": lambda: dark.topk(max(1, math.ceil(1e-3 * h * w)), dim=1),
                "gray guide and min over channels of I / A (one kernel pass)":
                    lambda: kernels.gray_and_scaled_min(image, luma, a_rows, 1),
                "min filter of the dark channel (cv2.erode)": lambda: dark_channel(scaled_min, m.patch_size),
                "coarse t = 1 - omega dark (in place)": lambda: coarse.clone().mul_(-m.omega).add_(1.0),
                f"guided filter, r = {m.radius} (kernel)": lambda: guided_filter(gray, coarse, m.radius, m.eps),
                "recovery J (one kernel pass)": lambda: kernels.recover(image, t.numpy(), a_rows, m.t_min, 1),
                "whole Dehazer('dcp') call": lambda: model(img),
            }
            times = interleaved_ms(steps, args.repeats, clock="cpu")
        for name, ms in times.items():
            rows.setdefault(name, []).append(ms)
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
