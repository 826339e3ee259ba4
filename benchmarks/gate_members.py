"""How should a cautious gate combine its members? A scene-disjoint cross-validation on the gate's
tables (issue #24; planning, `train/` images only, no selection split involved).

The tables of a fit (`tools/fit_haze_gate.py OUT`, OUT/tables.safetensors) are dealt into K outer
folds by scene. For each fold, a CautiousGate of M members is fitted on the other folds exactly as
`hazefree.training.gate.fit_gate` does, and its members are combined on the held-out fold by their
minimum (the shipped rule), median and mean; with ``--fog`` also as stage 15's gate does, from the
minimum to the median by a fog detector fitted on the same four folds (CautiousGate, ``fog``). Reported per source: the mean g, and the mean of
L1(g) / L1(0), the share of the network's own error left (1: no better than the network alone).
The real photos' L1 is against their teacher, which is 0 where the teacher is g = 0: for them the
second number is the mean L1 x 100 against the teacher instead.

    python benchmarks/gate_members.py runs/gate-stage12b --folds 5 --members 5 [--fog]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hazefree.training.gate import GateConfig, GateData, fit_gate, grid_values, interpolate, scene_folds

COMBINE = {"min": lambda g: g.amin(0), "median": lambda g: g.median(0).values, "mean": lambda g: g.mean(0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", type=Path, help="a fit_haze_gate.py output folder holding tables.safetensors")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--loss", choices=("l1", "relative"), default="relative")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fog", action="store_true", help="also the fog detector's combination (stage 15)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    t = load_file(str(args.tables / "tables.safetensors"))
    meta = json.loads((args.tables / "tables.json").read_text())
    data = GateData(t["inputs"], t["loss"], t["clipped"], t["weight"], meta["sources"], meta["scenes"])
    top = meta.get("gate_max") or 1.0
    fold = scene_folds(data.scenes, args.folds, 1000 + args.seed)  # another deal than the members' own
    combine_by = dict(COMBINE) | ({"fog": None} if args.fog else {})
    g_out = {c: torch.zeros(len(data.sources)) for c in combine_by}
    for k in range(args.folds):
        held = fold == k
        keep = ~held
        train = GateData(data.inputs[keep], data.loss[keep], data.clipped[keep], data.weight[keep],
                         [s for s, m in zip(data.sources, keep.tolist()) if m],
                         [s for s, m in zip(data.scenes, keep.tolist()) if m])
        cfg = GateConfig(grid=data.loss.shape[1], grid_max=top, loss=args.loss, members=args.members,
                         seed=args.seed, fog=args.fog)
        gate, _ = fit_gate(train, cfg)
        with torch.no_grad():
            each = torch.stack([m(data.inputs[held]).flatten() for m in gate.members])
            for c, combine in combine_by.items():
                g_out[c][held] = gate(data.inputs[held]).flatten() if combine is None else combine(each)
    real = torch.tensor([s == "real_unpaired" for s in data.sources])
    share = torch.where(real[:, None], 100 * data.loss, data.loss / data.loss[:, :1].clamp(min=1e-6))
    report: dict = {"folds": args.folds, "members": args.members, "loss": args.loss, "by_source": {}}
    print("| source (images) | best g | error at g = 0 | " + " | ".join(f"g {c} | error left {c}" for c in combine_by) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(combine_by))
    best = grid_values(data.loss.shape[1], top)[data.loss.argmin(dim=1)]
    for src in sorted(set(data.sources)):
        rows = torch.tensor([s == src for s in data.sources])
        entry = {"images": int(rows.sum()), "best_g": float(best[rows].mean()), "error_g0": float(share[rows, 0].mean())}
        cells = []
        for c in combine_by:
            g = g_out[c][rows]
            left = interpolate(share[rows], g, top)
            entry[c] = {"g": float(g.mean()), "error_left": float(left.mean())}
            cells += [f"{float(g.mean()):.2f}", f"{float(left.mean()):.3f}"]
        report["by_source"][src] = entry
        print(f"| {src} ({entry['images']}) | {entry['best_g']:.2f} | {entry['error_g0']:.3f} | " + " | ".join(cells) + " |")
    # the fit's own objective, out of fold: each image's relative L1 at its g, weighted as in the fit
    relative = data.loss / data.loss[:, :1].clamp(min=0.01)
    report["objective"] = {c: float((interpolate(relative, g_out[c], top) * data.weight).sum()) for c in combine_by}
    print("out-of-fold objective (relative L1, weighted as the fit): "
          + ", ".join(f"{c} {v:.4f}" for c, v in report["objective"].items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
