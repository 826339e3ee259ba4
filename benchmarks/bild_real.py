"""BILD's claim on real data: plain vs BILD training, same data, steps, crops and seeds.

    # train (resumable: rerun after a kill; finished runs are skipped)
    python benchmarks/bild_real.py train --config configs/bild/aod-net-claim.yaml [--seeds 0 1 2]
    # PSNR/SSIM of every run's last weights on the evaluation pairs -> RUNS/results.json
    python benchmarks/bild_real.py evaluate --config configs/bild/aod-net-claim.yaml
    # wall-clock cost of a BILD step relative to a plain step, timed in one process
    python benchmarks/bild_real.py cost --config configs/bild/aod-net-claim.yaml
    # effective sample size of the weights on this (clean) data: one BILD run per seed at the
    # default bild: settings, weights logged every step -> <out>/ess-seed<k>/ess.json
    python benchmarks/bild_real.py ess --config configs/bild/aod-net-claim.yaml --seeds 0 [--set KEY=VALUE]
    # Fig.-5 (validation PSNR vs step) and Fig.-6 (one batch's patches with their weights)
    python benchmarks/bild_real.py figures --config configs/bild/aod-net-claim.yaml \\
        --config2 configs/bild/griddehazenet-claim.yaml --docs docs/bild

Runs go to ``<config out>/{plain,bild}-seed<k>``. The evaluation pairs are
../shared/data/{sots_indoor,sots_outdoor} at full resolution (never a training image): the decision
rule is stated in docs/bild.md before the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from hazefree import models
from hazefree.data import find_pairs, load_pair
from hazefree.metrics import psnr, ssim
from hazefree.training import Trainer, load_config

EVAL_SETS = ("../shared/data/sots_indoor", "../shared/data/sots_outdoor")
METHODS = ("plain", "bild")


def _cfg(config: str, method: str, seed: int, extra: list[str] = ()):
    base = load_config(config)
    over = [f"seed={seed}", f"out={base.out}/{method}-seed{seed}", *extra]
    if method == "bild":
        over.append("bild.enabled=true")
    return load_config(config, overrides=over)


def train(args) -> None:
    for seed in args.seeds:
        for method in METHODS:
            cfg = _cfg(args.config, method, seed)
            if (Path(cfg.out) / "checkpoints" / f"step_{cfg.steps:07d}").is_dir():
                print(f"{cfg.out}: done", file=sys.stderr)
                continue
            Trainer(cfg, resume=True, progress=False).fit()


@torch.no_grad()
def _scores(weights: Path, model: str) -> list[tuple[str, float, float]]:
    net = models.load_file(weights, model=model).eval()
    out = []
    for root in EVAL_SETS:
        for pair in find_pairs(root, warn=False).pairs:
            hazy, clear = load_pair(pair)
            pred = net(hazy).clear
            out.append((f"{Path(root).name}/{pair.hazy.name}", psnr(pred, clear).item(), ssim(pred, clear).item()))
    return out


def _scored_step(args) -> int:
    """The last step, or (docs/bild.md's fallback) the largest checkpoint step every run reached."""
    reached = None
    for method in METHODS:
        for seed in args.seeds:
            out = Path(_cfg(args.config, method, seed).out) / "checkpoints"
            steps = {int(p.name[5:]) for p in out.glob("step_*") if (p / "state.pt").is_file()}
            reached = steps if reached is None else reached & steps
    if not reached:
        raise ValueError(f"{args.config}: no checkpoint step common to all runs")
    return max(reached)


def evaluate(args) -> dict:
    base = load_config(args.config)
    step = _scored_step(args)
    result: dict = {"model": base.model, "steps": base.steps, "scored_step": step, "eval_sets": list(EVAL_SETS),
                    "runs": {}}
    for method in METHODS:
        per_seed = {}
        for seed in args.seeds:
            cfg = _cfg(args.config, method, seed)
            weights = Path(cfg.out) / "checkpoints" / f"step_{step:07d}" / "model.safetensors"
            scores = _scores(weights, base.model)
            per_seed[seed] = {"psnr": statistics.fmean(s[1] for s in scores),
                              "ssim": statistics.fmean(s[2] for s in scores), "images": len(scores)}
        ps = [v["psnr"] for v in per_seed.values()]
        ss = [v["ssim"] for v in per_seed.values()]
        result["runs"][method] = {
            "per_seed": per_seed,
            "psnr_mean": statistics.fmean(ps), "psnr_std": statistics.stdev(ps) if len(ps) > 1 else 0.0,
            "ssim_mean": statistics.fmean(ss), "ssim_std": statistics.stdev(ss) if len(ss) > 1 else 0.0,
        }
    diffs = [result["runs"]["bild"]["per_seed"][s]["psnr"] - result["runs"]["plain"]["per_seed"][s]["psnr"]
             for s in args.seeds]
    mean_diff = statistics.fmean(diffs)
    # the rule of docs/bild.md, fixed before the runs
    if all(d > 0 for d in diffs) and mean_diff >= 0.1:
        verdict = "helps"
    elif all(d < 0 for d in diffs) and mean_diff <= -0.1:
        verdict = "hurts"
    else:
        verdict = "inconclusive"
    result.update(psnr_diff_per_seed=diffs, psnr_diff_mean=mean_diff, verdict=verdict)
    path = Path(base.out) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


def cost(args) -> dict:
    """Seconds per plain and per BILD step on the same batches, interleaved in one process."""
    trainers = {m: Trainer(_cfg(args.config, m, 0, [f"out=/tmp/bild-cost-{m}"]), progress=False) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for k in range(args.repeats):
        for m, tr in trainers.items():
            batch = tr.sampler.batch(k)
            t0 = time.perf_counter()
            if tr.bild is not None:
                tr.bild.step(batch, k, 0, tr._lr())
            else:
                tr.objective.step(batch)
            if k >= 1:  # the first step warms up
                times[m].append(time.perf_counter() - t0)
    out = {"model": trainers["plain"].cfg.model, "crop": trainers["plain"].cfg.data.crop,
           "batch_size": trainers["plain"].cfg.batch_size,
           **{f"{m}_s_per_step": statistics.median(v) for m, v in times.items()}}
    out["bild_over_plain"] = out["bild_s_per_step"] / out["plain_s_per_step"]
    print(json.dumps(out))
    return out


def ess(args) -> list[dict]:
    """Mean effective sample size 1 / sum w^2 (as a share of the batch) of a BILD run's weights,
    over all its steps and over the second half, and the smallest; one run per seed."""
    import csv

    import numpy as np

    from hazefree.training import BildConfig

    defaults = [f"bild.{k}={json.dumps(v)}" for k, v in vars(BildConfig()).items() if k != "enabled"]
    out = []
    for seed in args.seeds:
        base = load_config(args.config)
        # the config's bild: section is replaced by the defaults; --set comes after
        cfg = _cfg(args.config, "bild", seed, [*defaults, f"out={base.out}/ess-seed{seed}", "bild.weights_every=1",
                                               f"val_every={base.steps}", f"checkpoint_every={base.steps}",
                                               *args.set])
        Trainer(cfg, progress=False).fit()
        per_step: dict[int, list[float]] = {}
        with open(Path(cfg.out) / "patch_weights.csv") as fh:
            for row in csv.DictReader(fh):
                per_step.setdefault(int(row["step"]), []).append(float(row["weight"]))
        share = {k: 1.0 / np.sum(np.square(w)) / len(w) for k, w in per_step.items()}
        late = [v for k, v in share.items() if k > cfg.steps // 2]
        res = {"config": args.config, "seed": seed, "steps": cfg.steps, "overrides": args.set,
               "bild": {k: v for k, v in vars(cfg.bild).items()},
               "ess_share_mean": float(np.mean(list(share.values()))), "ess_share_mean_second_half": float(np.mean(late)),
               "ess_share_min": float(np.min(list(share.values())))}
        (Path(cfg.out) / "ess.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


def _val_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    points = {e.step: e.value for e in acc.Scalars("val/psnr")}  # a resumed run rewrites later steps
    return sorted(points.items())


def figures(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    configs = [c for c in (args.config, args.config2) if c]
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 3.6), squeeze=False)
    for ax, config in zip(axes[0], configs):
        base = load_config(config)
        for method, colour in zip(METHODS, ("tab:blue", "tab:red")):
            curves = [_val_curve(Path(_cfg(config, method, s).out)) for s in args.seeds]
            n = min(len(c) for c in curves)  # the steps every seed reached
            steps = [s for s, _ in curves[0][:n]]
            values = np.array([[v for _, v in c[:n]] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, color=colour, label=f"{method} (mean of {len(curves)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
        ax.set(title=f"{base.model}, {base.data.crop} px crops", xlabel="step", ylabel="validation PSNR (dB)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "val_psnr.png", dpi=110)
    _patch_figure(args.config, args.seeds[0], docs / "patch_weights.png")


def _patch_figure(config: str, seed: int, path: Path) -> None:
    """One logged batch of a BILD run: its patches (hazy | clear) with the weight used for each."""
    import csv

    from PIL import Image, ImageDraw

    cfg = _cfg(config, "bild", seed)
    rows = list(csv.DictReader(open(Path(cfg.out) / "patch_weights.csv")))
    step = max(int(r["step"]) for r in rows)
    rows = [r for r in rows if int(r["step"]) == step]
    files = {}
    for root in cfg.data.paired:
        for p in find_pairs(root, warn=False).pairs:
            files[p.hazy.name] = p
    tile = 96
    sheet = Image.new("RGB", (tile * 2 * 4 + 30, (tile + 22) * ((len(rows) + 3) // 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(rows):
        hazy, clear = (Image.open(f).convert("RGB") for f in (files[r["image"]].hazy, files[r["image"]].clear))
        y, x, h, w = (int(r[c]) for c in ("y", "x", "h", "w"))
        box = (x, y, x + w, y + h)
        col, row = k % 4, k // 4
        left, top = col * (tile * 2 + 10), row * (tile + 22)
        sheet.paste(hazy.crop(box).resize((tile, tile)), (left, top))
        sheet.paste(clear.crop(box).resize((tile, tile)), (left + tile, top))
        draw.text((left + 2, top + tile + 4), f"w = {float(r['weight']):.4f}  ({r['image']})", fill="black")
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["train", "evaluate", "cost", "figures", "ess"])
    p.add_argument("--config", required=True)
    p.add_argument("--config2", help="figures: a second model's config for the Fig.-5 plot")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=6, help="cost: steps timed per method")
    p.add_argument("--docs", default="docs/bild")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ess: extra config override")
    args = p.parse_args(argv)
    torch.set_num_threads(load_config(args.config).threads or 1)
    {"train": train, "evaluate": evaluate, "cost": cost, "figures": figures, "ess": ess}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
