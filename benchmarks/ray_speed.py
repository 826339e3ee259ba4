"""Benchmark: images per second of `hazefree dehaze --ray` with 1 and 2 local workers, against the
plain command, in the same run.

A folder of real hazy photos (copied from ../shared/data, shrunk so that the longer side is at
most --long-side, repeated to --count files) is dehazed four ways, each into a fresh output folder
through ``hazefree.cli.main``: the plain command (one process, torch's default threads; and again
with one torch thread), then on a local Ray instance started with ``num_cpus`` 1 and 2 (one task
per CPU, one torch thread each). An untimed plain run on one image first loads the libraries. The
timed span is the command itself, model loading included (in each Ray worker too); starting the
Ray instance is timed apart. The ratio column is images/s over the plain command's images/s.

Usage:
    python benchmarks/ray_speed.py [--method guided-pix2pix] [--count 24] [--long-side 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model, load_average  # benchmarks/machine.py
from PIL import Image

import hazefree
from hazefree import cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "real_hazy_classic" / "hazy"


def _make_inputs(source: Path, target: Path, count: int, long_side: int) -> None:
    photos = sorted(p for p in source.iterdir() if p.is_file())
    target.mkdir(parents=True)
    for i in range(count):
        image = Image.open(photos[i % len(photos)]).convert("RGB")
        image.thumbnail((long_side, long_side))
        image.save(target / f"{i:04d}.png")


def _timed(argv: list[str]) -> float:
    quiet = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        code = cli.main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"hazefree {' '.join(argv)} exited with {code}:\n{quiet.getvalue()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=None, help="model (default: the default model)")
    parser.add_argument("--count", type=int, default=24, help="number of images")
    parser.add_argument("--long-side", type=int, default=1024, help="largest longer side of each image in pixels")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of hazy photos")
    args = parser.parse_args(argv)
    method = ["--method", args.method] if args.method else []

    print(f"Machine: {cpu_model()}, torch default threads {torch.get_num_threads()}; load average (1/5/15 min) "
          f"at start: {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
          f"hazefree {hazefree.__version__}")
    print(f"Input: {args.count} PNG files from {args.photos}, longer side at most {args.long_side} px; method: "
          f"{args.method or hazefree.default_method()}; one run each; ratio = images/s over the plain command's.")
    print()
    print("| run | seconds | images/s | ratio |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        _make_inputs(args.photos, inputs, args.count, args.long_side)
        _timed(["dehaze", str(next(inputs.iterdir())), "-o", str(Path(tmp) / "warm-up"), *method])
        plain = _timed(["dehaze", str(inputs), "-o", str(Path(tmp) / "plain"), *method])
        print(f"| plain command ({torch.get_num_threads()} torch threads) | {plain:.1f} | {args.count / plain:.2f} | 1.00 |")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = _timed(["dehaze", str(inputs), "-o", str(Path(tmp) / "plain1"), *method])
        finally:
            torch.set_num_threads(threads)
        print(f"| plain command (1 torch thread) | {one:.1f} | {args.count / one:.2f} | {plain / one:.2f} |")
        sys.stdout.flush()
        for cpus in (1, 2):
            start = time.perf_counter()
            ray.init(num_cpus=cpus, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            startup = time.perf_counter() - start
            try:
                seconds = _timed(["dehaze", str(inputs), "-o", str(Path(tmp) / f"ray{cpus}"), *method, "--ray"])
            finally:
                ray.shutdown()
            print(f"| --ray, {cpus} local worker{'s' if cpus > 1 else ''} (Ray start {startup:.1f} s apart) | "
                  f"{seconds:.1f} | {args.count / seconds:.2f} | {plain / seconds:.2f} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
