"""Benchmark: DDU's learned upsampler vs bilinear vs fast-guided-filter upsampling on real haze.

AOD-Net runs at 1/S (S = 4) of the image inside :class:`hazefree.models.DownUp`, with each of the
three upsamplers of ``ddu_upsampler``: ``bilateral`` (DDU: the learned bilateral grid),
``bilinear``, and ``guided`` (the fast guided filter, each channel of the low-resolution result
with the full-resolution colour hazy image as guide, radius 2 low-resolution pixels, eps 1e-4).

Protocol (fixed before the first run):

* data: the real-haze training folders ``train/ohaze``, ``train/nh_haze``, ``train/dense_haze``
  of ../shared/data (never an evaluation folder). Validation scenes, held out of training: the
  last scene of each folder in sorted order (ohaze 40, dense_haze 55), for NH-HAZE the last one at
  full resolution (53; 54 is a 4x-downscaled copy), and a second O-HAZE scene (30), since that
  folder has seven. Scene-disjoint: NH-HAZE 52 and Dense-HAZE 53, one location, both train.
  The split is made with symbolic links in a temporary folder.
* training: ``hazefree train aod-net --ddu 4`` (the real command line), once per upsampler, all
  from the shipped AOD-Net weights (``init``), the same seeds, steps, batches and crops: Adam
  lr 1e-3, betas (0.9, 0.999), no gradient clipping (AOD-Net's SGD recipe barely moves a new
  layer in a few hundred steps), batch 4, 256 x 256 crops, per-sample MSE, threads 1.
* evaluation: whole validation images at their native resolution (O-HAZE 256 x 256, NH-HAZE
  1600 x 1200, Dense-HAZE 400 x 300), eval mode (clipped), PSNR and SSIM (hazefree.metrics,
  RGB); the mean over the four images and per folder. Extra rows: the hazy input, the shipped
  AOD-Net at full resolution, DDU before training (= bilinear upsampling), and the DDU run's own
  low-resolution AOD-Net with the two fixed upsamplers swapped in (the upsampler alone).

Usage (about 10 CPU minutes with the defaults, 300 steps x 3 upsamplers x 3 seeds):
    nice -n 5 python benchmarks/ddu_upsampling.py [--steps 300] [--scale 4] [--seeds 0,1,2]
        [--data-root ../shared/data] [--work /tmp/ddu_upsampling] [--out docs/ddu_upsampling.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model, load_average  # benchmarks/machine.py (scripts run from this folder)

from hazefree import models
from hazefree.data import Pair, find_pairs, load_pair
from hazefree.metrics import psnr, ssim
from hazefree.models.weights import shipped_path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("ohaze", "nh_haze", "dense_haze")
VAL_SCENES = {"ohaze": ("30_outdoor", "40_outdoor"), "nh_haze": ("53",), "dense_haze": ("55",)}
UPSAMPLERS = ("bilateral", "bilinear", "guided")


def make_split(train_root: Path, work: Path) -> tuple[list[Path], list[tuple[str, Path, Path]]]:
    """Symlinked train folders and the validation pairs (folder, hazy, clear)."""
    train_dirs, val = [], []
    for folder in FOLDERS:
        pairs = find_pairs(train_root / folder).pairs
        stems = {p.hazy.stem for p in pairs}
        missing = set(VAL_SCENES[folder]) - stems
        if missing:
            raise SystemExit(f"{train_root / folder}: validation scene(s) {sorted(missing)} not found")
        dst = work / "train" / folder
        for sub in ("hazy", "clear"):
            (dst / sub).mkdir(parents=True, exist_ok=True)
        for p in pairs:
            if p.hazy.stem in VAL_SCENES[folder]:
                val.append((folder, p.hazy, p.clear))
                continue
            for sub, src in (("hazy", p.hazy), ("clear", p.clear)):
                link = dst / sub / src.name
                if not link.exists():
                    link.symlink_to(src.resolve())
        train_dirs.append(dst)
    return train_dirs, val


def train(upsampler: str, train_dirs: list[Path], run: Path, args) -> tuple[Path, float]:
    """One ``hazefree train`` run; returns its final weights and wall-clock seconds."""
    cmd = [
        sys.executable, "-m", "hazefree", "train", "aod-net", "--ddu", str(args.scale),
        "--data", *map(str, train_dirs), "--steps", str(args.steps), "--out", str(run), "--no-progress",
    ]
    for kv in (f"model_options.ddu_upsampler={upsampler}", f"init={shipped_path('aod-net')}",
               "optim.name=adam", "optim.lr=1e-3", "optim.betas=[0.9,0.999]", "optim.grad_clip=null",
               "batch_size=4", "data.crop=256", "data.val_fraction=0", f"seed={args.seed}", "threads=1",
               f"val_every={args.steps}", f"checkpoint_every={args.steps}", "log_every=50"):
        cmd += ["--set", kv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training with {upsampler} failed:\n{done.stderr[-2000:]}")
    return run / "checkpoints" / f"step_{args.steps:07d}" / "model.safetensors", time.perf_counter() - t0


@torch.no_grad()
def score(net, val) -> dict[str, tuple[float, float]]:
    """{hazy file: (PSNR, SSIM)} of ``net`` (None: the hazy input itself)."""
    out = {}
    for folder, hazy_path, clear_path in val:
        hazy, clear = load_pair(Pair(hazy_path, clear_path))
        pred = hazy if net is None else net.eval()(hazy).clear
        out[f"{folder}/{hazy_path.name}"] = (psnr(pred, clear).item(), ssim(pred, clear).item())
    return out


def with_upsampler(ddu: models.DownUp, kind: str) -> models.DownUp:
    """The same wrapped model behind another (parameter-free) upsampler."""
    return models.DownUp(ddu.model, ddu.scale, kind)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--seeds", default="0,1,2", help="one run per upsampler and seed")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, help="run folders (default: a temporary folder)")
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(v) for v in args.seeds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="ddu_upsampling_"))
    train_dirs, val = make_split(args.data_root / "train", work)

    # label -> one {image: (PSNR, SSIM)} per seed (a single one for rows without training), note
    rows: dict[str, tuple[list[dict], str]] = {
        "hazy input": ([score(None, val)], ""),
        "AOD-Net (shipped weights) at full resolution, no DDU": ([score(models.load("aod-net"), val)], ""),
        f"DDU S={args.scale} before training (= bilinear)": ([score(models.load("aod-net", ddu=args.scale), val)], ""),
    }
    swapped: dict[str, tuple[list[dict], str]] = {}
    for kind in UPSAMPLERS:
        results, seconds = [], []
        for seed in seeds:
            args.seed = seed
            weights, took = train(kind, train_dirs, work / f"run_{kind}_seed{seed}", args)
            net = models.load_file(weights)
            results.append(score(net, val))
            seconds.append(took / args.steps)
            if kind == "bilateral":  # the same low-resolution AOD-Net behind the fixed upsamplers
                for other in ("bilinear", "guided"):
                    label = f"the bilateral runs' AOD-Net, {other} upsampling"
                    swapped.setdefault(label, ([], ""))[0].append(score(with_upsampler(net, other), val))
        rows[f"trained with **{kind}** upsampling"] = (results, f"{statistics.mean(seconds):.2f} s/step")
        print(kind, json.dumps(results), file=sys.stderr, flush=True)

    rows.update(swapped)
    names = [f"{f}/{h.name}" for f, h, _ in val]

    def stats(per_seed: list[dict], metric: int) -> str:
        means = [statistics.mean(r[n][metric] for n in names) for r in per_seed]
        digits = 2 if metric == 0 else 3
        if len(means) == 1:
            return f"{means[0]:.{digits}f}"
        return f"{statistics.mean(means):.{digits}f} ± {statistics.stdev(means):.{digits}f}"

    header = ("| | " + " | ".join(n.split("/")[0] + " " + Path(n).stem for n in names)
              + " | mean PSNR | mean SSIM | PSNR per seed | train time |")
    lines = [
        f"AOD-Net inside DDU, S = {args.scale}, {args.steps} steps per run, seeds {args.seeds}: PSNR (dB) per "
        f"validation image at native resolution (mean over seeds), then the mean over the images as mean ± "
        f"std over seeds. {cpu_model()}, 1 thread, load average {load_average()} (a shared machine; times "
        f"are indicative only).",
        "",
        header,
        "|---" * (len(names) + 5) + "|",
    ]
    for label, (per_seed, note) in rows.items():
        cells = " | ".join(f"{statistics.mean(r[n][0] for r in per_seed):.2f}" for n in names)
        each = ", ".join(f"{statistics.mean(r[n][0] for n in names):.2f}" for r in per_seed) if len(per_seed) > 1 else ""
        lines.append(f"| {label} | {cells} | {stats(per_seed, 0)} | {stats(per_seed, 1)} | {each} | {note} |")
    text = "\n".join(lines)
    print(text)
    print(json.dumps({label: v[0] for label, v in rows.items()}), file=sys.stderr)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
