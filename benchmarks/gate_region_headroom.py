"""How much could a haze gate gain by choosing g region by region instead of image by image? (#24)

An oracle bound on `train/` images only, not a model. The default's network is frozen, and its
gate is bypassed (`hazefree.training.gate.grid_outputs`, as for the gate's tables). For each
image, J_g is computed at g = 0, 0.1, ..., 1. Then:

* paired images: the PSNR with the network alone (g = 0), with the best g for the whole image, and
  with the best g for each cell of an R x R grid, each cell scored on its own (no blending seams,
  so an upper bound), by source;
* real photos (the fitting split of `train/real_unpaired`): the teacher's g, the strongest g whose
  clipped share stays within 0.2 % of g = 0's, for the whole photo and per cell. Reported: the mean
  spread (standard deviation) of the cells' g within a photo.

    python benchmarks/gate_region_headroom.py configs/guided-pix2pix-stage11.yaml --every 3 --cells 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from hazefree.data.bank import source_labels
from hazefree.evaluation.no_reference import clipped_share
from hazefree.io import read_image
from hazefree.models import load
from hazefree.training import load_config
from hazefree.training.gate import GateConfig, grid_outputs, grid_values, image_cells, real_split, teacher_index
from hazefree.training.validation import load_training_data


def psnr_of(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def teacher_g(outs: list[torch.Tensor], grid: torch.Tensor, allowance: float) -> float:
    return float(grid[teacher_index([float(clipped_share(o)[0]) for o in outs], allowance)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--every", type=int, default=3, help="every k-th training image")
    p.add_argument("--cells", type=int, default=3, help="the grid is cells x cells")
    p.add_argument("--real", default="../shared/data/train/real_unpaired")
    p.add_argument("--out", type=Path, default=Path("runs/gate_region_headroom.json"))
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    gate_cfg = GateConfig()
    grid = grid_values(gate_cfg.grid)
    model = load("guided-pix2pix").eval()
    bank, train_idx, _ = load_training_data(cfg)
    paired: dict[str, list[list[float]]] = {}
    by_source = bank.by_source(train_idx)
    labels = source_labels(by_source)
    for src, members in by_source.items():
        for i in members[:: args.every]:
            hazy, clear = bank.full(i)
            outs, _ = grid_outputs(model, hazy, grid)
            whole = [float((o - clear).pow(2).mean()) for o in outs]
            per_cell = [[float((a - b).pow(2).mean()) for a, b in zip(image_cells(o, args.cells), image_cells(clear, args.cells))]
                        for o in outs]
            areas = [c.numel() for c in image_cells(clear, args.cells)]
            region = sum(min(per_cell[g][k] for g in range(len(outs))) * areas[k] for k in range(len(areas))) / sum(areas)
            paired.setdefault(labels[src], []).append([psnr_of(whole[0]), psnr_of(min(whole)), psnr_of(region)])
    spreads, whole_g = [], []
    fitting, _ = real_split(args.real, gate_cfg)
    for path in fitting[:: args.every]:
        hazy = read_image(path).rgb
        outs, _ = grid_outputs(model, hazy, grid)
        whole_g.append(teacher_g(outs, grid, gate_cfg.real_clip_allowance))
        gs = torch.tensor([teacher_g([image_cells(o, args.cells)[k] for o in outs], grid, gate_cfg.real_clip_allowance)
                           for k in range(args.cells**2)])
        spreads.append(float(gs.std(unbiased=False)))
    report = {"cells": args.cells, "every": args.every, "paired": {}, "real": {
        "photos": len(spreads), "whole_g_mean": sum(whole_g) / len(whole_g),
        "cell_g_spread_mean": sum(spreads) / len(spreads)}}
    print(f"| source (images) | g = 0 | best g per image | best g per cell ({args.cells} x {args.cells}) |")
    print("|---|---:|---:|---:|")
    for src, rows in sorted(paired.items()):
        mean = [sum(r[k] for r in rows) / len(rows) for k in range(3)]
        report["paired"][src] = {"images": len(rows), "psnr_g0": mean[0], "psnr_image_oracle": mean[1],
                                 "psnr_cell_oracle": mean[2]}
        print(f"| {src} ({len(rows)}) | {mean[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} |")
    print(f"real photos ({len(spreads)}): teacher g per photo {report['real']['whole_g_mean']:.2f} on average; "
          f"spread of the cells' g within a photo {report['real']['cell_g_spread_mean']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
