"""Scoring every method on every image of a dataset (:func:`evaluate`)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..data import Pair, load_pair
from ..io import read_image
from ..metrics import psnr, ssim
from .datasets import Dataset, open_dataset
from .grid import GRID_TILE_HEIGHT, Tile, _resize_to_height, _to_uint8
from .methods import EvalMethod, _check_outputs
from .no_reference import clipped_share, fade_or_none, haze_density
from .protocol import Protocol, Row


@dataclass
class DatasetResult:
    """Per-image rows of one dataset and, if requested, rows of grid tiles."""

    dataset: Dataset
    rows: list[Row]
    grid: list[list[Tile]] = field(default_factory=list)


def evaluate(
    dataset: str | Path | Dataset,
    methods: Sequence[EvalMethod],
    protocol: Protocol = Protocol(),
    *,
    limit: int | None = None,
    grid_images: int = 0,
    tile_height: int = GRID_TILE_HEIGHT,
    progress: bool = False,
) -> DatasetResult:
    """Score every method on every image of ``dataset`` (each image is read once).

    Paired images get PSNR and SSIM against the ground truth; every image gets the no-reference
    :func:`haze_density`, FADE (:func:`hazefree.metrics.fade.fade`) and :func:`clipped_share` of
    the input and of each output (after the protocol's clipping, quantisation and crop).

    Args:
        dataset: a folder (see :func:`open_dataset`) or an opened :class:`Dataset`.
        methods: from :func:`resolve_method` or :meth:`EvalMethod.from_function`.
        protocol: scoring protocol.
        limit: score only the first ``limit`` images (sorted by name).
        grid_images: keep tiles of the first ``grid_images`` images for :func:`make_grid`.
        tile_height: height the kept tiles are reduced to.
        progress: show a progress bar on stderr (when it is a terminal).

    Raises:
        ValueError: a ``folder:`` method lacks outputs, an output's size does not match, the crop is
            too large, or an image cannot be read.
    """
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if not methods:
        raise ValueError("no methods to evaluate")
    items = ds.items[:limit] if limit is not None else ds.items
    for m in methods:
        if m.outputs is not None:
            _check_outputs(m.outputs, ds, items)
    from tqdm import tqdm

    rows: list[Row] = []
    grid: list[list[Tile]] = []
    bar = tqdm(items, desc=ds.name, unit="image", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True)
    for k, item in enumerate(bar):
        if item.clear is not None:
            hazy, clear = load_pair(Pair(item.hazy, item.clear))
            target = protocol.prepare(clear)
        else:
            hazy, target = read_image(item.hazy).rgb, None
        hazy_scored = protocol.prepare(hazy)
        haze_in = haze_density(hazy_scored).item()
        fade_in, clipped_in = fade_or_none(hazy_scored), clipped_share(hazy_scored).item()
        tiles = None
        if k < grid_images:
            caption = f"hazy {item.name}" if target is not None else f"hazy, {_fade_caption(fade_in)} {item.name}"
            tiles = [Tile(_resize_to_height(_to_uint8(hazy), tile_height), caption)]
        for m in methods:
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = m.run(hazy, item, ds)
            seconds = None if m.outputs is not None else time.perf_counter() - t0
            if out.shape != hazy.shape:
                raise ValueError(f"{m.label}: output of shape {tuple(out.shape)} for {item.name}, "
                                 f"expected {tuple(hazy.shape)}")
            pred = protocol.prepare(out)
            p = s = None
            if target is not None:
                p = psnr(pred, target, y_channel=protocol.y_channel).item()
                s = ssim(pred, target, y_channel=protocol.y_channel, variant=protocol.ssim_variant).item()
            haze_out = haze_density(pred).item()
            rows.append(Row(ds.name, item.name, m.label, p, s, seconds, haze_in, haze_out,
                            fade_in, fade_or_none(pred), clipped_in, clipped_share(pred).item()))
            if tiles is not None:
                score = f"{p:.2f} dB" if p is not None else _fade_caption(rows[-1].fade_output)
                tiles.append(Tile(_resize_to_height(_to_uint8(out), tile_height), f"{m.label} {score}"))
        if tiles is not None:
            if target is not None:
                tiles.append(Tile(_resize_to_height(_to_uint8(clear), tile_height), "ground truth"))
            grid.append(tiles)
    return DatasetResult(ds, rows, grid)


def _fade_caption(value: float | None) -> str:
    """A tile's no-reference caption: its FADE (lower is clearer), or why there is none."""
    return "FADE n/a (< 16 px)" if value is None else f"FADE {value:.2f}"
