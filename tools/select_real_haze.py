"""Apply stage 9's selection rule (issue #24): paired validation PSNR and FADE on held-out real photos.

For every checkpoint (the EMA weights, ``checkpoints/step_*/ema.safetensors``) of the given runs, and
for the shipped model, DCP and the input itself:

* ``val_psnr``: the run config's validation split and metric (as ``hazefree train --validate``);
* on the held-out photos of ``--real`` (:func:`hazefree.data.split_unpaired`, the share the targets
  tool never wrote), each output quantised to 8 bits as written: mean FADE
  (:func:`hazefree.metrics.fade`), mean share of clipped pixels, on how many photos it is
  clearer (lower FADE) than DCP, the mean brightness ratio
  (:func:`~hazefree.evaluation.no_reference.brightness_ratio`) and how many outputs kept under a
  quarter of their input's brightness (``darkened``; in the rule only with ``--max-darkened``).

Then the rule of ``configs/guided-pix2pix-stage9.yaml`` (the constants below): feasible checkpoints
keep ``val_psnr >= --min-psnr``, clipped share <= 0.5 % (and, with ``--max-darkened K``, at most K
darkened photos; stage 11); each run's choice is its feasible checkpoint
with the lowest mean FADE; the better choice ships iff its FADE <= ``--factor`` (0.85) x the shipped
model's. With ``--step-back DB`` (stage 13) a feasible checkpoint also keeps val_psnr >= the
shipped model's - DB and FADE <= the shipped model's, and with ``--psnr-gain DB`` the choice also
ships when its val_psnr >= the shipped model's + DB. With ``--bild-runs`` (stage 10, issue #25 part 3) those runs form the BILD arm and the
others the plain arm, compared at each run's last checkpoint: BILD wins iff its mean val_psnr is
>= plain's + 0.10 dB and its mean FADE <= 1.02 x plain's. Writes every score to ``--json`` and
prints a table and the verdict. ``--files`` adds weight files as candidates, each its own run
(stage 11's fitted gates).

    python tools/select_real_haze.py configs/guided-pix2pix-stage9.yaml runs/guided-pix2pix-stage9 \\
        runs/guided-pix2pix-stage9-seed1 --json runs/stage9_selection.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from _common import run_tool
from hazefree import models
from hazefree.data import split_unpaired
from hazefree.evaluation.no_reference import brightness_ratio, clipped_share
from hazefree.io import read_image
from hazefree.metrics.fade import fade
from hazefree.training.config import load_config
from hazefree.training.validation import load_training_data, validate_run

MAX_CLIPPED = 0.005
BILD_MIN_GAIN_DB = 0.10
BILD_MAX_FADE_RATIO = 1.02
DARKENED = 0.25  # in the rule with --max-darkened (stage 11): an output with under a quarter of its input's brightness


def real_scores(dehaze, photos: list[torch.Tensor]) -> dict[str, list[float]]:
    """Per-photo FADE and clipped share of ``dehaze(photo)`` (None: the photo itself); both measures
    quantise to 8 bits as the writer does, so they score the file that would be written."""
    out: dict[str, list[float]] = {"fade": [], "clipped": [], "brightness": []}
    with torch.no_grad():
        for photo in photos:
            result = photo if dehaze is None else dehaze(photo).clear
            out["fade"].append(float(fade(result)[0]))
            out["clipped"].append(float(clipped_share(result)[0]))
            out["brightness"].append(float(brightness_ratio(result, photo)[0]))
    return out


@dataclass
class Rule:
    """The selection rule (module docstring); None switches a condition off."""

    min_psnr: float = 20.40
    factor: float = 0.85
    max_darkened: int | None = None
    step_back: float | None = None
    psnr_gain: float | None = None


def decide(rows: dict[str, dict], candidates: dict[str, list[str]], rule: Rule) -> dict:
    """Each run's choice among its feasible checkpoints (the lowest FADE) and whether the best
    choice ships, against ``rows["shipped"]``. ``rows`` maps a name to its ``val_psnr``, ``fade``,
    ``clipped`` and ``darkened``."""
    shipped = rows["shipped"]

    def feasible(r: dict) -> bool:
        return (
            r["val_psnr"] >= rule.min_psnr and r["clipped"] <= MAX_CLIPPED
            and (rule.max_darkened is None or r["darkened"] <= rule.max_darkened)
            and (rule.step_back is None
                 or (r["val_psnr"] >= shipped["val_psnr"] - rule.step_back and r["fade"] <= shipped["fade"]))
        )

    choices = {}
    for run, names in candidates.items():
        kept = [n for n in names if feasible(rows[n])]
        if kept:
            choices[run] = min(kept, key=lambda n: rows[n]["fade"])
    verdict: dict = {"choices": choices, "ship": None}
    if choices:
        best = min(choices.values(), key=lambda n: rows[n]["fade"])
        verdict["best"] = best
        verdict["ship"] = rows[best]["fade"] <= rule.factor * shipped["fade"] or (
            rule.psnr_gain is not None and rows[best]["val_psnr"] >= shipped["val_psnr"] + rule.psnr_gain)
    return verdict


def compare_arms(rows: dict[str, dict], candidates: dict[str, list[str]], bild: set[str]) -> dict:
    """Stage 10's BILD-against-plain rule on each run's last checkpoint (module docstring)."""
    arms: dict[str, list[dict]] = {"bild": [], "plain": []}
    for run, names in candidates.items():
        arms["bild" if run in bild else "plain"].append(rows[max(names)])
    mean = {arm: {k: sum(r[k] for r in rs) / len(rs) for k in ("val_psnr", "fade")} for arm, rs in arms.items()}
    gain = mean["bild"]["val_psnr"] - mean["plain"]["val_psnr"]
    ratio = mean["bild"]["fade"] / mean["plain"]["fade"]
    return {"means": mean, "psnr_gain_db": gain, "fade_ratio": ratio,
            "bild_wins": gain >= BILD_MIN_GAIN_DB and ratio <= BILD_MAX_FADE_RATIO}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the runs' config (its validation split and metric)")
    ap.add_argument("runs", nargs="*", type=Path, help="run folders whose checkpoints are candidates")
    ap.add_argument("--real", default="../shared/data/train/real_unpaired", help="real photos without ground truth")
    ap.add_argument("--holdout", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-psnr", type=float, default=20.40, help="feasible val_psnr (stage 8b's 20.70 - 0.3)")
    ap.add_argument("--factor", type=float, default=0.85, help="ship iff FADE <= factor x the shipped model's")
    ap.add_argument("--bild-runs", type=Path, nargs="*", default=[],
                    help="runs (also candidates) that form the BILD arm against the other runs (stage 10)")
    ap.add_argument("--files", type=Path, nargs="*", default=[], help="weight files, each a candidate of its own")
    ap.add_argument("--max-darkened", type=int, help="feasible only with at most this many darkened photos")
    ap.add_argument("--step-back", type=float,
                    help="feasible only with val_psnr >= the shipped model's - STEP_BACK and FADE <= its (stage 13)")
    ap.add_argument("--psnr-gain", type=float, help="also ship iff val_psnr >= the shipped model's + PSNR_GAIN (stage 13)")
    ap.add_argument("--json", type=Path, help="write every score here")
    ap.add_argument("--cached", type=Path, nargs="*", default=[],
                    help="earlier --json files of this tool: their scores are reused, not recomputed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    _, held = split_unpaired(args.real, args.holdout, args.seed)
    photos = [read_image(p).rgb for p in held]
    # The validation split takes whole scenes per source, and the rule validates on the benchmarks'
    # own hazy images: the re-rendered levels, the depth renders and the pseudo-targets (validation
    # share 0) are not needed to draw it, and fitting the re-renders takes most of a run's load time.
    cfg.data.rerender_per_pair, cfg.data.synthetic = 0, []
    cfg.data.paired = [p for p in cfg.data.paired if cfg.data.val_fraction[Path(p).name] > 0]
    cfg.data.val_fraction = {Path(p).name: cfg.data.val_fraction[Path(p).name] for p in cfg.data.paired}
    split: list = []  # (bank, validation indices), loaded at the first model that is not cached

    rows: dict[str, dict] = {}
    cached: dict[str, dict] = {}
    for path in args.cached:
        previous = json.loads(path.read_text())
        if previous["held_out"] != [p.name for p in held]:
            raise SystemExit(f"error: {path}: scored on other held-out photos")
        cached |= previous["scores"]

    def score(name: str, net, paired: bool = True) -> None:
        if name in cached:
            rows[name] = cached[name]
            return
        real = real_scores(net, photos)
        row = {k: sum(v) / len(v) for k, v in real.items()} | {"per_photo_fade": real["fade"]}
        row["darkened"] = sum(b < DARKENED for b in real["brightness"])
        if paired and net is not None:
            if not split:
                bank, _, val_idx = load_training_data(cfg)
                split.extend((bank, val_idx))
            val = validate_run(net, *split, cfg.data)
            row["val_psnr"] = val["val_psnr"]
            row["val_groups"] = {k.split(":", 1)[1]: v for k, v in val.items() if k.startswith("val_psnr@group:")}
        rows[name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)), flush=True)

    score("input", None, paired=False)
    score("dcp", models.load("dcp").eval())
    score("shipped", models.load("guided-pix2pix").eval())
    candidates: dict[str, list[str]] = {}
    for run in [*args.runs, *args.bild_runs]:
        for ckpt in sorted((run / "checkpoints").glob("step_*")):
            name = f"{run.name}/{ckpt.name}"
            score(name, models.load_file(ckpt / "ema.safetensors", model=cfg.model, **cfg.model_options).eval())
            candidates.setdefault(run.name, []).append(name)
    for path in args.files:
        name = f"{path.parent.name}/{path.name}"
        score(name, models.load_file(path, model=cfg.model).eval())
        candidates[name] = [name]

    dcp_fade = rows["dcp"]["per_photo_fade"]
    for row in rows.values():
        row["clearer_than_dcp"] = sum(f < d for f, d in zip(row["per_photo_fade"], dcp_fade))
    rule = Rule(args.min_psnr, args.factor, args.max_darkened, args.step_back, args.psnr_gain)
    verdict = decide(rows, candidates, rule)
    if verdict["choices"]:
        best = verdict["best"]
        verdict["issue_bar"] = {
            "fade_le_dcp": rows[best]["fade"] <= rows["dcp"]["fade"],
            "clearer_than_dcp": f"{rows[best]['clearer_than_dcp']} of {len(photos)}",
        }
    if args.bild_runs:
        verdict["bild_vs_plain"] = compare_arms(rows, candidates, {r.name for r in args.bild_runs})
    print(f"\n{len(photos)} held-out photos; DCP FADE {rows['dcp']['fade']:.4f}, shipped {rows['shipped']['fade']:.4f}")
    print(f"| weights | val_psnr | FADE | clipped % | clearer than DCP | brightness ratio | darkened (< {DARKENED}) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        psnr = f"{row['val_psnr']:.3f}" if "val_psnr" in row else "-"
        dark = f"{row['brightness']:.3f} | {row['darkened']}" if "darkened" in row else "- | -"
        print(f"| {name} | {psnr} | {row['fade']:.4f} | {100 * row['clipped']:.3f} | {row['clearer_than_dcp']} | {dark} |")
    print(json.dumps(verdict, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"held_out": [p.name for p in held], "scores": rows, "verdict": verdict}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
