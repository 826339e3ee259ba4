"""Which training patches BILD down-weights, by source (issue #25, part 3): a figure and a table.

Reads the ``patch_weights.csv`` of BILD runs and reports, per training source, over the second
half of each run (the reweighter warmed up): the patches' mean N·w (1 = uniform), the share with
N·w < 0.5, and how many patches were logged. The figure has one box per source (N·w, all runs
pooled) and two strips: the patches with the lowest and the highest N·w, hazy | target, each
labelled with its source, file and weight.

The source of a row is its ``source`` column; files written before that column existed are
resolved by file name through the config's ``data.paired`` folders (and its depth folders, source
``synthetic``), and names found in several folders, or in none, are left out (and counted). A
re-rendered haze level is shown as its benchmark image; a depth render as its clear image.

    python tools/bild_by_source.py configs/guided-pix2pix-stage10.yaml runs/guided-pix2pix-stage10-bild \
        runs/guided-pix2pix-stage10-bild-seed1 --out docs/bild/stage10-by-source
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _common import run_tool
from hazefree.data import find_depth_samples, find_pairs
from hazefree.training.config import load_config

TILE = 96


def read_rows(run: Path, by_name: dict[str, list[tuple[str, tuple[Path, Path]]]]) -> tuple[list[dict], int]:
    """The second half's rows of ``run``'s patch_weights.csv, each with ``source``, ``nw`` (N·w) and
    ``file`` (hazy, target paths); and the number of rows left out (file name ambiguous or unknown)."""
    path = run / "patch_weights.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file (a BILD run folder?)")
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"error: {path}: no rows")
    last = max(int(r["step"]) for r in rows)
    per_step: dict[int, int] = defaultdict(int)
    for r in rows:
        per_step[int(r["step"])] += 1
    out, left_out = [], 0
    for r in rows:
        if int(r["step"]) <= last // 2:
            continue
        found = by_name.get(r["image"], [])
        if "source" in r:
            found = [f for f in found if f[0] == r["source"]]
        if len(found) != 1:
            left_out += 1
            continue
        n = per_step[int(r["step"])]
        out.append({**r, "source": found[0][0], "file": found[0][1], "nw": float(r["weight"]) * n})
    return out, left_out


def patch(row: dict) -> Image.Image:
    """hazy | target crop of one row, TILE px high."""
    y, x, h, w = (int(row[c]) for c in ("y", "x", "h", "w"))
    tiles = [Image.open(f).convert("RGB").crop((x, y, x + w, y + h)).resize((TILE, TILE)) for f in row["file"]]
    sheet = Image.new("RGB", (2 * TILE, TILE))
    sheet.paste(tiles[0], (0, 0))
    sheet.paste(tiles[1], (TILE, 0))
    return sheet


def strip(rows: list[dict], title: str) -> Image.Image:
    cols = len(rows)
    sheet = Image.new("RGB", (cols * (2 * TILE + 8), TILE + 52), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for k, r in enumerate(rows):
        left = k * (2 * TILE + 8)
        sheet.paste(patch(r), (left, 14))
        draw.text((left + 2, TILE + 16), f"{r['source']}, N·w = {r['nw']:.2f}", fill="black")
        draw.text((left + 2, TILE + 30), r["image"][:30], fill="black")
    return sheet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the runs' config (its data.paired folders)")
    ap.add_argument("runs", nargs="+", type=Path, help="BILD run folders")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.png and OUT.json")
    ap.add_argument("--show", type=int, default=6, help="patches in each strip")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = load_config(args.config)
    by_name: dict[str, list[tuple[str, tuple[Path, Path]]]] = defaultdict(list)
    for root in cfg.data.paired:
        for p in find_pairs(root, warn=False).pairs:
            by_name[p.hazy.name].append((Path(root).name, (p.hazy, p.clear)))
    for sample in (s for root in cfg.data.synthetic for s in find_depth_samples(root)):
        by_name[sample.clear.name].append(("synthetic", (sample.clear, sample.clear)))
    rows, ambiguous = [], 0
    for run in args.runs:
        r, a = read_rows(run, by_name)
        rows += r
        ambiguous += a
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[r["source"]].append(r["nw"])
    table = {src: {"patches": len(v), "mean_nw": float(np.mean(v)), "share_below_half": float(np.mean(np.less(v, 0.5)))}
             for src, v in sorted(groups.items(), key=lambda kv: np.mean(kv[1]))}
    summary = {"runs": [str(r) for r in args.runs], "second_half_only": True, "left_out_unresolved": ambiguous,
               "by_source": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))

    fig, ax = plt.subplots(figsize=(9, 3.6))
    names = list(table)
    ax.boxplot([groups[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n({table[n]['patches']})" for n in names], fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(ylabel="N·w (1 = uniform)", title="BILD patch weights by source, second half of each run")
    fig.tight_layout()
    chart = args.out.with_name(args.out.name + "_chart.png")
    fig.savefig(chart, dpi=100)
    plt.close(fig)
    ranked = sorted(rows, key=lambda r: r["nw"])
    parts = [Image.open(chart).convert("RGB"),
             strip(ranked[: args.show], "lowest weights (hazy | target)"),
             strip(ranked[::-1][: args.show], "highest weights (hazy | target)")]
    chart.unlink()
    width = max(p.width for p in parts)
    sheet = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    top = 0
    for p in parts:
        sheet.paste(p, (0, top))
        top += p.height
    sheet.save(args.out.with_suffix(".png"))
    for src, row in table.items():
        print(f"{src:16s} patches {row['patches']:5d}  mean N·w {row['mean_nw']:.3f}  N·w < 0.5: {100 * row['share_below_half']:.1f} %")
    print(f"left out (file name in several folders or none): {ambiguous}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
