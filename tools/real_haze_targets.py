"""Pseudo-targets for real hazy photos without ground truth (issue #24, stage 9's real-haze source).

For each photo of a ``hazy/``-only folder (``train/real_unpaired``) outside the held-out share
(:func:`hazefree.data.split_unpaired`), writes ``OUT/hazy/<stem>.png`` (the photo, decoded as the
trainer decodes it) and ``OUT/clear/<stem>.png``, the photo dehazed by a prior-based teacher:

* A = DCP's airlight (He et al.: the brightest input pixels among the 0.1 % haziest of the dark
  channel); t = min(t_model, t_DCP), per pixel, where t_model is the shipped default's refined
  transmission and t_DCP DCP's (omega 0.95, guided-filter refined). Whichever of the two sees more
  haze at a pixel wins: the learned model keeps its strength where it is stronger, DCP lends its own
  where the model leaves real haze in place.
* Strength: J = (I - A) / max(t^s, 0.1) + A with the largest s in (1.5, 1.25, 1.0) whose result
  clips (black or white in all three channels, 8-bit) at most 0.2 % more pixels than the photo
  itself does, so that the teacher is as strong as it can be without saturating.

The rule was fixed before stage 9 ran (configs/guided-pix2pix-stage9.yaml). A summary of the
strengths chosen goes to ``OUT/targets.json``, and each target's airlight to ``OUT/airlights.json``
(:func:`hazefree.data.write_airlights`), which the trainer's airlight loss reads (stage 9b).

    git show 86643e2:hazefree/weights/guided-pix2pix.safetensors > runs/stage8b.safetensors
    python tools/real_haze_targets.py ../shared/data/train/real_unpaired runs/real_targets \
        --weights runs/stage8b.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hazefree.data import split_unpaired, write_airlights
from hazefree.evaluation.no_reference import clipped_share
from hazefree.io import read_image, write_image
from hazefree.models import load, load_file
from hazefree.physics import remove_haze

STRENGTHS = (1.5, 1.25, 1.0)
MAX_EXTRA_CLIPPED = 0.002
T_MIN = 0.1


def teacher(hazy: torch.Tensor, model: torch.nn.Module, dcp: torch.nn.Module) -> tuple[torch.Tensor, float, torch.Tensor]:
    """The teacher's clear image (1 x 3 x H x W), the strength s it chose (module docstring) and its
    airlight (3,)."""
    with torch.no_grad():
        ref = dcp(hazy)
        t = torch.minimum(model(hazy).transmission, ref.transmission)
        base = clipped_share(hazy).item()
        for s in STRENGTHS:
            clear = remove_haze(hazy, t.pow(s), ref.airlight, t_min=T_MIN)
            if clipped_share(clear).item() <= base + MAX_EXTRA_CLIPPED or s == STRENGTHS[-1]:
                return clear, s, ref.airlight.flatten()
    raise AssertionError("unreachable")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="folder with hazy/ (real photos without ground truth)")
    ap.add_argument("out", type=Path, help="output folder (hazy/ and clear/ are written)")
    ap.add_argument("--holdout", type=float, default=0.15, help="held-out share, never written (0.15)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split (0)")
    ap.add_argument("--weights", help="the guided-pix2pix weights whose t the teacher takes (default: the "
                    "shipped file; stage 9 used stage 8b's, commit 86643e2)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        train, held = split_unpaired(args.src, args.holdout, args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = (load_file(args.weights, model="guided-pix2pix") if args.weights else load("guided-pix2pix")).eval()
    dcp = load("dcp").eval()
    (args.out / "hazy").mkdir(parents=True, exist_ok=True)
    (args.out / "clear").mkdir(parents=True, exist_ok=True)
    chosen, airlights = {}, {}
    for path in train:
        hazy = read_image(path).rgb
        clear, s, airlights[path.stem] = teacher(hazy, model, dcp)
        write_image(args.out / "hazy" / f"{path.stem}.png", hazy)
        write_image(args.out / "clear" / f"{path.stem}.png", clear)
        chosen[path.name] = s
        print(f"{path.name}: s = {s}", flush=True)
    counts = {str(s): sum(v == s for v in chosen.values()) for s in STRENGTHS}
    summary = {"source": str(args.src), "held_out": [p.name for p in held], "strength_counts": counts,
               "strength": chosen}
    (args.out / "targets.json").write_text(json.dumps(summary, indent=1))
    write_airlights(args.out, airlights)
    print(f"{len(train)} targets written, {len(held)} held out; strengths {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
