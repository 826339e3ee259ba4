"""Evaluation of dehazing methods: PSNR / SSIM tables on paired sets, a no-reference haze measure
on hazy photos without ground truth, per-image CSV, Markdown reports and comparison grids.

The protocol is explicit because published numbers differ mostly by protocol (:class:`Protocol`):
by default every output is clipped to [0, 1] and quantised to 8 bits exactly as ``hazefree
dehaze`` would save it (round half up), then scored on RGB at full resolution with PSNR and SSIM
(Gaussian window sigma 1.5, scikit-image's ``gaussian_weights=True, use_sample_covariance=False``
convention); tables give the mean and the population standard deviation over the images.

Methods (:func:`resolve_method`): ``dcp``, any registry model with shipped weights, a weights file,
or ``folder:PATH``, the saved outputs of another method matched to the hazy images by name.

Datasets (:func:`open_dataset`): any layout :func:`hazefree.data.find_pairs` knows. A folder with
hazy images and no ground truth at all (``rtts/hazy/``) is scored with the no-reference
:func:`haze_density` of the input and of each output instead.

Example:
    >>> ds = open_dataset("../shared/data/rice1")
    >>> result = evaluate(ds, [resolve_method("dcp")])
    >>> print(dataset_table(summarize(result.rows), "rice1", ["dcp"]))
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from .data import CLEAR_DIRS, HAZY_DIRS, Pair, find_pairs, load_pair
from .io import IMAGE_EXTENSIONS, atomic_write, read_image
from .metrics import SSIM_VARIANTS, psnr, ssim
from .physics import airlight_dark_channel, check_image, dark_channel

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
    "summarize",
    "dataset_table",
    "markdown_table",
    "haze_table",
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
    "add_eval_parser",
    "run_eval",
]

# Comparison grid layout, in pixels: gap between tiles and around the grid, caption band under
# each tile (Pillow's default font is 10 px, about 12 px with descenders).
GRID_TILE_HEIGHT = 160
GRID_GAP = 4
GRID_CAPTION = 14
# At most this many image rows in a grid, whatever the number of datasets.
GRID_MAX_ROWS = 12

HAZE_DENSITY_DESCRIPTION = (
    "haze density = mean over the image of the dark channel of I / A (He et al. 2009, eq. 11 with "
    "omega = 1: the dark-channel estimate of the haze opacity 1 - t; A by the dark-channel rule), "
    "15 x 15 patch at a long side of at most 512 px; 0 = no haze by the prior, lower is clearer"
)


# ------------------------------------------------------------------------------------ protocol


@dataclass(frozen=True)
class Protocol:
    """How outputs are scored.

    Attributes:
        y_channel: score BT.601 luma (MATLAB ``rgb2ycbcr``) instead of RGB.
        ssim_variant: ``"skimage"``, ``"gaussian11"`` or ``"uniform7"`` (see :mod:`hazefree.metrics`).
        crop: border pixels removed from every side of output and reference before scoring.
        quantize: round to 8 bits as a saved PNG would (``floor(255 x + 0.5)``), after clipping.
    """

    y_channel: bool = False
    ssim_variant: str = "skimage"
    crop: int = 0
    quantize: bool = True

    def __post_init__(self) -> None:
        if self.ssim_variant not in SSIM_VARIANTS:
            raise ValueError(f"unknown SSIM variant {self.ssim_variant!r}; choose one of {SSIM_VARIANTS}")
        if not isinstance(self.crop, int) or self.crop < 0:
            raise ValueError(f"crop must be a whole number >= 0, got {self.crop!r}")

    def describe(self) -> str:
        """The protocol as one line, printed with every table."""
        space = "Y (BT.601, MATLAB rgb2ycbcr)" if self.y_channel else "RGB"
        quant = "8-bit quantised (round half up, as saved)" if self.quantize else "not quantised"
        return (f"protocol: {space}, SSIM={self.ssim_variant}, border crop={self.crop} px, "
                f"output clipped to [0,1], {quant}, full resolution; mean ± population std over images")

    def prepare(self, x: Tensor) -> Tensor:
        """Clip, quantise and crop an N x C x H x W image as the protocol says."""
        # float32 with the same operations as hazefree.io's writer, so that scoring an output in
        # memory and scoring its saved PNG give identical numbers.
        x = x.float().clamp(0.0, 1.0)
        if self.quantize:
            x = torch.floor(x * 255.0 + 0.5) / 255.0
        c = self.crop
        if c:
            if 2 * c >= min(x.shape[-2:]):
                h, w = x.shape[-2:]
                raise ValueError(f"a border crop of {c} px leaves no pixels of a {h} x {w} image")
            x = x[..., c:-c, c:-c]
        return x


@dataclass(frozen=True)
class Row:
    """One scored (image, method): full-reference scores (None without ground truth), the method's
    run time (None for saved outputs) and the haze density of the input and of the output."""

    dataset: str
    image: str
    method: str
    psnr: float | None
    ssim: float | None
    seconds: float | None
    haze_input: float | None = None
    haze_output: float | None = None


# --------------------------------------------------------------------------- no-reference measure


def haze_density(image: Tensor, patch_size: int = 15, max_side: int = 512) -> Tensor:
    """No-reference haze measure: the mean dark channel of ``I / A`` (lower = less haze).

    Why this measure: by the dark channel prior (He et al., CVPR 2009) a haze-free outdoor image has
    a dark channel near 0 almost everywhere, and for a hazy image ``I = J t + A (1 - t)`` it gives
    ``dark(I / A) = 1 - t`` (He et al. eq. 11 with omega = 1). Its mean is therefore an estimate of
    the average haze opacity, in [0, 1], from the photo alone. Dividing by the airlight ``A``
    (estimated on the same image) makes it invariant to exposure: darkening an image, which lowers
    a raw mean dark channel, does not count as dehazing. A contrast-gain measure was the other
    candidate; it needs the input to compare with and rewards over-enhancement and noise, whereas
    this is a property of one image and is computed the same way for input and output.

    Limits: bright objects and sky read as haze (the prior does not hold there), so compare an
    output with its own input rather than different photos; it is blind to colour casts and
    artefacts and favours DCP, whose output it is built to minimise. The image is first reduced
    (area averaging) to a long side of at most ``max_side`` px so that the 15 x 15 patch covers a
    similar part of the scene at any resolution.

    Args:
        image: N x 3 x H x W float tensor in [0, 1].
        patch_size: dark-channel window (odd; He et al. use 15).
        max_side: long side the image is reduced to before measuring (never enlarged).

    Returns:
        float64 tensor of shape N, values in [0, 1].

    Example:
        >>> clear = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6
        >>> hazy = clear * 0.4 + 0.9 * 0.6                       # t = 0.4, A = 0.9
        >>> bool(haze_density(hazy) > haze_density(clear))
        True
    """
    check_image(image, "haze_density: image")
    if max_side < patch_size:
        raise ValueError(f"max_side ({max_side}) must be at least patch_size ({patch_size})")
    x = image.float()
    h, w = x.shape[-2:]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    a = airlight_dark_channel(x, patch_size)
    return dark_channel((x / a).clamp(max=1.0), patch_size).mean(dim=(1, 2, 3)).double()


# ------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Item:
    """One image to score: ``name`` is the hazy file's path relative to the hazy folder."""

    name: str
    hazy: Path
    clear: Path | None = None


@dataclass
class Dataset:
    """A dataset folder: its images, with ground truth (paired) or without (hazy-only)."""

    name: str
    root: Path
    hazy_dir: Path
    items: list[Item]
    unmatched: list[Path] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return all(i.clear is not None for i in self.items)


def _subfolder(root: Path, aliases: Sequence[str]) -> Path | None:
    by_lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((by_lower[a] for a in aliases if a in by_lower), None)


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files and folders skipped), sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def open_dataset(path: str | Path, name: str | None = None) -> Dataset:
    """The images of a dataset folder, paired with their ground truth when there is one.

    A folder in a layout :func:`hazefree.data.find_pairs` knows gives pairs (hazy images without
    a partner are kept in ``unmatched``). A folder without any ground-truth folder (``clear/``,
    ``GT/``, ...) gives its hazy images (from ``hazy/`` if present, else the folder itself) for
    no-reference scoring.

    Raises:
        ValueError: the folder does not exist, or has a ground-truth folder but no pairs, or holds
            no images.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    name = name or root.resolve().name
    try:
        found = find_pairs(root, warn=False)
    except ValueError as exc:
        clear_dir = _subfolder(root, CLEAR_DIRS)
        if clear_dir is not None:  # ground truth is there but nothing matches: refuse, say why
            raise ValueError(f"{exc}; {clear_dir.name}/ exists, so its names must match the hazy ones") from None
        hazy_dir = _subfolder(root, HAZY_DIRS) or root
        files = _image_files(hazy_dir)
        if not files:
            raise ValueError(
                f"{root}: no hazy/clear pairs and no images (looked for hazy/ + clear/ or GT/ "
                f"sub-folders, or image files {', '.join(sorted(IMAGE_EXTENSIONS))})"
            ) from None
        items = [Item(p.relative_to(hazy_dir).as_posix(), p) for p in files]
        return Dataset(name, root, hazy_dir, items)
    hazy_dir = found.pairs[0].hazy.parent
    items = [Item(p.hazy.name, p.hazy, p.clear) for p in found.pairs]
    return Dataset(name, root, hazy_dir, items, list(found.unmatched))


# -------------------------------------------------------------------------------------- methods


class FolderOutputs:
    """Saved outputs of a method (``folder:PATH``), found for each hazy image by name.

    For a hazy image ``hazy/sub/x.jpg`` of dataset ``D``, the output is looked for first in
    ``PATH/D/`` (one sub-folder per dataset) and then in ``PATH/``, as ``sub/x.*`` (the layout
    ``hazefree dehaze D/hazy -o PATH`` writes), ``hazy/sub/x.*`` (``hazefree dehaze D -o PATH``),
    and finally as the only file with stem ``x`` anywhere below.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"folder:{root}: no such folder")
        self._index: dict[Path, tuple[dict[tuple[str, str], Path], dict[str, list[Path]]]] = {}

    def _indexed(self, base: Path) -> tuple[dict[tuple[str, str], Path], dict[str, list[Path]]]:
        if base not in self._index:
            by_rel: dict[tuple[str, str], Path] = {}
            by_stem: dict[str, list[Path]] = {}
            for p in _image_files(base):
                rel = p.relative_to(base)
                by_rel.setdefault((rel.parent.as_posix(), rel.stem), p)
                by_stem.setdefault(p.stem, []).append(p)
            self._index[base] = (by_rel, by_stem)
        return self._index[base]

    def locate(self, dataset: Dataset, item: Item) -> Path | None:
        """The saved output for ``item``, or None."""
        bases = [b for b in (self.root / dataset.name, self.root) if b.is_dir()]
        rels = [item.hazy.relative_to(dataset.hazy_dir)]
        if dataset.hazy_dir != dataset.root:
            rels.append(item.hazy.relative_to(dataset.root))
        for base in bases:
            by_rel, by_stem = self._indexed(base)
            for rel in rels:
                hit = by_rel.get((rel.parent.as_posix(), rel.stem))
                if hit is not None:
                    return hit
            candidates = by_stem.get(item.hazy.stem, [])
            if len(candidates) == 1:
                return candidates[0]
        return None

    def missing(self, dataset: Dataset) -> list[Item]:
        """Items of ``dataset`` without a saved output."""
        return [i for i in dataset.items if self.locate(dataset, i) is None]

    def load(self, dataset: Dataset, item: Item, like: Tensor) -> Tensor:
        """Read the output for ``item`` as 1 x 3 x H x W, matched to the hazy tensor ``like``.

        An output the size of the original hazy file is centre-cropped when the evaluation cropped
        the pair to a common size (as :func:`hazefree.data.load_pair` does).
        """
        path = self.locate(dataset, item)
        if path is None:
            raise ValueError(f"folder:{self.root}: no output for {item.name}")
        out = read_image(path).rgb
        (h, w), (oh, ow) = like.shape[-2:], out.shape[-2:]
        if (oh, ow) != (h, w):
            # Only an output of the hazy file's own size may be cropped to the scored region; any
            # other size means the outputs do not belong to these images.
            original = read_image(item.hazy).size
            if (oh, ow) != original:
                raise ValueError(f"{path}: output is {oh} x {ow}, the hazy image {item.name} is "
                                 f"{original[0]} x {original[1]}")
            top, left = (oh - h) // 2, (ow - w) // 2
            out = out[..., top : top + h, left : left + w]
        return out


@dataclass(frozen=True)
class EvalMethod:
    """A method under evaluation: a table label and ``run(hazy, item, dataset) -> output``.

    ``outputs`` is set for ``folder:`` methods (their run time is not measured).
    """

    label: str
    run: Callable[[Tensor, Item, Dataset], Tensor]
    outputs: FolderOutputs | None = None

    @classmethod
    def from_function(cls, label: str, fn: Callable[[Tensor], Tensor]) -> "EvalMethod":
        """Wrap a plain ``hazy 1 x 3 x H x W -> clear`` function."""
        return cls(label, lambda hazy, item, dataset: fn(hazy))


def resolve_method(spec: str, post: str | None = None) -> EvalMethod:
    """An :class:`EvalMethod` from its command-line name.

    Args:
        spec: ``dcp``, a registry model with shipped weights, a weights file (``.safetensors``,
            ``.pt``, ``.pth``) or ``folder:PATH``.
        post: ``"rescale"``, ``"retinex"`` or None; applied to the method's output and added to
            its label (``dcp+retinex``).

    Raises:
        ValueError: unknown method or post-processing, missing folder.
        FileNotFoundError: a registry model without shipped weights.
    """
    from . import models
    from .api import Dehazer
    from .postprocess import get_post

    post_fn = get_post(post)
    suffix = f"+{post}" if post_fn is not None else ""
    if spec.startswith("folder:"):
        outputs = FolderOutputs(spec[len("folder:"):])

        def run_folder(hazy: Tensor, item: Item, dataset: Dataset) -> Tensor:
            out = outputs.load(dataset, item, like=hazy)
            return out if post_fn is None else post_fn(out)

        return EvalMethod(f"folder:{outputs.root.name}{suffix}", run_folder, outputs)
    try:
        dehazer = Dehazer(spec, post=post)
    except KeyError:
        if Path(spec).suffix in {".safetensors", ".pt", ".pth"}:
            raise
        raise ValueError(
            f"unknown method {spec!r}; available: {', '.join(models.available())}, a weights file "
            "(.safetensors, .pt, .pth) or folder:PATH (saved outputs)"
        ) from None
    return EvalMethod(spec + suffix, lambda hazy, item, dataset: dehazer(hazy).clear)


# ----------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Tile:
    """One picture of a comparison grid (H x W x 3 uint8) and the caption under it."""

    image: np.ndarray
    caption: str


@dataclass
class DatasetResult:
    """Per-image rows of one dataset and, if requested, rows of grid tiles."""

    dataset: Dataset
    rows: list[Row]
    grid: list[list[Tile]] = field(default_factory=list)


def _to_uint8(x: Tensor) -> np.ndarray:
    return (x[0].float().clamp(0, 1) * 255.0 + 0.5).floor().byte().permute(1, 2, 0).numpy()


def _resize_to_height(pixels: np.ndarray, height: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))


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

    Paired images get PSNR and SSIM against the ground truth; every image gets the
    :func:`haze_density` of the input and of each output (after the protocol's clipping,
    quantisation and crop).

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
        tiles = None
        if k < grid_images:
            caption = f"hazy {item.name}" if target is not None else f"hazy, haze {haze_in:.3f} {item.name}"
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
            rows.append(Row(ds.name, item.name, m.label, p, s, seconds, haze_in, haze_out))
            if tiles is not None:
                score = f"{p:.2f} dB" if p is not None else f"haze {haze_out:.3f}"
                tiles.append(Tile(_resize_to_height(_to_uint8(out), tile_height), f"{m.label} {score}"))
        if tiles is not None:
            if target is not None:
                tiles.append(Tile(_resize_to_height(_to_uint8(clear), tile_height), "ground truth"))
            grid.append(tiles)
    return DatasetResult(ds, rows, grid)


def _check_outputs(outputs: FolderOutputs, ds: Dataset, items: Sequence[Item]) -> None:
    missing = [i.name for i in items if outputs.locate(ds, i) is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"folder:{outputs.root}: no output for {len(missing)} of {len(items)} images of {ds.name} "
            f"(looked for the hazy file names, any image extension, in {outputs.root / ds.name} and "
            f"{outputs.root}): {shown}"
        )


# --------------------------------------------------------------------------------------- tables


def _stats(values: list[float]) -> tuple[float, float]:
    if any(math.isinf(v) for v in values):  # a perfect output (PSNR = inf): no finite mean or spread
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def summarize(rows: Iterable[Row]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Per (dataset, method): image count ``n``, mean and population std of ``psnr``, ``ssim``,
    ``haze_input`` and ``haze_output`` (None where not measured), and mean ``seconds``."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.method), []).append(r)
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, rs in groups.items():
        entry: dict[str, float | None] = {"n": len(rs)}
        for name in ("psnr", "ssim", "haze_input", "haze_output"):
            values = [getattr(r, name) for r in rs]
            if any(v is None for v in values):
                entry[name] = entry[f"{name}_std"] = None
            else:
                entry[name], entry[f"{name}_std"] = _stats(values)
        times = [r.seconds for r in rs]
        entry["seconds"] = None if any(t is None for t in times) else statistics.fmean(times)
        out[key] = entry
    return out


def _pm(v: dict, key: str, digits: int) -> str:
    if v is None or v.get(key) is None:
        return "-"
    return f"{v[key]:.{digits}f} ± {v[key + '_std']:.{digits}f}"


def _md(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def dataset_table(summary: Mapping[tuple[str, str], dict], dataset: str, methods: Sequence[str]) -> str:
    """Table-I-style Markdown table of one dataset: methods as columns, PSNR / SSIM (mean ± std)
    as rows, or the haze density of input and outputs for a dataset without ground truth."""
    stats = [summary.get((dataset, m)) for m in methods]
    known = [s for s in stats if s is not None]
    if not known:
        raise ValueError(f"no results for dataset {dataset!r}")
    n = int(known[0]["n"])
    secs = ["-" if s is None or s["seconds"] is None else f"{s['seconds']:.3f}" for s in stats]
    if known[0]["psnr"] is not None:
        body = [["PSNR (dB)", *(_pm(s, "psnr", 2) for s in stats)],
                ["SSIM", *(_pm(s, "ssim", 4) for s in stats)],
                ["seconds / image", *secs]]
        return _md([f"{dataset} (n = {n})", *methods], body)
    body = [["haze density (lower = clearer)", _pm(known[0], "haze_input", 3),
             *(_pm(s, "haze_output", 3) for s in stats)],
            ["seconds / image", "-", *secs]]
    return _md([f"{dataset} (n = {n}, no ground truth)", "hazy input", *methods], body)


def markdown_table(summary: Mapping[tuple[str, str], dict], methods: Sequence[str]) -> str:
    """Overview of the paired datasets: one row per dataset, ``PSNR ± std / SSIM ± std`` per method."""
    datasets = [d for d in dict.fromkeys(d for d, _ in summary)
                if any(v["psnr"] is not None for (dd, _), v in summary.items() if dd == d)]
    body = []
    for d in datasets:
        n = next(int(v["n"]) for (dd, _), v in summary.items() if dd == d)
        cells = []
        for m in methods:
            v = summary.get((d, m))
            cells.append("-" if v is None else f"{_pm(v, 'psnr', 2)} / {_pm(v, 'ssim', 4)}")
        body.append([f"{d} ({n})", *cells])
    return _md(["dataset (n)", *methods], body)


def win_table(rows: Iterable[Row], methods: Sequence[str], references: Sequence[str]) -> str:
    """Per-image robustness of each method against each reference (e.g. DCP and the hazy input):
    the share of images on which its PSNR is higher, and the worst image's PSNR margin, per dataset.

    A mean gain can hide images that a method makes worse; the win rate and the worst margin show them.
    """
    psnr: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r.psnr is not None:
            psnr.setdefault((r.dataset, r.method), {})[r.image] = r.psnr
    datasets = list(dict.fromkeys(d for d, _ in psnr))
    pairs = [(m, ref) for m in methods for ref in references if m != ref]
    body = []
    for d in datasets:
        cells = []
        for m, ref in pairs:
            ours, theirs = psnr.get((d, m), {}), psnr.get((d, ref), {})
            common = [i for i in ours if i in theirs]
            if not common:
                cells.append("-")
                continue
            margins = [ours[i] - theirs[i] for i in common]
            wins = sum(x > 0 for x in margins)
            cells.append(f"{wins}/{len(common)}, worst {min(margins):+.2f}")
        body.append([d, *cells])
    return _md(["dataset", *(f"{m} vs {ref}" for m, ref in pairs)], body)


def haze_table(summary: Mapping[tuple[str, str], dict], methods: Sequence[str]) -> str:
    """Haze density (mean ± std) of the inputs and of each method's outputs, one row per dataset."""
    datasets = list(dict.fromkeys(d for d, _ in summary))
    body = []
    for d in datasets:
        first = next(v for (dd, _), v in summary.items() if dd == d)
        body.append([f"{d} ({int(first['n'])})", _pm(first, "haze_input", 3),
                     *(_pm(summary.get((d, m)), "haze_output", 3) for m in methods)])
    return _md(["dataset (n)", "hazy input", *methods], body)


def rows_to_csv(rows: Iterable[Row]) -> str:
    """Per-image CSV: dataset, image, method, psnr, ssim, seconds, haze_input, haze_output
    (empty cells where a value was not measured)."""

    def fmt(v: float | None, digits: int) -> str:
        return "" if v is None else ("inf" if math.isinf(v) else f"{v:.{digits}f}")

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "image", "method", "psnr", "ssim", "seconds", "haze_input", "haze_output"])
    for r in rows:
        w.writerow([r.dataset, r.image, r.method, fmt(r.psnr, 4), fmt(r.ssim, 6), fmt(r.seconds, 4),
                    fmt(r.haze_input, 5), fmt(r.haze_output, 5)])
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- grid


def make_grid(rows: Sequence[Sequence[Tile]], tile_height: int = GRID_TILE_HEIGHT) -> Image.Image:
    """A comparison grid: one row of tiles per image, each resized to ``tile_height`` (aspect kept)
    with its caption under it in Pillow's default font (cut to the tile's width).

    The size is ``GRID_GAP + max over rows of sum(tile width + GRID_GAP)`` by
    ``GRID_GAP + len(rows) * (tile_height + GRID_CAPTION + GRID_GAP)`` pixels, white background.

    Returns:
        An RGB ``PIL.Image.Image``.
    """
    if not rows or not all(rows):
        raise ValueError("make_grid: no tiles")
    if tile_height < 1:
        raise ValueError(f"make_grid: tile_height must be >= 1, got {tile_height}")
    scaled = [[(_resize_to_height(t.image, tile_height), t.caption) for t in row] for row in rows]
    width = GRID_GAP + max(sum(p.shape[1] + GRID_GAP for p, _ in row) for row in scaled)
    height = GRID_GAP + len(scaled) * (tile_height + GRID_CAPTION + GRID_GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = GRID_GAP
    for row in scaled:
        x = GRID_GAP
        for pixels, caption in row:
            canvas.paste(Image.fromarray(pixels), (x, y))
            text = caption
            while text and draw.textlength(text) > pixels.shape[1]:
                text = text[:-4] + "..." if len(text) > 4 else ""
            draw.text((x, y + tile_height), text, fill="black")
            x += pixels.shape[1] + GRID_GAP
        y += tile_height + GRID_CAPTION + GRID_GAP
    return canvas


def write_grid(path: str | Path, rows: Sequence[Sequence[Tile]], tile_height: int = GRID_TILE_HEIGHT) -> None:
    """Write :func:`make_grid` as a PNG (atomically); at most ``GRID_MAX_ROWS`` rows are used."""
    image = make_grid(list(rows)[:GRID_MAX_ROWS], tile_height)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


# -------------------------------------------------------------------------------- paper values

# Published numbers for reference, never mixed with ours: Ma et al. 2021 (Guided-Pix2Pix), Table I,
# PSNR / SSIM mean ± std on the full SOTS indoor/outdoor and O-HAZE sets (their protocol).
PAPER_TABLE_I = {
    "SOTS indoor": {"DCP": "12.24 ± 5.19 / 0.6678 ± 0.1741", "AOD-Net": "18.73 ± 3.22 / 0.8290 ± 0.0823",
                    "GP2P-G": "16.71 ± 3.59 / 0.7833 ± 0.0815",
                    "GP2P-Rescale": "14.48 ± 3.53 / 0.6910 ± 0.0810",
                    "GP2P-Retinex": "12.32 ± 2.34 / 0.6456 ± 0.1042"},
    "SOTS outdoor": {"DCP": "15.53 ± 5.19 / 0.7877 ± 0.1633", "AOD-Net": "19.50 ± 2.25 / 0.8549 ± 0.0485",
                     "GP2P-G": "21.42 ± 2.47 / 0.8448 ± 0.0673",
                     "GP2P-Rescale": "17.17 ± 2.40 / 0.7588 ± 0.0545",
                     "GP2P-Retinex": "13.58 ± 1.71 / 0.6564 ± 0.0835"},
    "O-HAZE": {"DCP": "13.18 ± 5.12 / 0.5274 ± 0.1596", "AOD-Net": "14.83 ± 1.53 / 0.4670 ± 0.1045",
               "GP2P-G": "16.05 ± 3.18 / 0.5654 ± 0.1301",
               "GP2P-Rescale": "10.38 ± 2.12 / 0.4590 ± 0.0998",
               "GP2P-Retinex": "10.99 ± 1.83 / 0.4438 ± 0.0901"},
}
# Our dataset folders and the paper's sets they are samples of.
PAPER_DATASETS = {"sots_indoor": "SOTS indoor", "sots_outdoor": "SOTS outdoor", "ohaze": "O-HAZE"}


def paper_table() -> str:
    """The paper's Table I values (PSNR / SSIM), as Markdown, marked as the paper's."""
    cols = ["DCP", "AOD-Net", "GP2P-G", "GP2P-Rescale", "GP2P-Retinex"]
    return _md(["dataset (paper's full sets)", *(f"{c} (paper)" for c in cols)],
               [[d, *(vals[c] for c in cols)] for d, vals in PAPER_TABLE_I.items()])


PAPER_NOTE = ("Published values, Ma et al. 2021 (Guided-Pix2Pix, JSTARS), Table I: PSNR (dB) / SSIM, "
              "mean ± std on the full test sets with the authors' protocol and models. They are the "
              "paper's numbers, not ours, and not comparable image for image.")


# ------------------------------------------------------------------------------------------ CLI


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


def report_markdown(results: Sequence[DatasetResult], methods: Sequence[str], protocol: Protocol,
                    post: str | None, title: str = "hazefree evaluation") -> str:
    """A Markdown report: protocol, one table per dataset, then the paper's values, marked as such."""
    from .postprocess import describe_post

    rows = [r for res in results for r in res.rows]
    summary = summarize(rows)
    parts = [f"# {title}", "", protocol.describe(), "", describe_post(post), ""]
    for res in results:
        ds = res.dataset
        parts += [f"## {ds.name}", "", f"{len(res.rows) // max(1, len(methods))} images from `{ds.root}`", ""]
        if not ds.paired:
            parts += [f"No ground truth; measure: {HAZE_DENSITY_DESCRIPTION}.", ""]
        parts += [dataset_table(summary, ds.name, methods), ""]
    parts += ["## Published values (not ours)", "", PAPER_NOTE, "", paper_table(), ""]
    return "\n".join(parts)


def run_eval(args) -> int:
    """``hazefree eval``: see :func:`add_eval_parser`."""
    from .postprocess import describe_post

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
        if not ds.paired:
            print(f"measure: {HAZE_DENSITY_DESCRIPTION}")
        print(dataset_table(summarize(res.rows), ds.name, labels), flush=True)

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
