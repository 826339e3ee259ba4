"""Evaluation of dehazing methods: PSNR / SSIM tables on paired sets, no-reference measures (haze
density, FADE, clipped pixels) on every set, per-image CSV, Markdown reports and comparison grids.

The protocol is explicit because published numbers differ mostly by protocol (:class:`Protocol`):
by default every output is clipped to [0, 1] and quantised to 8 bits exactly as ``hazefree
dehaze`` would save it (round half up), then scored on RGB at full resolution with PSNR and SSIM
(Gaussian window sigma 1.5, scikit-image's ``gaussian_weights=True, use_sample_covariance=False``
convention); tables give the mean and the population standard deviation over the images.

Methods (:func:`resolve_method`): ``dcp``, any registry model with shipped weights, a weights file,
or ``folder:PATH``, the saved outputs of another method matched to the hazy images by name.

Datasets (:func:`open_dataset`): any layout :func:`hazefree.data.find_pairs` knows. Every image,
with or without ground truth, gets the no-reference :func:`haze_density`, FADE (Choi et al. 2015,
:func:`hazefree.metrics.fade.fade`) and :func:`clipped_share` of its input and of each output; a
folder with hazy images and no ground truth at all (``rtts/hazy/``) gets only these.

Modules: :mod:`.protocol` (how outputs are scored, one scored row), :mod:`.datasets`,
:mod:`.methods`, :mod:`.scoring` (:func:`evaluate`), :mod:`.no_reference` (measures without ground
truth), :mod:`.tables` (summaries, Markdown, CSV), :mod:`.grid`, :mod:`.report` and
:mod:`.command` (``hazefree eval``). Everything public is importable from here.

Example:
    >>> ds = open_dataset("../shared/data/rice1")
    >>> result = evaluate(ds, [resolve_method("dcp")])
    >>> print(dataset_table(summarize(result.rows), "rice1", ["dcp"]))
"""

from __future__ import annotations

from .command import add_eval_parser, run_eval
from .datasets import Dataset, Item, open_dataset
from .grid import GRID_CAPTION, GRID_GAP, GRID_MAX_ROWS, GRID_TILE_HEIGHT, Tile, _to_uint8, make_grid, write_grid
from .methods import EvalMethod, FolderOutputs, resolve_method
from .no_reference import (
    CLIPPED_DESCRIPTION,
    FADE_DESCRIPTION,
    HAZE_DENSITY_DESCRIPTION,
    clipped_share,
    fade_or_none,
    haze_density,
)
from .protocol import Protocol, Row
from .report import PAPER_DATASETS, PAPER_NOTE, PAPER_TABLE_I, paper_table, report_markdown
from .scoring import DatasetResult, evaluate
from .tables import (
    SCORES,
    dataset_table,
    fade_table,
    haze_table,
    markdown_table,
    no_reference_table,
    rows_to_csv,
    summarize,
    win_table,
)

__all__ = [
    "Protocol",
    "Row",
    "Item",
    "Dataset",
    "DatasetResult",
    "EvalMethod",
    "FolderOutputs",
    "Tile",
    "open_dataset",
    "resolve_method",
    "evaluate",
    "haze_density",
    "fade_or_none",
    "clipped_share",
    "summarize",
    "dataset_table",
    "markdown_table",
    "fade_table",
    "haze_table",
    "no_reference_table",
    "SCORES",
    "win_table",
    "make_grid",
    "write_grid",
    "rows_to_csv",
    "report_markdown",
    "paper_table",
    "PAPER_TABLE_I",
    "PAPER_NOTE",
    "PAPER_DATASETS",
    "HAZE_DENSITY_DESCRIPTION",
    "FADE_DESCRIPTION",
    "CLIPPED_DESCRIPTION",
    "add_eval_parser",
    "run_eval",
]
