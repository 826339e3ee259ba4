"""Benchmark: hazefree.ops.guided_filter against OpenCV's cv2.ximgproc.guidedFilter on the CPU.

Times the forward pass and forward + backward (gradient w.r.t. src through the explicit Alg. 2
backward) at r = 60, float32 inputs and outputs, gray and colour guides, next to OpenCV's forward
time measured in the same run (all calls of one row timed in turn, repeat after repeat), and the
fast guided filter at 1/4 scale at 3840 x 2160. For each row it also prints

* the memory-bandwidth bound: the bytes any implementation must move (guide and src read once, the
  output written once; the kernel's a and b rows live in a ring of 2 r + 2 rows and are not
  counted) divided by the copy speed measured in the same run, and how far the forward is from it;
* the accuracy: the largest |difference| of the float32 output at eps = 1e-8 from the float64
  torch implementation (cumulative sums, hazefree.ops with the kernels switched off) on the same
  values.

Prints the machine, the versions and Markdown tables (medians of a few repeats, after a warm-up).

Usage:
    python benchmarks/guided_filter.py [--repeats 5] [--sizes 512x512,1920x1080,3840x2160]
        [--fast-size 3840x2160] [--threads 2] [--no-accuracy] [--clock wall|cpu]
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
    copy_gbps,
    cpu_model,
    interleaved_ms,
    load_average,
)

from hazefree import ops
from hazefree.ops import fast_guided_filter, guided_filter

RADIUS, EPS, TINY_EPS = 60, 1e-4, 1e-8
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
    # the upstream gradient is made once, outside the timed call: the time is the filter's
    with torch.no_grad():
        grad_y = torch.ones_like(fn(src))

    def run() -> None:
        x = src.detach().requires_grad_(True)
        fn(x).backward(grad_y)

    return run


def _bytes_touched(pixels: int, guide_channels: int) -> int:
    """Bytes read and written at the least: float32 guide and src read once, float32 output written once."""
    return pixels * 4 * (guide_channels + 2)


def _float64_error(g: torch.Tensor, x: torch.Tensor) -> float:
    """max |float32 output - float64 torch reference| at eps = 1e-8."""
    ours = guided_filter(g, x, RADIUS, TINY_EPS)
    ops.USE_CPU_KERNELS = False
    try:
        ref = guided_filter(g.double(), x.double(), RADIUS, TINY_EPS)
    finally:
        ops.USE_CPU_KERNELS = True
    return float((ours.double() - ref).abs().max())


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument("--sizes", default="512x512,1920x1080,3840x2160", help="comma-separated WxH")
    parser.add_argument("--fast-size", default="3840x2160", help="WxH for the fast guided filter")
    parser.add_argument("--threads", type=int, default=2, help="torch, kernel and OpenCV threads")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the float64 comparison")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="elapsed time, or CPU time of all threads (steadier on a loaded machine)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    # compile (or load from numba's cache) before anything is timed
    guided_filter(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), 2, EPS)
    gbps = copy_gbps(args.threads)

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; torch/kernel/OpenCV threads: {args.threads}")
    print(f"Load average at start (1/5/15 min): {load_average()}")
    print(
        f"Versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"OpenCV {cv2.__version__}, NumPy {np.__version__}"
    )
    print(f"Measured copy speed (256 MB float64, read + write, {args.threads} threads): {gbps:.1f} GB/s")
    print(f"Settings: r = {RADIUS}, eps = {EPS:g}, float32 in and out, {args.clock} clock, median of "
          f"{args.repeats} interleaved runs after a warm-up;")
    print("fwd+bwd = forward + gradient w.r.t. src (explicit Alg. 2 backward); fwd ratio = ours / OpenCV forward;")
    print("bound = bytes touched (inputs read once, output written once) / copy speed;")
    print(f"error = max |ours float32 - float64 reference| at eps = {TINY_EPS:g}.")
    print()
    header = ["size (W x H)", "guide", "ours fwd (ms)", "OpenCV fwd (ms)", "fwd ratio", "ours fwd+bwd (ms)",
              "fwd+bwd / fwd", "MB touched", "bound (ms)", "fwd / bound", "error"]
    print(_row(header))
    print(_row(["---"] * 2 + ["---:"] * (len(header) - 2)))
    sys.stdout.flush()

    for w, h in sizes:
        for channels, name in ((1, "gray"), (3, "colour")):
            guide_np, src_np = _inputs(h, w, channels, seed=w + channels)
            g, x = _to_torch(guide_np, src_np)

            def forward() -> None:
                with torch.no_grad():
                    guided_filter(g, x, RADIUS, EPS)

            t = interleaved_ms(
                {
                    "cv": lambda: cv2.ximgproc.guidedFilter(guide_np, src_np, RADIUS, EPS),
                    "fwd": forward,
                    "bwd": _forward_backward(lambda s: guided_filter(g, s, RADIUS, EPS), x),
                },
                args.repeats,
                args.clock,
            )
            touched = _bytes_touched(h * w, channels)
            bound = touched / gbps / 1e6
            err = "-" if args.no_accuracy else f"{_float64_error(g, x):.1e}"
            print(_row([f"{w} x {h}", name, _fmt(t["fwd"]), _fmt(t["cv"]), f"{t['fwd'] / t['cv']:.2f}",
                        _fmt(t["bwd"]), f"{t['bwd'] / t['fwd']:.2f}", f"{touched / 1e6:.1f}", _fmt(bound),
                        f"{t['fwd'] / bound:.1f}", err]))
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

        def fast_forward() -> None:
            with torch.no_grad():
                fast_guided_filter(g, g_lr, x_lr, r_lr, EPS)

        t = interleaved_ms(
            {
                "cv": lambda: cv2.ximgproc.guidedFilter(guide_np, src_np, RADIUS, EPS, scale=1.0 / FAST_SCALE),
                "fwd": fast_forward,
                "bwd": _forward_backward(lambda s: fast_guided_filter(g, g_lr, s, r_lr, EPS), x_lr),
            },
            args.repeats,
            args.clock,
        )
        t_fwd, t_bwd, t_cv = t["fwd"], t["bwd"], t["cv"]
        print(_row([f"{w} x {h}", name, _fmt(t_fwd), _fmt(t_bwd), _fmt(t_cv), f"{t_fwd / t_cv:.2f}"]))
        sys.stdout.flush()
        del g, x, g_lr, x_lr, guide_np, src_np
        gc.collect()


if __name__ == "__main__":
    main()
