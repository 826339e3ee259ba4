"""How far can a haze gate lower FADE on real photos? The ceiling of the gate route (issue #24;
`train/` photos only: the fitting split of `train/real_unpaired`, never the held-out photos).

The gate only chooses g in [0, 1] between the network's strength and the dark-channel prior's
(`blend_prior`). On each fitting photo, this scores FADE (and the clipped share) of J at g = 0 (the
network alone), at each weight file's own gate g, at the teacher's g (the strongest g of the grid
0, 0.1, ..., 1 whose clipped share stays within 0.2 % of g = 0's: the gates' target) and at g = 1.
The teacher is the most a gate fitted to these targets can reach, so its mean FADE against the
shipped gate's bounds the gain any gate of this kind can bring.

    python benchmarks/gate_fade_ceiling.py hazefree/weights/guided-pix2pix.safetensors \
        runs/gate-stage15/seed0.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from hazefree.evaluation.no_reference import clipped_share
from hazefree.io import read_image
from hazefree.metrics.fade import fade
from hazefree.models import load_file
from hazefree.training.gate import GateConfig, grid_outputs, grid_values, real_split, teacher_index


@torch.no_grad()
def gate_g(model, hazy: torch.Tensor) -> float:
    """``model``'s own haze gate's g on ``hazy``."""
    low = model.working_image(hazy)
    return float(model.haze_gate(model.prior(hazy, low, model.network_coarse(hazy, low)).inputs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="gated weight files; the first one's network is scored")
    p.add_argument("--real", default="../shared/data/train/real_unpaired")
    p.add_argument("--every", type=int, default=1, help="score every n-th fitting photo")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = GateConfig()
    fitting, _ = real_split(args.real, cfg)
    models = [load_file(w).eval() for w in args.weights]
    grid = grid_values(cfg.grid, cfg.grid_max).tolist()
    columns = ["g = 0", *(w.name if w.parent.name == "weights" else f"{w.parent.name}/{w.name}" for w in args.weights),
               "teacher", "g = 1"]
    scores = {c: {"g": [], "fade": [], "clipped": []} for c in columns}
    for path in tqdm(fitting[:: args.every], desc="photos"):
        hazy = read_image(path).rgb
        # one pass of the first model's network: J at the grid's g and at each file's gate g
        gated = [gate_g(m, hazy) for m in models]
        outputs, _ = grid_outputs(models[0], hazy, torch.tensor(grid + gated))
        clipped = [float(clipped_share(out)[0]) for out in outputs[: len(grid)]]
        teacher = teacher_index(clipped, cfg.real_clip_allowance)
        picks = [(0.0, outputs[0]), *zip(gated, outputs[len(grid):]), (grid[teacher], outputs[teacher]),
                 (1.0, outputs[len(grid) - 1])]
        for c, (g, out) in zip(columns, picks):
            scores[c]["g"].append(g)
            scores[c]["fade"].append(float(fade(out)[0]))
            scores[c]["clipped"].append(float(clipped_share(out)[0]))
    base = torch.tensor(scores[columns[1]]["fade"]).mean()
    print(f"{len(scores['g = 0']['g'])} fitting photos of train/real_unpaired; FADE relative to {columns[1]}")
    print("| g | mean g | mean FADE | relative | clipped % |")
    print("|---|---:|---:|---:|---:|")
    report = {}
    for c in columns:
        g, f, k = (torch.tensor(scores[c][x]).mean() for x in ("g", "fade", "clipped"))
        report[c] = {"g": float(g), "fade": float(f), "relative": float(f / base), "clipped": float(k)}
        print(f"| {c} | {g:.2f} | {f:.4f} | {f / base:.3f} | {100 * k:.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"photos": len(scores["g = 0"]["g"]), "mean": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
