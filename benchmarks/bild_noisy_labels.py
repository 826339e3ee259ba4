"""BILD diagnostic: does the patch reweighting find training pairs whose target is wrong?

A training folder is built in which a third of the scenes have corrupted targets (``noise``: a
uniform-noise image; ``swap``: the clear image of another scene), plus a clean validation folder
(``--val-data`` of the BILD run). Three runs of the same model, steps, crops and seed:
plain training on everything, BILD on everything, and plain training on the clean scenes only.
Reported: the mean patch weight of corrupted / clean patches over the second half of the BILD run
(from its patch_weights.csv), and the validation PSNR of the three models on the clean folder.

Scenes come from ``--source``: ``synthetic`` (smooth random colour fields hazed with a depth ramp,
seconds to run) or a paired folder (e.g. ../shared/data/train/sots_indoor, one hazy image per scene),
reduced to ``--size`` px.

    python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_indoor --steps 600 \\
        --out runs/bild-noisy
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hazefree.data import PairBank, find_pairs
from hazefree.training import Trainer, load_config, validate

Array = np.ndarray


def _synthetic_scenes(n: int, size: int, seed: int) -> list[tuple[Array, Array]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.random((6, 6, 3))
        clear = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255.0
        t = np.linspace(rng.uniform(0.2, 0.5), rng.uniform(0.7, 0.95), size)[:, None, None]
        a = rng.uniform(0.75, 0.95)
        out.append((clear * t + a * (1 - t), clear))
    return out


def _folder_scenes(root: str, n: int, size: int, offset: int = 0) -> list[tuple[Array, Array]]:
    """The first ``n`` scenes after the first ``offset`` (sorted file order), one hazy image each."""
    seen, out = set(), []
    for pair in find_pairs(root, warn=False).pairs:
        scene = pair.hazy.stem.split("_", 1)[0]
        if scene in seen:
            continue
        seen.add(scene)
        if len(seen) <= offset:
            continue
        h, c = (np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)) / 255.0
                for p in (pair.hazy, pair.clear))
        out.append((h, c))
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"{root}: {len(out)} scenes, {n} needed")
    return out


def _save(root: Path, scenes: list[tuple[Array, Array]], first: int) -> None:
    (root / "hazy").mkdir(parents=True, exist_ok=True)
    (root / "clear").mkdir(parents=True, exist_ok=True)
    for k, (h, c) in enumerate(scenes):
        Image.fromarray((np.clip(h, 0, 1) * 255).round().astype(np.uint8)).save(root / "hazy" / f"{first + k}_1.png")
        Image.fromarray((np.clip(c, 0, 1) * 255).round().astype(np.uint8)).save(root / "clear" / f"{first + k}.png")


def build_folders(out: Path, source: str, n_train: int, n_val: int, size: int, corruption: str, seed: int,
                  offset: int = 0):
    """Folders ``train`` (a third corrupted), ``train_clean`` (the clean scenes only), ``val``;
    returns the names of the corrupted hazy files. ``offset`` skips a folder's first scenes (development
    runs on scenes that the judged benchmarks, offset 0, do not use)."""
    scenes = (_synthetic_scenes(n_train + n_val, size, seed) if source == "synthetic"
              else _folder_scenes(source, n_train + n_val, size, offset))
    train, val = scenes[:n_train], scenes[n_train:]
    rng = np.random.default_rng(seed + 1)
    bad = set(rng.permutation(n_train)[: n_train // 3].tolist())
    corrupted = []
    for k in sorted(bad):
        hazy, _ = train[k]
        if corruption == "noise":
            target = rng.random(hazy.shape)
        else:  # the clear image of another, clean scene
            other = sorted(set(range(n_train)) - bad)[k % (n_train - len(bad))]
            target = train[other][1]
        train[k] = (hazy, target)
        corrupted.append(f"{100 + k}_1.png")
    _save(out / "train", train, 100)
    _save(out / "train_clean", [s for k, s in enumerate(train) if k not in bad], 100)
    _save(out / "val", val, 100 + n_train)
    return corrupted


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    corrupted = build_folders(out / "data", args.source, args.train_scenes, args.val_scenes, args.size,
                              args.corruption, args.seed, args.scene_offset)
    common = [f"steps={args.steps}", f"seed={args.seed}", f"data.crop={args.crop}", f"batch_size={args.batch}",
              "data.val_fraction=0", "data.scale_range=[1.0, 1.0]", f"val_every={args.steps}",
              f"checkpoint_every={args.steps}", "log_every=1", f"threads={args.threads}",
              # Adam as in configs/aod-net.yaml: the paper's SGD barely moves AOD-Net in a few hundred steps
              "optim.name=adam", "optim.betas=[0.9, 0.999]", "optim.schedule=constant",
              f"optim.lr={args.lr}"] + list(args.set)
    runs = {
        "plain": [f"data.paired=[{json.dumps(str(out / 'data' / 'train'))}]"],
        "bild": [f"data.paired=[{json.dumps(str(out / 'data' / 'train'))}]", "bild.enabled=true",
                 f"bild.val_data={json.dumps(str(out / 'data' / 'val'))}", f"bild.alpha={args.alpha}",
                 f"bild.input={args.input}"],
        "plain_clean_only": [f"data.paired=[{json.dumps(str(out / 'data' / 'train_clean'))}]"],
    }
    val_bank = PairBank(find_pairs(out / "data" / "val").pairs)
    result: dict = {"model": args.model, "steps": args.steps, "seed": args.seed, "corruption": args.corruption,
                    "source": args.source, "alpha": args.alpha, "input": args.input}
    for name in args.runs:
        extra = runs[name]
        cfg = load_config(model=args.model, overrides=common + extra + [f"out={json.dumps(str(out / name))}"])
        tr = Trainer(cfg, progress=False)
        tr.fit()
        result[f"val_psnr_{name}"] = validate(tr.model, val_bank, list(range(len(val_bank))))["val_psnr"]
    if "bild" not in args.runs:
        return result
    bad, good = [], []
    per_step: dict[int, list[float]] = {}
    with open(out / "bild" / "patch_weights.csv") as fh:
        for row in csv.DictReader(fh):
            if int(row["step"]) > args.steps // 2:
                (bad if row["image"] in corrupted else good).append(float(row["weight"]))
                per_step.setdefault(int(row["step"]), []).append(float(row["weight"]))
    result["mean_weight_corrupted"] = float(np.mean(bad))
    result["mean_weight_clean"] = float(np.mean(good))
    result["weight_ratio_corrupted_to_clean"] = result["mean_weight_corrupted"] / result["mean_weight_clean"]
    # effective sample size 1 / sum w^2 (weights of a step sum to 1) as a share of the batch
    ess = [1.0 / np.sum(np.square(w)) / len(w) for w in per_step.values()]
    result["ess_share_mean"], result["ess_share_min"] = float(np.mean(ess)), float(np.min(ess))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="synthetic", help="'synthetic' or a paired folder")
    p.add_argument("--corruption", choices=["noise", "swap"], default="noise")
    p.add_argument("--model", default="aod-net")
    p.add_argument("--train-scenes", type=int, default=24)
    p.add_argument("--val-scenes", type=int, default=6)
    p.add_argument("--scene-offset", type=int, default=0,
                   help="skip the folder's first scenes (development runs off the judged scenes)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=None, help="bild.alpha (default: the config default)")
    p.add_argument("--input", default="pair", choices=["pair", "hazy"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", nargs="+", default=["plain", "bild", "plain_clean_only"],
                   choices=["plain", "bild", "plain_clean_only"], help="which of the three trainings to run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--out", default="runs/bild-noisy")
    args = p.parse_args(argv)
    if args.alpha is None:
        from hazefree.training import BildConfig

        args.alpha = BildConfig.alpha
    torch.set_num_threads(args.threads)
    result = run(args)
    print(json.dumps(result))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
