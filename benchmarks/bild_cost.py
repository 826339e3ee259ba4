"""Cost of a BILD step against a plain step, timed in the same run (issue #25, part 1).

For each model, one Trainer per method (plain, BILD at the default settings, and optionally BILD
``mode: exact``) on the same data, crops and seed. Each is driven through the trainer's step loop
(draw the batch, the BILD or plain step, the schedule; logging, validation and checkpoints are
left out, being the same for every method) in blocks of ``--block`` steps, the methods interleaved
block by block so that a change of the machine's load hits them alike. Reported per method: the
median over blocks of the seconds per step, wall clock (what a user waits) and process CPU time
(steadier when the machine is shared: a starved process waits without using CPU), and their
ratios to plain. The first block of each method warms up and is not counted.

    python benchmarks/bild_cost.py --out docs/bild/cost-issue25.json
    python benchmarks/bild_cost.py --models aod-net:64:8 --methods plain fast exact --rounds 3

The target (issue #25) is a default BILD step of at most 2.0 plain steps on AOD-Net (64 px,
batch 8) and GridDehazeNet (32 px, batch 4); this script reports, tests/ do not check timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hazefree.training import Trainer, load_config

METHODS = {"plain": ["bild.enabled=false"], "fast": ["bild.enabled=true"],
           "exact": ["bild.enabled=true", "bild.mode=exact"]}


def _trainer(model: str, crop: int, batch: int, method: str, args, tmp: str) -> Trainer:
    over = [f"data.paired=[{json.dumps(args.data)}]", "data.max_side=256", "data.scale_range=[1.0, 1.0]",
            f"data.crop={crop}", "data.val_fraction=0.1", "data.val_max_images=8", "objective=supervised",
            "loss=l1", "optim.name=adam", "optim.lr=1e-3", "optim.betas=[0.9, 0.999]",
            "optim.schedule=constant", f"batch_size={batch}", "steps=1000000", f"seed={args.seed}", "threads=1",
            f"out={json.dumps(str(Path(tmp) / f'{model}-{method}'))}", *METHODS[method], *args.set]
    return Trainer(load_config(model=model, overrides=over), progress=False)


def _block(tr: Trainer, n: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per step over the next n steps of the trainer's loop."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        batch = tr.sampler.batch(tr.step, 0)
        if tr.bild is not None:
            tr.bild.step(batch, tr.step, 0, tr._lr())
        else:
            tr.objective.step(batch)
        for s in tr.schedulers.values():
            s.step()
        tr.step += 1
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def measure(model: str, crop: int, batch: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: _trainer(model, crop, batch, m, args, tmp) for m in args.methods}
        every = {m: tr.bild.every for m, tr in trainers.items() if tr.bild is not None}
        block = args.block
        if any(block % e for e in every.values()):
            raise ValueError(f"--block {block} must be a multiple of bild.every {every}")
        times: dict[str, list[float]] = {m: [] for m in trainers}
        cpu: dict[str, list[float]] = {m: [] for m in trainers}
        for r in range(args.rounds + 1):
            for m, tr in trainers.items():
                t, c = _block(tr, block)
                if r > 0:
                    times[m].append(t)
                    cpu[m].append(c)
    out = {"model": model, "crop": crop, "batch_size": batch, "block_steps": block, "rounds": args.rounds,
           "bild_every": every,
           **{f"{m}_s_per_step": statistics.median(v) for m, v in times.items()},
           **{f"{m}_cpu_s_per_step": statistics.median(v) for m, v in cpu.items()},
           **{f"{m}_s_per_step_blocks": v for m, v in times.items()},
           **{f"{m}_cpu_s_per_step_blocks": v for m, v in cpu.items()}}
    for m in trainers:
        if m != "plain":
            out[f"{m}_over_plain"] = out[f"{m}_s_per_step"] / out["plain_s_per_step"]
            out[f"{m}_over_plain_cpu"] = out[f"{m}_cpu_s_per_step"] / out["plain_cpu_s_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["aod-net:64:8", "griddehazenet:32:4"],
                   help="model:crop:batch")
    p.add_argument("--methods", nargs="+", default=["plain", "fast"], choices=list(METHODS))
    p.add_argument("--data", default="../shared/data/train/sots_indoor")
    p.add_argument("--block", type=int, default=8, help="steps per timed block (a multiple of bild.every)")
    p.add_argument("--rounds", type=int, default=5, help="timed blocks per method (after one warm-up block)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--out", help="write the results here (JSON)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch_threads": 1, "load_average_start": os.getloadavg()},
               "command": " ".join(["python", "benchmarks/bild_cost.py", *(argv if argv is not None else sys.argv[1:])]),
               "runs": []}
    for spec in args.models:
        model, crop, batch = spec.split(":")
        res = measure(model, int(crop), int(batch), args)
        print(json.dumps({k: v for k, v in res.items() if not k.endswith("_blocks")}), flush=True)
        results["runs"].append(res)
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
