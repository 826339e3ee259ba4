"""Copy a trained model into the package as its shipped weights (float16 safetensors).

    python tools/ship_weights.py runs/guided-pix2pix/best.safetensors guided-pix2pix \
        --note "configs/guided-pix2pix.yaml, step 2500"

float16 halves the file; loading casts back to float32 (measured effect on PSNR: see docs/training.md).
The model name and options recorded by the trainer are kept; ``--option KEY=VALUE`` (a JSON value)
changes an inference option chosen after training, e.g. the guided filter's radius picked on the
validation split; ``--note`` adds provenance.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _common import run_tool  # tools/_common.py (tools run as scripts)

from hazefree.models import create
from hazefree.models.weights import load_state_strict, load_weights, save_weights, shipped_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="weights written by hazefree train (e.g. RUN/best.safetensors)")
    p.add_argument("name", help="registry name the weights are shipped for")
    p.add_argument("--note", default="", help="provenance recorded in the file's metadata")
    p.add_argument("--float32", action="store_true", help="keep float32 instead of float16")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="record an inference option (JSON value), e.g. radius=60 (repeatable)")
    args = p.parse_args(argv)
    state, meta = load_weights(args.source)
    if meta.get("model") != args.name:
        print(f"error: {args.source} holds {meta.get('model')!r}, not {args.name!r}", file=sys.stderr)
        return 2
    if not args.float32:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    extra = {k: v for k, v in meta.items() if k not in {"format", "model", "options"}}
    extra["note"] = args.note
    options = json.loads(meta.get("options", "{}"))
    for item in args.option:
        key, sep, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            sep = ""
        if not sep or not key:
            print(f"error: --option {item!r}: expected KEY=JSON_VALUE, e.g. radius=60", file=sys.stderr)
            return 2
    # the options must build the model the weights were trained as
    load_state_strict(create(meta["model"], **options), state, args.source)
    save_weights(state, shipped_path(args.name), meta["model"], options, extra)
    print(f"wrote {shipped_path(args.name)}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run_tool(main))
