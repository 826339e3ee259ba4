"""Fit Guided-Pix2Pix's haze gate on a frozen network (issue #24, stage 11; hazefree.training.gate).

Tabulates every training image of CONFIG's split (its paired sources and depth renders, the
validation scenes left out) and the fitting share of ``--real`` (train/real_unpaired without the
held-out photos), then fits one gate per ``--seeds`` and writes OUT/seed<S>.safetensors: the
network of CONFIG's ``init`` with the gate, loadable by ``hazefree.models.load_file``. The tables
go to OUT/tables.safetensors and are reused when present.

    python tools/fit_haze_gate.py configs/guided-pix2pix-stage11.yaml runs/gate-stage11 --seeds 0 1

With ``--balance-collections`` (stage 17) the real photos' weight is shared equally by their
collections (the file name's first word) instead of by the photos.

With ``--fog`` (stage 15) the cautious gate of ``--members`` also gets a fog detector, which moves
its g from the members' minimum to their median on real fog photos (hazefree.training.gate.fit_fog).

With ``--cells R`` (stage 13) the network of ``--init`` keeps its fitted haze gate, frozen, and a
region gate of R x R cells is fitted instead (hazefree.training.gate, module docstring).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file as load_tensors
from safetensors.torch import save_file as save_tensors

from _common import run_tool
from hazefree.models import load_file
from hazefree.models.weights import load_weights, save_weights
from hazefree.training.config import load_config
from hazefree.training.gate import (
    GateConfig,
    GateData,
    balance_collections,
    fit_gate,
    gate_data,
    grid_values,
    real_split,
)
from hazefree.training.validation import load_training_data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="training config: init weights, paired sources, split, source weights")
    ap.add_argument("out", type=Path)
    ap.add_argument("--real", default="../shared/data/train/real_unpaired")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--init", help="the frozen network's weights instead of CONFIG's init")
    ap.add_argument("--loss", choices=("l1", "relative"), default="l1", help="the error the gate minimises")
    ap.add_argument("--members", type=int, default=1, help="> 1: a CautiousGate of scene-disjoint folds")
    ap.add_argument("--fog", action="store_true",
                    help="with --members: a fog detector between the members' minimum and median (stage 15)")
    ap.add_argument("--cells", type=int, help="fit a region gate of CELLS x CELLS on the gated network of --init")
    ap.add_argument("--gate-max", type=float, default=1.0,
                    help="the gate's largest g, on a grid of step 0.1 (> 1: deeper than the prior; stage 14)")
    ap.add_argument("--balance-collections", action="store_true",
                    help="share the real photos' weight equally by their collections (stage 17)")
    ap.add_argument("--prior-airlight-window", type=float,
                    help="cap the prior's airlight by a grey opening of this share of the side (GuidedPix2Pix)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.init:
        cfg.init = args.init
    torch.set_num_threads(cfg.threads)
    gate_cfg = GateConfig(loss=args.loss, members=args.members, cells=args.cells, fog=args.fog,
                          grid=round(10 * args.gate_max) + 1, grid_max=args.gate_max)
    fitting, _ = real_split(args.real, gate_cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = args.out / "tables.safetensors"
    extra = {} if args.prior_airlight_window is None else {"prior_airlight_window": args.prior_airlight_window}
    if tables.is_file():
        t = load_tensors(tables)
        recorded = json.loads((args.out / "tables.json").read_text())
        made = (recorded.get("cells"), recorded.get("gate_max", 1.0))
        if made != (args.cells, args.gate_max):
            raise SystemExit(f"error: {tables}: made with (cells, gate_max) = {made}, not {(args.cells, args.gate_max)}")
        data = GateData(t["inputs"], t["loss"], t["clipped"], t["weight"], recorded["sources"], recorded.get("scenes"))
    else:
        bank, train_idx, _ = load_training_data(cfg)
        weights = cfg.data.source_weights
        net = load_file(cfg.init, model=cfg.model, **extra).eval()
        data = gate_data(net, bank, train_idx, weights, fitting, gate_cfg)
        tensors = {"inputs": data.inputs, "loss": data.loss, "clipped": data.clipped, "weight": data.weight}
        save_tensors(tensors, str(tables))
        (args.out / "tables.json").write_text(json.dumps({"sources": data.sources, "scenes": data.scenes, "cells": args.cells, "gate_max": args.gate_max}))
    if args.balance_collections:
        data = balance_collections(data)
    summary = {"grid": grid_values(gate_cfg.grid, gate_cfg.grid_max).tolist(), "by_source": {},
               "balance_collections": args.balance_collections}
    for src in sorted(set(data.sources)):
        rows = [i for i, s in enumerate(data.sources) if s == src]
        best = grid_values(gate_cfg.grid, gate_cfg.grid_max)[data.loss[rows].argmin(dim=1)]
        summary["by_source"][src] = {"images": len(rows), "best_g_mean": float(best.mean())}
    _, meta = load_weights(cfg.init)
    options = {**json.loads(meta.get("options", "{}")), "haze_gate": True, **extra}
    if args.cells is not None:
        options |= {"region_cells": args.cells, "region_members": args.members}
    elif args.members > 1:
        options["gate_members"] = args.members
    if args.fog:
        options["gate_fog"] = True
    if args.gate_max != 1.0:
        options["gate_max"] = args.gate_max
    for seed in args.seeds:
        gate_cfg.seed = seed
        gate, history = fit_gate(data, gate_cfg)
        if args.cells is None:
            net = load_file(cfg.init, model=cfg.model, **{k: v for k, v in options.items() if k != "haze_gate"}).eval()
            net.haze_gate = gate
        else:
            net = load_file(cfg.init, model=cfg.model, **extra).eval()
            net.region_gate = gate
            gate = gate.gate  # its rows are the tables' rows
        save_weights(net, args.out / f"seed{seed}.safetensors", cfg.model, options)
        g = gate(data.inputs).flatten().detach()
        summary[f"seed{seed}"] = {
            "loss_every_100": history,
            "g_by_source": {s: float(g[[i for i, x in enumerate(data.sources) if x == s]].mean()) for s in summary["by_source"]},
        }
        print(f"seed {seed}: loss {history[0]:.5f} -> {history[-1]:.5f}; mean g by source "
              + ", ".join(f"{s} {v:.2f}" for s, v in summary[f"seed{seed}"]["g_by_source"].items()), flush=True)
    print("best g of the grid, mean by source: " + ", ".join(f"{s} {v['best_g_mean']:.2f}" for s, v in summary["by_source"].items()))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
