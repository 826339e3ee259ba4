"""Benchmark: images per second of `hazefree dehaze` over a folder, sequential against overlapped.

Runs the CLI's per-file pipeline (:func:`hazefree.pipeline.run_jobs`, what `hazefree dehaze
--workers N` calls) in this process over every image of a folder, once with one image at a time
(the reference) and once per N with decoding, the model and encoding overlapped. The runs
alternate over several rounds and the median is reported, so a change of load on a shared
machine falls on all settings alike. Every output of every run is compared byte for byte with the
sequential run's.

Torch runs with one intra-op thread by default here: on the shared 2-core machine, two OpenMP
threads that wait on each other made the model 4-5x slower than one thread (measured while this
benchmark was written, load average about 10), which would swamp what the overlap changes.

Usage:
    python benchmarks/folder_throughput.py [--data ../shared/data/real_hazy_classic]
        [--methods guided-pix2pix,dcp] [--workers 2,4] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import (  # benchmarks/machine.py (scripts run from this folder)
    cpu_model,
    load_average,
)

from hazefree.api import Dehazer
from hazefree.io import find_images, output_path_for
from hazefree.pipeline import FileOptions, Job, run_jobs

ROOT = Path(__file__).resolve().parents[1]
DATA = next(
    (q / "shared" / "data" / "real_hazy_classic" for q in ROOT.parents if (q / "shared" / "data").is_dir()),
    ROOT.parent / "shared" / "data" / "real_hazy_classic",
)


def run(dehazer: Dehazer, sources: list[tuple[Path, Path]], out: Path, workers: int) -> float:
    """Seconds to dehaze every source into ``out`` (emptied first)."""
    shutil.rmtree(out, ignore_errors=True)
    jobs = [Job(src, output_path_for(src, root, out)) for src, root in sources]
    t0 = time.perf_counter()
    for job, outcome in run_jobs(dehazer, jobs, FileOptions(), workers=workers):
        if isinstance(outcome, Exception):
            raise RuntimeError(f"{job.source}: {outcome}")
    return time.perf_counter() - t0


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--methods", default="guided-pix2pix,dcp")
    p.add_argument("--workers", default="2,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see the note above)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sources = find_images([args.data])
    settings = [1] + [int(w) for w in args.workers.split(",")]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {args.threads}; "
          f"load average {load_average()}; Python {platform.python_version()}, torch {torch.__version__}")
    print(f"{len(sources)} images from {args.data}\n")
    print("| method | workers | images/s | ratio to sequential | outputs identical |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            dehazer = Dehazer(method)
            run(dehazer, sources[:1], Path(tmp) / "warmup", 1)
            times: dict[int, list[float]] = {w: [] for w in settings}
            identical = {w: True for w in settings}
            for _ in range(args.rounds):
                for w in settings:
                    times[w].append(run(dehazer, sources, Path(tmp) / f"w{w}", w))
                    identical[w] &= same_files(Path(tmp) / "w1", Path(tmp) / f"w{w}")
            ref = len(sources) / statistics.median(times[1])
            for w in settings:
                rate = len(sources) / statistics.median(times[w])
                label = "1 (sequential)" if w == 1 else str(w)
                print(f"| {method} | {label} | {rate:.2f} | {rate / ref:.2f} | {'yes' if identical[w] else 'NO'} |",
                      flush=True)
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
