"""Does Guided-Pix2Pix lose anything between training crops and whole images?

The trainer shows the network ``data.crop``-pixel crops; inference runs it on the whole image. If
the U-Net's coarse t depended on the context it saw, the same pixels would score differently when
dehazed as a crop alone and when cut from the whole image's output. Per source, on every n-th pair
of a training config's split, as the bank holds it (longer side at most ``data.max_side``): PSNR of
the whole image, of three crops (top left, centre, bottom right) dehazed alone, and of the same
crops cut from the whole image's output.

    python benchmarks/crop_context.py configs/guided-pix2pix-stage11.yaml --split train --every 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hazefree import models
from hazefree.data import source_labels
from hazefree.metrics import psnr
from hazefree.training import load_config, load_training_data

COLUMNS = ("whole image", "crops alone", "crops of the whole")


def crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the top-left, centre and bottom-right ``size`` crops."""
    ys, xs = height - size, width - size
    return [(0, 0), (ys // 2, xs // 2), (ys, xs)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="training config: its split, crop size and sources")
    p.add_argument("--weights", default="hazefree/weights/guided-pix2pix.safetensors")
    p.add_argument("--split", choices=("val", "train"), default="train")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--sources", nargs="+", default=["sots_indoor", "sots_outdoor"], help="source labels scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = models.load_file(args.weights).eval()
    cfg = load_config(args.config, None, ["data.rerender_per_pair=0"])
    bank, train_idx, val_idx = load_training_data(cfg)
    by_source = bank.by_source(train_idx if args.split == "train" else val_idx)
    labels = source_labels(by_source)
    size = cfg.data.crop
    report = {}
    print(f"| source (pairs) | {' | '.join(COLUMNS)} |\n|---|" + "---:|" * len(COLUMNS))
    with torch.no_grad():
        for src, indices in by_source.items():
            if labels[src] not in args.sources:
                continue
            scores: dict[str, list[float]] = {c: [] for c in COLUMNS}
            for i in indices[:: args.every]:
                hazy, clear = bank.full(i)
                if min(hazy.shape[-2:]) < size:
                    continue
                whole = net(hazy).clear
                scores["whole image"].append(psnr(whole, clear).item())
                for y, x in crop_boxes(*hazy.shape[-2:], size):
                    box = (..., slice(y, y + size), slice(x, x + size))
                    scores["crops alone"].append(psnr(net(hazy[box]).clear, clear[box]).item())
                    scores["crops of the whole"].append(psnr(whole[box], clear[box]).item())
            means = {c: sum(v) / len(v) for c, v in scores.items() if v}
            if not means:
                continue
            report[labels[src]] = {"pairs": len(scores["whole image"]), **means}
            print(f"| {labels[src]} ({len(scores['whole image'])}) | "
                  + " | ".join(f"{means[c]:.2f}" for c in COLUMNS) + " |")
    if args.out:
        args.out.write_text(json.dumps({"weights": args.weights, "split": args.split, "every": args.every,
                                        "psnr": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
