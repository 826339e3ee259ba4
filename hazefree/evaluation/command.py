"""``hazefree eval``: its argument parser and what it runs (registered by :mod:`hazefree.cli`)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..io import atomic_write
from ..metrics import SSIM_VARIANTS
from .datasets import Dataset, open_dataset
from .grid import GRID_MAX_ROWS, write_grid
from .methods import _check_outputs, resolve_method
from .no_reference import CLIPPED_DESCRIPTION, FADE_DESCRIPTION, HAZE_DENSITY_DESCRIPTION
from .protocol import Protocol
from .report import report_markdown
from .scoring import DatasetResult, evaluate
from .tables import dataset_table, no_reference_table, rows_to_csv, summarize


def add_eval_parser(subparsers) -> None:
    """Register ``hazefree eval`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "eval",
        help="score methods on datasets (PSNR/SSIM tables, haze density without ground truth)",
        description=(
            "Score dehazing methods on dataset folders: PSNR and SSIM (mean ± std) against the ground "
            "truth for paired sets, and for hazy photos without ground truth the no-reference haze "
            "density of input and output. Prints one table per dataset with the protocol."
        ),
    )
    p.add_argument("--method", required=True,
                   help="comma-separated: dcp, registry models with shipped weights, weights files "
                        "(.safetensors), folder:PATH (saved outputs, matched by file name)")
    p.add_argument("--data", required=True,
                   help="comma-separated dataset folders (any layout find_pairs knows, or hazy photos only)")
    p.add_argument("--protocol", choices=["rgb", "y"], default="rgb", help="colour space scored")
    p.add_argument("--ssim", choices=list(SSIM_VARIANTS), default="skimage", help="SSIM window")
    p.add_argument("--crop", type=_whole, default=0, metavar="N", help="border pixels excluded from scoring")
    p.add_argument("--post", choices=["rescale", "retinex"],
                   help="post-process every output (Guided-Pix2Pix GP2P-Rescale / GP2P-Retinex)")
    p.add_argument("--limit", type=_whole, metavar="N", help="score only the first N images of each dataset")
    p.add_argument("--csv", metavar="FILE", help="per-image CSV output")
    p.add_argument("--report", metavar="FILE.md", help="Markdown report output")
    p.add_argument("--grid", metavar="FILE.png", help="comparison grid: hazy | each method | ground truth")
    p.add_argument("--grid-images", type=_whole, default=3, metavar="N",
                   help=f"images per dataset in the grid (default 3; at most {GRID_MAX_ROWS} rows in all)")
    p.set_defaults(func=run_eval)


def _whole(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _split(text: str, option: str) -> list[str]:
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not values:
        raise ValueError(f"{option}: nothing given")
    return values


def _open_datasets(paths: Sequence[str]) -> list[Dataset]:
    sets = [open_dataset(p) for p in paths]
    names = [d.name for d in sets]
    for d in sets:  # two folders of the same name: tell them apart by their parent
        if names.count(d.name) > 1:
            d.name = f"{d.root.resolve().parent.name}/{d.name}"
    return sets


def run_eval(args) -> int:
    """``hazefree eval``: see :func:`add_eval_parser`."""
    from ..postprocess import describe_post

    protocol = Protocol(y_channel=args.protocol == "y", ssim_variant=args.ssim, crop=args.crop)
    # Everything that can be refused is checked before the first image is scored.
    specs = _split(args.method, "--method")
    methods = [resolve_method(m, args.post) for m in specs]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):  # e.g. folder:a/out and folder:b/out: label by the full spec
        suffix = f"+{args.post}" if args.post else ""
        methods = [replace(m, label=spec + suffix) if labels.count(m.label) > 1 else m
                   for m, spec in zip(methods, specs)]
        labels = [m.label for m in methods]
    datasets = _open_datasets(_split(args.data, "--data"))
    limit = getattr(args, "limit", None)
    for ds in datasets:
        items = ds.items[:limit] if limit is not None else ds.items
        for m in methods:
            if m.outputs is not None:
                _check_outputs(m.outputs, ds, items)
    grid_images = args.grid_images if getattr(args, "grid", None) else 0
    if getattr(args, "grid", None) and grid_images == 0:
        raise ValueError("--grid needs --grid-images of at least 1")

    results: list[DatasetResult] = []
    for ds in datasets:
        if ds.unmatched:
            shown = ", ".join(p.name for p in ds.unmatched[:5]) + (" ..." if len(ds.unmatched) > 5 else "")
            print(f"note: {ds.root}: {len(ds.unmatched)} hazy image(s) without ground truth are not "
                  f"scored: {shown}", file=sys.stderr)
        res = evaluate(ds, methods, protocol, limit=limit, grid_images=grid_images, progress=True)
        results.append(res)
        kind = "pairs" if ds.paired else "hazy images without ground truth"
        n = len(res.rows) // len(methods)
        count = f"{n} of {len(ds.items)}" if n < len(ds.items) else f"{n}"
        print(f"\n{ds.name}: {count} {kind} in {ds.root}")
        print(protocol.describe())
        print(describe_post(args.post))
        for description in (HAZE_DENSITY_DESCRIPTION, FADE_DESCRIPTION, CLIPPED_DESCRIPTION):
            print(f"measure: {description}")
        summary = summarize(res.rows)
        print(dataset_table(summary, ds.name, labels), flush=True)
        if ds.paired:  # the no-reference measures of a paired set, beside its PSNR / SSIM
            print(no_reference_table(summary, ds.name, labels), flush=True)

    rows = [r for res in results for r in res.rows]
    if args.csv:
        text = rows_to_csv(rows)
        atomic_write(args.csv, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    if args.report:
        text = report_markdown(results, labels, protocol, args.post)
        atomic_write(args.report, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    if getattr(args, "grid", None):
        write_grid(args.grid, [tiles for res in results for tiles in res.grid])
    return 0
