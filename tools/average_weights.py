"""Average the weights of runs fine-tuned from one starting point (a uniform "model soup").

    python tools/average_weights.py runs/guided-pix2pix-stage7/best.safetensors \
        runs/guided-pix2pix-stage7-seed1/best.safetensors --out runs/guided-pix2pix-stage7-soup/soup.safetensors

Runs that start from the same weights and differ only in seed and data order usually stay in one
basin of the loss, where the average of their weights is a model at least as good as its members
on new data, at no cost at inference (Wortsman et al. 2022, "Model soups", the uniform soup).
Every file must hold the same model, options and parameter names; the output records them, and a
note naming its members.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _common import run_tool  # tools/_common.py (tools run as scripts)

from hazefree.models.weights import load_weights, save_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("members", nargs="+", help="weights files written by hazefree train (two or more)")
    p.add_argument("--out", required=True, help="where to write the averaged weights (safetensors)")
    args = p.parse_args(argv)
    if len(args.members) < 2:
        print("error: give at least two weights files to average", file=sys.stderr)
        return 2
    loaded = [load_weights(m) for m in args.members]
    (first, meta), *rest = loaded
    for path, (state, m) in zip(args.members[1:], rest):
        if (m.get("model"), m.get("options")) != (meta.get("model"), meta.get("options")):
            print(f"error: {path} holds {m.get('model')!r} {m.get('options')}, not {meta.get('model')!r} "
                  f"{meta.get('options')} like {args.members[0]}", file=sys.stderr)
            return 2
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            print(f"error: {path}'s parameters differ in name or shape from {args.members[0]}'s", file=sys.stderr)
            return 2
    soup = {k: torch.stack([s[k].double() for s, _ in loaded]).mean(0).to(first[k].dtype) for k in first}
    options = None if meta.get("options") is None else json.loads(meta["options"])
    note = "uniform average of " + ", ".join(args.members)
    save_weights(soup, args.out, meta.get("model"), options, {"note": note})
    print(f"wrote {args.out} ({note})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run_tool(main))
