"""BILD diagnostic: how far apart corrupted and clean patches sit in R_i, along a noisy-label run.

Builds ``bild_noisy_labels.py``'s folders (a third of the scenes with corrupted targets, a clean
validation folder) and runs BILD on them with AOD-Net. At every update of the reweighter, each
patch of the batch gets three numbers, z-scored within the batch:

* ``raw``: g_vᵀg_i, the inner product of the validation gradient with the patch's own gradient
  (exact per-sample gradients; the paper's R_i data part is −η times it);
* ``cos``: the same divided by |g_v| |g_i|;
* ``norm``: |g_i|;
* ``adam``: g_vᵀ P g_i with P = diag(1 / (sqrt(v) + 1e-8)), v Adam's second-moment estimate of the
  run's own optimiser (identity before its first step): the inner product in the metric in which
  the real step moves θ.

Printed: the mean z of corrupted and of clean patches in windows of ``--window`` updates. A
good patch helps the validation loss, so its ``raw`` should be higher.

    python benchmarks/bild_signal.py --source ../shared/data/train/sots_outdoor --scene-offset 30 \\
        --corruption swap --seed 1 --steps 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

import bild_noisy_labels as noisy
from hazefree.training import Trainer, load_config
from hazefree.training.bild import Bild


def adam_metric(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> torch.Tensor:
    """P of the ``adam`` measure, flattened in the order of ``params``."""
    parts = []
    for q in params:
        v = optimizer.state.get(q, {}).get("exp_avg_sq")
        parts.append(torch.ones(q.numel()) if v is None else 1.0 / (v.sqrt().flatten() + 1e-8))
    return torch.cat(parts)


def per_patch(bild: Bild, batch: dict, val: dict, metric: torch.Tensor) -> dict[str, list[float]]:
    """raw, cos, norm and adam (module docstring) for each patch of ``batch``."""
    theta = {k: p for k, p in bild.model.named_parameters() if p.requires_grad}
    loss = bild.objective.inner_loss(functional_call(bild.model, theta, (val["hazy"],)).clear, val["clear"]).mean()
    g_v = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.values()))])
    out: dict[str, list[float]] = {"raw": [], "cos": [], "norm": [], "adam": []}
    for i in range(batch["hazy"].shape[0]):
        pred = functional_call(bild.model, theta, (batch["hazy"][i:i + 1],)).clear
        g_i = torch.cat([g.flatten() for g in torch.autograd.grad(
            bild.objective.inner_loss(pred, batch["clear"][i:i + 1]).sum(), list(theta.values()))])
        out["raw"].append(float(g_v @ g_i))
        out["cos"].append(float(g_v @ g_i / (g_v.norm() * g_i.norm() + 1e-12)))
        out["norm"].append(float(g_i.norm()))
        out["adam"].append(float(g_v @ (metric * g_i)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="synthetic")
    p.add_argument("--scene-offset", type=int, default=0)
    p.add_argument("--corruption", choices=["noise", "swap"], default="swap")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--window", type=int, default=15)
    p.add_argument("--val-scenes", type=int, default=6, help="scenes of D_v (bild_noisy_labels.py: 6)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--out", default="runs/bild-signal")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    corrupted = set(noisy.build_folders(out / "data", args.source, 24, args.val_scenes, args.size, args.corruption, args.seed,
                                        args.scene_offset))
    cfg = load_config(model="aod-net", overrides=[
        f"steps={args.steps}", f"seed={args.seed}", "data.crop=48", "batch_size=8", "data.val_fraction=0",
        "data.scale_range=[1.0, 1.0]", f"val_every={args.steps}", f"checkpoint_every={args.steps}", "threads=1",
        "optim.name=adam", "optim.betas=[0.9, 0.999]", "optim.schedule=constant", "optim.lr=0.001",
        f"data.paired=[{json.dumps(str(out / 'data' / 'train'))}]", "bild.enabled=true",
        f"bild.val_data={json.dumps(str(out / 'data' / 'val'))}", f"out={json.dumps(str(out / 'bild'))}",
        *args.set])
    trainer = Trainer(cfg, progress=False)
    log: list[dict] = []
    probe = trainer.bild.outer_gradient

    def outer_gradient(batch, val, eta):  # the run's own step, after recording what it sees
        names = [Path(trainer.bank.files[i]).name for i in batch["index"].tolist()]
        params = [q for q in trainer.bild.model.parameters() if q.requires_grad]
        metric = adam_metric(trainer.objective.optimizers()["model"], params)
        log.append({"bad": [n in corrupted for n in names], **per_patch(trainer.bild, batch, val, metric)})
        return probe(batch, val, eta)

    trainer.bild.outer_gradient = outer_gradient
    trainer.fit()
    result: dict[str, list] = {}
    for key in ("raw", "cos", "norm", "adam"):
        rows = []
        for k in range(0, len(log), args.window):
            bad, good = [], []
            for e in log[k:k + args.window]:
                z = np.asarray(e[key])
                z = (z - z.mean()) / (z.std() + 1e-12)
                for is_bad, v in zip(e["bad"], z):
                    (bad if is_bad else good).append(v)
            rows.append([k, float(np.mean(bad)), float(np.mean(good))])
            print(f"{key:4s} updates {k:3d}-{k + args.window - 1:3d}: corrupted {rows[-1][1]:+.3f}  clean {rows[-1][2]:+.3f}")
        result[key] = rows
    (out / "signal.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
