"""Benchmark: hazefree.ops.guided_filter against OpenCV's cv2.ximgproc.guidedFilter on the CPU.

Times the forward pass and forward + backward (gradient w.r.t. src through the explicit Alg. 2
backward) at r = 60, eps = 1e-4, float32 inputs, gray and colour guides, next to OpenCV's forward
time measured in the same run, and the fast guided filter at 1/4 scale at 3840 x 2160.
Prints the machine, the versions and a Markdown table (medians of a few repeats, after a warm-up).

Usage:
    python benchmarks/guided_filter.py [--repeats 3] [--sizes 512x512,1920x1080,3840x2160]
        [--fast-size 3840x2160] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from machine import (  # benchmarks/machine.py (scripts run from this folder)
    cpu_model,
    load_average,
    median_ms,
)

from hazefree.ops import fast_guided_filter, guided_filter

RADIUS, EPS = 60, 1e-4
FAST_SCALE = 4


def _inputs(h: int, w: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    guide = rng.random((h, w, channels) if channels == 3 else (h, w), dtype=np.float32)
    src = rng.random((h, w), dtype=np.float32)
    return guide, src


def _to_torch(guide: np.ndarray, src: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.from_numpy(guide)
    g = g.permute(2, 0, 1)[None].contiguous() if g.dim() == 3 else g[None, None]
    return g, torch.from_numpy(src)[None, None]


def _forward_backward(fn: Callable[[torch.Tensor], torch.Tensor], src: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x = src.detach().requires_grad_(True)
        y = fn(x)
        y.backward(torch.ones_like(y))

    return run


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--sizes", default="512x512,1920x1080,3840x2160", help="comma-separated WxH")
    parser.add_argument("--fast-size", default="3840x2160", help="WxH for the fast guided filter")
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; torch/OpenCV threads: {args.threads}")
    print(f"Load average at start (1/5/15 min): {load_average()}")
    print(
        f"Versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"OpenCV {cv2.__version__}, NumPy {np.__version__}"
    )
    print(f"Settings: r = {RADIUS}, eps = {EPS:g}, float32 inputs, median of {args.repeats} runs after a warm-up;")
    print("fwd+bwd = forward + gradient w.r.t. src (explicit Alg. 2 backward); ratio = ours / OpenCV forward.")
    print()
    header = ["size (W x H)", "guide", "ours fwd (ms)", "ours fwd+bwd (ms)", "OpenCV fwd (ms)",
              "fwd ratio", "fwd+bwd ratio"]
    print(_row(header))
    print(_row(["---"] * 2 + ["---:"] * 5))
    sys.stdout.flush()

    for w, h in sizes:
        for channels, name in ((1, "gray"), (3, "colour")):
            guide_np, src_np = _inputs(h, w, channels, seed=w + channels)
            g, x = _to_torch(guide_np, src_np)
            t_cv = median_ms(lambda: cv2.ximgproc.guidedFilter(guide_np, src_np, RADIUS, EPS), args.repeats)
            with torch.no_grad():
                t_fwd = median_ms(lambda: guided_filter(g, x, RADIUS, EPS), args.repeats)
            t_bwd = median_ms(_forward_backward(lambda s: guided_filter(g, s, RADIUS, EPS), x), args.repeats)
            print(_row([f"{w} x {h}", name, _fmt(t_fwd), _fmt(t_bwd), _fmt(t_cv),
                        f"{t_fwd / t_cv:.1f}", f"{t_bwd / t_cv:.1f}"]))
            sys.stdout.flush()
            del g, x, guide_np, src_np
            gc.collect()

    # Fast guided filter: coefficients at 1/4 resolution (r = 60 / 4), applied at full resolution;
    # the low-resolution inputs are prepared outside the timed call. OpenCV's own subsampling
    # (scale argument) is the comparison.
    w, h = (int(v) for v in args.fast_size.lower().split("x"))
    r_lr = RADIUS // FAST_SCALE
    print()
    print(f"Fast guided filter at 1/{FAST_SCALE} scale (r = {r_lr} at {w // FAST_SCALE} x {h // FAST_SCALE}, "
          f"output {w} x {h}); OpenCV: guidedFilter(..., scale=1/{FAST_SCALE}).")
    print()
    print(_row(["size (W x H)", "guide", "ours fwd (ms)", "ours fwd+bwd (ms)", "OpenCV fwd (ms)", "fwd ratio"]))
    print(_row(["---"] * 2 + ["---:"] * 4))
    for channels, name in ((1, "gray"), (3, "colour")):
        guide_np, src_np = _inputs(h, w, channels, seed=channels)
        g, x = _to_torch(guide_np, src_np)
        g_lr = F.avg_pool2d(g, FAST_SCALE)
        x_lr = F.avg_pool2d(x, FAST_SCALE)
        try:
            t_cv = median_ms(
                lambda: cv2.ximgproc.guidedFilter(guide_np, src_np, RADIUS, EPS, scale=1.0 / FAST_SCALE),
                args.repeats,
            )
        except (TypeError, cv2.error):  # OpenCV builds without the scale argument
            t_cv = float("nan")
        with torch.no_grad():
            t_fwd = median_ms(lambda: fast_guided_filter(g, g_lr, x_lr, r_lr, EPS), args.repeats)
        t_bwd = median_ms(_forward_backward(lambda s: fast_guided_filter(g, g_lr, s, r_lr, EPS), x_lr), args.repeats)
        print(_row([f"{w} x {h}", name, _fmt(t_fwd), _fmt(t_bwd), _fmt(t_cv), f"{t_fwd / t_cv:.1f}"]))
        sys.stdout.flush()
        del g, x, g_lr, x_lr, guide_np, src_np
        gc.collect()


if __name__ == "__main__":
    main()
