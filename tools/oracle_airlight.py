"""Which estimate costs a scattering-model dehazer more on a config's validation images: A or t?

    python tools/oracle_airlight.py configs/guided-pix2pix-stage5.yaml \
        hazefree/weights/guided-pix2pix.safetensors [--split train] [--json out.json]

For each validation pair that the scattering model fits to ``--min-fit-db`` (RESIDE-style renders),
:func:`hazefree.physics.fit_haze_model` recovers the airlight A and transmission t that rendered it.
The model's output is scored as it is, with the fitted A in place of its own (its t kept), with
the fitted t in place of its own (its A kept), and, for Guided-Pix2Pix, with the fitted t put where
the network's coarse t0 goes (resized to the working size, then refined by the model's guided filter;
its A kept: is it the coarse t or the refinement that limits?), next to DCP and the hazy input; PSNR means per source,
with the range of the fitted airlights. ``--split train`` reads the config's training images instead
of its validation images (the model has seen those: a statement about the data, not a score).
Reads only the config's data (``train/``), never an evaluation folder.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
import torch.nn.functional as F
from _common import run_tool  # tools/_common.py (tools run as scripts)

from hazefree import models
from hazefree.data import source_labels
from hazefree.metrics import psnr
from hazefree.models.guided_pix2pix import GuidedPix2Pix
from hazefree.physics import fit_haze_model, remove_haze
from hazefree.training import load_config, load_training_data

COLUMNS = ("hazy", "dcp", "model", "fitted_A", "fitted_t", "filtered_t")


def refined(net: torch.nn.Module, hazy: torch.Tensor, t: torch.Tensor, airlight: torch.Tensor) -> torch.Tensor:
    """J of Guided-Pix2Pix ``net`` with ``t`` in place of its coarse t0 (resized to the working size,
    refined by its guided filter) and ``airlight``; NaN for a model without that refinement."""
    if not isinstance(net, GuidedPix2Pix):
        return torch.full_like(hazy, float("nan"))
    low = net.working_image(hazy)
    t0 = F.interpolate(t, size=low.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return net.recover(hazy, low, airlight, t0).clear


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="training config whose validation split is used")
    p.add_argument("weights", help="weights file written by hazefree train")
    p.add_argument("--min-fit-db", type=float, default=45.0, help="pairs fitting the model less well are skipped")
    p.add_argument("--split", choices=("val", "train"), default="val", help="which side of the config's split")
    p.add_argument("--json", help="also write every image's scores here")
    args = p.parse_args(argv)
    # re-rendered levels are not validated; skipping them makes the bank load in seconds
    net = models.load_file(args.weights).eval()  # an unusable file fails before the data load
    cfg = load_config(args.config, None, ["data.rerender_per_pair=0"])
    bank, train_idx, val_idx = load_training_data(cfg)
    dcp = models.create("dcp").eval()
    by_source = bank.by_source(val_idx if args.split == "val" else train_idx)
    labels = source_labels(by_source)
    rows = []
    with torch.no_grad():
        for src, indices in by_source.items():
            for i in indices:
                hazy, clear = bank.full(i)
                a_fit, t_fit, fit_db = fit_haze_model(hazy, clear)
                if fit_db.item() < args.min_fit_db:
                    continue
                out = net(hazy)
                t_min = getattr(net, "t_min", 0.05)
                outputs = {
                    "hazy": hazy,
                    "dcp": dcp(hazy).clear,
                    "model": out.clear,
                    "fitted_A": remove_haze(hazy, out.transmission, a_fit, t_min=t_min),
                    "fitted_t": remove_haze(hazy, t_fit, out.airlight, t_min=t_min),
                    "filtered_t": refined(net, hazy, t_fit, out.airlight),
                }
                rows.append({"source": labels[src], "name": bank.names[i],
                             "airlight": out.airlight.mean().item(), "fitted_airlight": a_fit.mean().item(),
                             **{k: psnr(v.clamp(0, 1), clear).item() for k, v in outputs.items()}})
    table = defaultdict(list)
    for r in rows:
        table[r["source"]].append(r)
    print(f"{'source':16s} {'n':>3s} " + " ".join(f"{c:>9s}" for c in COLUMNS) + "   |A - A_fit|   A_fit range")
    for source, rs in sorted(table.items()):
        means = [sum(r[c] for r in rs) / len(rs) for c in COLUMNS]
        a_err = sum(abs(r["airlight"] - r["fitted_airlight"]) for r in rs) / len(rs)
        fitted = [r["fitted_airlight"] for r in rs]
        print(f"{source:16s} {len(rs):3d} " + " ".join(f"{m:9.2f}" for m in means)
              + f"   {a_err:11.3f}   {min(fitted):.2f}-{max(fitted):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
