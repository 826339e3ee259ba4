"""How sensitive is the shipped Guided-Pix2Pix to its guided filter's radius r and eps at inference?
(the paper's Figs. 8-9 vary r from 3 to 120 and retrain each; here the shipped network, trained
with the CPU preset's r = 30, eps = 1e-4, is kept and only the refinement changes, so this asks
whether the shipped refinement is where a gain lies, not which r trains best). ``--eps`` defaults
to the weights' own eps; the column of the weights' own (r, eps) is starred.

PSNR by source on every n-th pair of a training config's training split (`train/` only; the network
has seen these images, so the levels are optimistic and the differences between settings are
what matter).

    python benchmarks/refinement_radius.py configs/guided-pix2pix-stage11.yaml --radii 3 15 30 60 120 --every 3
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from hazefree import models
from hazefree.data import source_labels
from hazefree.metrics import psnr
from hazefree.training import load_config, load_training_data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="training config: its training split is scored")
    p.add_argument("--weights", default="hazefree/weights/guided-pix2pix.safetensors")
    p.add_argument("--radii", type=int, nargs="+", default=[3, 15, 30, 60, 120])
    p.add_argument("--eps", type=float, nargs="+", help="default: the weights' own eps")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # re-rendered levels are not scored; skipping them makes the bank load in seconds
    cfg = load_config(args.config, None, ["data.rerender_per_pair=0"])
    bank, train_idx, _ = load_training_data(cfg)
    own = models.load_file(args.weights)
    shipped = (own.radius, own.eps)
    settings = [(r, e) for e in (args.eps or [own.eps]) for r in args.radii]
    nets = {s: models.load_file(args.weights, radius=s[0], eps=s[1]).eval() for s in settings}
    by_source = bank.by_source(train_idx)
    labels = source_labels(by_source)
    scores: dict[str, dict[tuple[int, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    with torch.no_grad():
        for src, indices in by_source.items():
            for i in indices[:: args.every]:
                hazy, clear = bank.full(i)
                for s, net in nets.items():
                    scores[labels[src]][s].append(psnr(net(hazy).clear, clear).item())
    names = [f"r {r}, eps {e:g}" + (" *" if (r, e) == shipped else "") for r, e in settings]
    print("| source (pairs) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    report = {}
    for src in sorted(scores):
        means = [sum(v) / len(v) for v in (scores[src][s] for s in settings)]
        report[src] = dict(zip(names, means))
        print(f"| {src} ({len(scores[src][settings[0]])}) | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    if args.out:
        args.out.write_text(json.dumps({"weights": args.weights, "every": args.every, "psnr": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
