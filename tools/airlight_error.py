"""How far each model's airlight is from the airlight that rendered a training config's validation images.

    python tools/airlight_error.py configs/experiments/guided-pix2pix-airlight-head.yaml \
        hazefree/weights/guided-pix2pix.safetensors runs/airlight-head/best.safetensors

The reference is the grey airlight that :func:`hazefree.physics.fit_haze_model` recovers from each
(hazy, clear) validation pair. Only pairs the scattering model fits to ``--min-fit-db`` count
(RESIDE renders fit to about 60 dB; real cloud pairs such as RICE do not have one airlight).
Prints the mean absolute error per model, averaged over the three channels.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import run_tool  # tools/_common.py (tools run as scripts)

from hazefree import models
from hazefree.physics import fit_haze_model
from hazefree.training import load_config, load_training_data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="training config whose validation split is used")
    p.add_argument("weights", nargs="+", help="weights files written by hazefree train")
    p.add_argument("--min-fit-db", type=float, default=50.0, help="pairs fitting the model less well are skipped")
    args = p.parse_args(argv)
    nets = {w: models.load_file(w) for w in args.weights}  # an unusable file fails before the data load
    cfg = load_config(args.config, None, [])
    bank, _, val_idx = load_training_data(cfg)
    errors: dict[str, list[float]] = {w: [] for w in nets}
    skipped = 0
    with torch.no_grad():
        for i in val_idx:
            hazy, clear = bank.full(i)
            airlight, _, fit_db = fit_haze_model(hazy, clear)
            if fit_db.item() < args.min_fit_db:
                skipped += 1
                continue
            for w, net in nets.items():
                errors[w].append((net(hazy).airlight - airlight).abs().mean().item())
    for w, e in errors.items():
        print(json.dumps({"weights": w, "images": len(e), "skipped": skipped,
                          "mean_abs_airlight_error": round(sum(e) / max(1, len(e)), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
