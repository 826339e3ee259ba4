"""Widen trained Guided-Pix2Pix weights to a larger ngf, computing the same output (a training init).

    python tools/widen_weights.py runs/guided-pix2pix-stage5/best.safetensors \
        runs/guided-pix2pix-stage5/widened-ngf24.safetensors --ngf 24

The new channels are initialised from ``--seed`` and feed only new channels until training
moves them (:mod:`hazefree.training.widen`). The model name and the other recorded options are
kept; ``ngf`` is recorded as the new width. The output is checked against the input on a
random image before it is written.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _common import run_tool  # tools/_common.py (tools run as scripts)

from hazefree.models import create
from hazefree.models.weights import load_state_strict, load_weights, save_weights
from hazefree.training.widen import widen_guided_pix2pix

# Largest |difference| of the clear image between narrow and wide models that passes the check.
TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="Guided-Pix2Pix weights written by hazefree train")
    p.add_argument("out", help="where to write the widened weights (safetensors)")
    p.add_argument("--ngf", type=int, required=True, help="the new base width of the U-Net")
    p.add_argument("--seed", type=int, default=0, help="seed of the new channels' initialisation")
    args = p.parse_args(argv)
    state, meta = load_weights(args.source)
    if not meta.get("model", "").startswith("guided-pix2pix"):
        print(f"error: {args.source} holds {meta.get('model')!r}, not Guided-Pix2Pix weights", file=sys.stderr)
        return 2
    options = json.loads(meta.get("options", "{}"))
    narrow = create(meta["model"], **options)
    load_state_strict(narrow, state, args.source)
    if args.ngf <= narrow.backbone.down[0][0].out_channels:
        print(f"error: --ngf {args.ngf} is not wider than {args.source}'s U-Net", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    wide_options = {**options, "ngf": args.ngf}
    wide = widen_guided_pix2pix(narrow, create(meta["model"], **wide_options))
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (narrow.eval()(x).clear - wide.eval()(x).clear).abs().max().item()
    if gap > TOLERANCE:
        print(f"error: the widened model differs from {args.source} by {gap:.2e}", file=sys.stderr)
        return 1
    extra = {"note": f"{args.source} widened to ngf {args.ngf} (seed {args.seed}), max |diff| {gap:.1e}"}
    save_weights(wide, args.out, meta["model"], wide_options, extra)
    print(f"wrote {args.out} (ngf {args.ngf}; output within {gap:.1e} of the source)")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run_tool(main))
