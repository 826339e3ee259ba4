"""Out-of-sample FADE of a haze gate on the photos of train/real_unpaired outside its main collection
(stage 17's gain criterion; issue #24; `train/` only).

262 of the 274 photos of train/real_unpaired are DAWN road scenes; the others (RTTS-style and
classic photos) are few, and most of them are among the gate's fitting photos. So each fitting
photo of the scored collections gets the g of the gate refitted without its row (same tables, seed
and recipe as ``tools/fit_haze_gate.py``), and each held-out one the g of the candidate's own gate,
fitted on every row. J at that g is scored by FADE, clipped share and darkening, beside the shipped
model's and DCP's J of the same photos (and, with ``--strengths``, the shipped model's at t^S).

    python benchmarks/gate_collections.py runs/gate-stage17 --seeds 0 1 --members 5 --loss relative \
        --balance-collections
    python benchmarks/gate_collections.py --seeds --skip ridcp pttd --every 6  # DAWN, no gate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file as load_tensors

from hazefree import models
from hazefree.evaluation.no_reference import brightness_ratio, clipped_share
from hazefree.io import read_image
from hazefree.metrics.fade import fade
from hazefree.strength import recompose
from hazefree.training.gate import (
    GateConfig,
    GateData,
    balance_collections,
    fit_gate,
    grid_outputs,
    photo_collection,
    real_split,
)

DARKENED = 0.25  # as tools/select_real_haze.py: an output under a quarter of its input's brightness


def load_tables(folder: Path) -> GateData:
    """The tables ``tools/fit_haze_gate.py`` wrote to ``folder``."""
    t = load_tensors(str(folder / "tables.safetensors"))
    recorded = json.loads((folder / "tables.json").read_text())
    return GateData(t["inputs"], t["loss"], t["clipped"], t["weight"], recorded["sources"], recorded["scenes"])


def without(data: GateData, scene: str) -> GateData:
    """``data`` without the rows of ``scene``, the others' weights renormalised."""
    keep = torch.tensor([s != scene for s in data.scenes])
    weight = data.weight[keep]
    return GateData(data.inputs[keep], data.loss[keep], data.clipped[keep], weight / weight.sum(),
                    [s for s, k in zip(data.sources, keep) if k], [s for s, k in zip(data.scenes, keep) if k])


def scores(output: torch.Tensor, hazy: torch.Tensor) -> dict[str, float]:
    return {"fade": float(fade(output)[0]), "clipped": float(clipped_share(output)[0]),
            "brightness": float(brightness_ratio(output, hazy)[0])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", type=Path, nargs="?", help="a fit_haze_gate.py output folder (its tables; needed with --seeds)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="none: the shipped model and DCP only")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--loss", choices=("l1", "relative"), default="relative")
    p.add_argument("--balance-collections", action="store_true")
    p.add_argument("--weights", default="hazefree/weights/guided-pix2pix.safetensors",
                   help="the shipped gated model: the baseline, and the network J is rendered with")
    p.add_argument("--real", default="../shared/data/train/real_unpaired")
    p.add_argument("--skip", nargs="+", default=["dawn"], help="collections not scored")
    p.add_argument("--every", type=int, default=1, help="score every n-th photo")
    p.add_argument("--strengths", type=float, nargs="*", default=[],
                   help="also the shipped model at these strengths S (t^S, hazefree.strength)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.seeds and args.tables is None:
        p.error("--seeds refits gates: give the folder of their tables")
    torch.set_num_threads(args.threads)
    if args.seeds:
        data = load_tables(args.tables)
        if args.balance_collections:
            data = balance_collections(data)
    shipped = models.load_file(args.weights).eval()
    dcp = models.create("dcp").eval()
    fitting, held_out = real_split(args.real, GateConfig())
    photos = [(path, path in held_out) for path in sorted(fitting + held_out)
              if photo_collection(path.stem) not in args.skip][:: args.every]
    rows: dict[str, dict] = {}
    for path, held in photos:
        hazy = read_image(path).rgb
        with torch.no_grad():
            out = shipped(hazy)
            rows[path.name] = {"held_out": held, "shipped": scores(out.clear, hazy),
                               "dcp": scores(dcp(hazy).clear, hazy)}
            for s in args.strengths:
                j = recompose(hazy, out.transmission, out.airlight, shipped.t_min, s)
                rows[path.name][f"shipped, S {s:g}"] = scores(j, hazy)
    for seed in args.seeds:
        cfg = GateConfig(loss=args.loss, members=args.members, seed=seed)
        full, _ = fit_gate(data, cfg)
        for path, held in photos:
            hazy = read_image(path).rgb
            gate = full if held else fit_gate(without(data, f"real_unpaired/{path.stem}"), cfg)[0]
            with torch.no_grad():
                low = shipped.working_image(hazy)
                inputs = shipped.prior(hazy, low, shipped.network_coarse(hazy, low)).inputs
                g = float(gate(inputs).flatten()[0])
                (out,), _ = grid_outputs(shipped, hazy, torch.tensor([g]))
                rows[path.name][f"seed{seed}"] = {"g": g, **scores(out, hazy)}
            print(f"seed {seed} {path.name}: g {g:.2f}, FADE {rows[path.name][f'seed{seed}']['fade']:.3f}", flush=True)
    columns = ["shipped", *(f"shipped, S {s:g}" for s in args.strengths), "dcp", *(f"seed{s}" for s in args.seeds)]
    n = len(rows)
    print(f"\n{n} photos outside {', '.join(args.skip)}, every {args.every} (held out of the fit: "
          f"{sum(r['held_out'] for r in rows.values())})")
    print("| | mean FADE | relative to shipped | clipped % | clearer than DCP | darkened |")
    print("|---|---:|---:|---:|---:|---:|")
    base = sum(r["shipped"]["fade"] for r in rows.values()) / n
    summary = {}
    for c in columns:
        f = sum(r[c]["fade"] for r in rows.values()) / n
        k = sum(r[c]["clipped"] for r in rows.values()) / n
        clearer = sum(r[c]["fade"] < r["dcp"]["fade"] for r in rows.values())
        dark = sum(r[c]["brightness"] < DARKENED for r in rows.values())
        summary[c] = {"fade": f, "relative": f / base, "clipped": k, "clearer_than_dcp": clearer, "darkened": dark}
        print(f"| {c} | {f:.4f} | {f / base:.3f} | {100 * k:.3f} | {'-' if c == 'dcp' else clearer} | {dark} |")
    if args.out:
        args.out.write_text(json.dumps({"tables": None if args.tables is None else str(args.tables), "balance_collections": args.balance_collections,
                                        "summary": summary, "photos": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
