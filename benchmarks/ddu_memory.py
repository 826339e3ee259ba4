"""Benchmark: peak memory of one training step with DDU on a 4K image, against the wrapped model.

Each case runs in its own subprocess (so peaks do not mix) and reports its peak resident set size
(``resource.getrusage``, ``ru_maxrss``) and the peak minus the process's size just before the
step's tensors exist (torch imported, model built: the memory the step itself needs). One
training step = forward, per-sample MSE, backward, one SGD update, on a random batch of 1.

Cases per model (``--models``, default aod-net and griddehazenet):

* ``ddu``   : ``models.create(model, ddu=S)`` on a W x H image (default 3840 x 2160);
* ``low``   : the plain model on the W/S x H/S image: the memory DDU is meant to stay within;
* ``full``  : the plain model on the W x H image (``--full``; very large for big models).

The ratio column is ddu / low, both as step memory (peak minus idle) and as peak RSS.

Usage:
    nice -n 5 python benchmarks/ddu_memory.py [--models aod-net,griddehazenet] [--scale 4]
        [--size 3840x2160] [--full aod-net] [--threads 1] [--out docs/ddu_memory.md]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model, load_average  # benchmarks/machine.py (scripts run from this folder)

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(model: str, scale: int | None, height: int, width: int, threads: int) -> dict:
    """One training step in this process; returns the measurements."""
    import torch

    from hazefree import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = models.create(model, ddu=scale).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    idle = _current_rss_mb()
    t0 = time.perf_counter()
    hazy, clear = torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)
    loss = (net(hazy).clear - clear).square().flatten(1).mean(1)
    loss.mean().backward()
    opt.step()
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    return {"idle_mb": idle, "peak_mb": peak, "step_mb": peak - idle, "seconds": seconds,
            "loss": float(loss.mean())}


def run_case(model: str, scale: int | None, height: int, width: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([model, scale, height, width, threads])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["killed"]
        return {"error": f"exit {done.returncode}: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", default="aod-net,griddehazenet")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", default="3840x2160", help="W x H of the full-resolution image")
    p.add_argument("--full", default="aod-net", help="models also measured at full size without DDU ('' = none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the table (markdown) here")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    s = args.scale
    low_h, low_w = round(height / s), round(width / s)
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        cases = {"ddu": run_case(model, s, height, width, args.threads),
                 "low": run_case(model, None, low_h, low_w, args.threads)}
        if model in args.full.split(","):
            cases["full"] = run_case(model, None, height, width, args.threads)
        rows.append((model, cases))
        print(model, json.dumps(cases), file=sys.stderr, flush=True)

    def cell(c: dict | None, key: str) -> str:
        if c is None:
            return "not run"
        return c["error"] if "error" in c else f"{c[key]:.0f}"

    lines = [
        f"One training step (batch 1, SGD) at {width} x {height}, DDU factor S = {s} (the wrapped model "
        f"sees {low_w} x {low_h}); {args.threads} thread(s); {cpu_model()}, load average {load_average()} "
        f"(a shared machine). MB = 2^20 bytes; step = peak RSS minus the idle process (torch + model).",
        "",
        f"| model | DDU step at {width}x{height} | plain step at {low_w}x{low_h} | ratio DDU / plain 1/S "
        f"| plain step at {width}x{height} | peak RSS DDU / plain 1/S | DDU step time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, c in rows:
        d, lo, full = c["ddu"], c["low"], c.get("full")
        ok = "error" not in d and "error" not in lo
        ratio = f"{d['step_mb'] / lo['step_mb']:.2f}" if ok else "n/a"
        peak_ratio = f"{d['peak_mb']:.0f} / {lo['peak_mb']:.0f} = {d['peak_mb'] / lo['peak_mb']:.2f}" if ok else "n/a"
        secs = f"{d['seconds']:.1f}" if "error" not in d else "n/a"
        lines.append(f"| {model} | {cell(d, 'step_mb')} | {cell(lo, 'step_mb')} | {ratio} | "
                     f"{cell(full, 'step_mb')} | {peak_ratio} | {secs} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
