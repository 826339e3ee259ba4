"""Benchmark: training steps per second of ``hazefree train guided-pix2pix`` (default CPU preset).

Builds the configuration exactly as the command line does (``load_config(None, MODEL, ...)``: the
model's defaults, batch 8 of 256 x 256 crops, Pix2Pix objective) on a small paired folder, and times
the loop body of :class:`hazefree.training.Trainer.fit`: draw a batch, one optimisation step of the
generator and the discriminator, the schedulers. Validation and checkpoints are left out (they run
every 250 steps). Three runs in one invocation, the first being the reference:

* one process, ``--threads`` torch threads (2 = every core of the development machine);
* one process, 1 thread;
* ``torchrun --nproc_per_node=2``, 1 thread per process (DistributedDataParallel over gloo): each
  step trains on 2 batches, one per process, so its throughput is counted in samples per second.

Prints a Markdown table with steps/s, samples/s and the ratio of samples/s to the reference.

Usage:
    python benchmarks/train_speed.py [--data PATH] [--steps 10] [--warmup 2] [--threads 2]
        [--no-ddp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from machine import cpu_model, load_average  # benchmarks/machine.py

from hazefree import training

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sots_indoor"
MODEL = "guided-pix2pix"


def measure(data: Path, steps: int, warmup: int, threads: int) -> dict[str, float]:
    """Steps per second of this process (joining the process group under torchrun)."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [f"data.paired={json.dumps([str(data)])}", f"out={out}", f"threads={threads}",
                     f"steps={warmup + steps}"]
        cfg = training.load_config(None, MODEL, overrides)
        started = False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            started = True
        try:
            trainer = training.Trainer(cfg, progress=False)
            trainer.model.train()

            def step(k: int) -> None:
                trainer.objective.step(trainer.sampler.batch(k, trainer.rank))
                for s in trainer.schedulers.values():
                    s.step()

            for k in range(warmup):
                step(k)
            if started:
                dist.barrier()
            t0 = time.perf_counter()
            for k in range(warmup, warmup + steps):
                step(k)
            if started:
                dist.barrier()
            seconds = time.perf_counter() - t0
        finally:
            if started:
                dist.destroy_process_group()
    return {"steps_per_second": steps / seconds, "batch": cfg.batch_size, "crop": cfg.data.crop}


def _ddp(args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), "--worker", "--data", str(args.data), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"torchrun failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a paired dataset folder")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the single-process reference")
    parser.add_argument("--no-ddp", action="store_true", help="skip the torchrun run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one torchrun process
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"error: {args.data}: no such dataset folder (pass --data)")
    if args.worker:
        result = measure(args.data, args.steps, args.warmup, args.threads)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return 0

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; load average (1/5/15 min) at start: "
          f"{load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}")
    runs = {f"1 process, {args.threads} threads": (measure(args.data, args.steps, args.warmup, args.threads), 1),
            "1 process, 1 thread": (measure(args.data, args.steps, args.warmup, 1), 1)}
    if not args.no_ddp:
        runs["torchrun, 2 processes x 1 thread (DDP, gloo)"] = (_ddp(args), 2)
    first = next(iter(runs.values()))[0]
    print(f"Model: {MODEL} (default CPU preset), batch {first['batch']} of {first['crop']} x {first['crop']} "
          f"crops from {args.data}; {args.steps} timed steps after {args.warmup}.")
    print()
    print("| run | steps/s | samples/s | samples/s vs reference |")
    print("|---|---:|---:|---:|")
    ref = first["steps_per_second"] * first["batch"]
    for name, (r, world) in runs.items():
        samples = r["steps_per_second"] * r["batch"] * world
        print(f"| {name} | {r['steps_per_second']:.3f} | {samples:.2f} | {samples / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
