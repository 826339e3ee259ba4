"""Datasets: pairing rules of the benchmarks' real layouts, synthetic haze, deterministic crops.

Pairing (``find_pairs``) understands, under one root folder:

* ``hazy/`` + ``clear/`` (aliases: ``GT``, ``gt``, ``label``, ``clean``, ``target``,
  ``ground_truth``; for the hazy side ``haze``, ``cloud``, ``cloudy``, ``input``) with
    - identical names (SOTS as packaged by DehazeFormer, RICE ``cloud``/``label``),
    - RESIDE names: ``1410_3.png`` -> ``1410.png``, ``0001_0.8_0.2.jpg`` -> ``0001.png`` (the scene
      id before the first underscore),
    - O-HAZE / I-HAZE / NH-HAZE names: ``35_outdoor_hazy.jpg`` <-> ``35_outdoor_GT.jpg``,
      ``01_hazy.png`` <-> ``01_GT.png`` (the ``hazy`` token replaced by ``GT``/``clear``);
* one flat folder holding both ``*_hazy.*`` and ``*_GT.*`` files (the NTIRE archives);
* a user pattern: a regular expression with a named group ``key`` matched against the hazy stem,
  the clear image being the one whose stem equals ``key``.

Hazy images without a clear partner are reported (``PairSet.unmatched``, and a warning), never
silently dropped. Tensors follow the library contract: float32 N x C x H x W in [0, 1].
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import IMAGE_EXTENSIONS, ImageReadError, atomic_write, read_image
from .physics import add_haze, fit_haze_model

__all__ = [
    "Pair",
    "PairSet",
    "find_pairs",
    "load_pair",
    "center_crop_to_match",
    "MAX_CROP_BORDER",
    "split_unpaired",
    "read_airlights",
    "write_airlights",
    "read_depth",
    "DepthSample",
    "find_depth_samples",
    "synthesize_haze",
    "PairBank",
    "source_labels",
    "CropSampler",
]

HAZY_DIRS = ("hazy", "haze", "cloud", "cloudy", "input", "inputs")
CLEAR_DIRS = ("clear", "gt", "label", "clean", "target", "ground_truth", "groundtruth")
_HAZY_TOKEN = re.compile(r"(?i)(^|[_\-])hazy($|[_\-])")
_CLEAR_TOKENS = ("GT", "gt", "clear", "clean")


@dataclass(frozen=True)
class Pair:
    """A hazy image and its haze-free ground truth."""

    hazy: Path
    clear: Path

    @property
    def name(self) -> str:
        return self.hazy.stem


@dataclass
class PairSet:
    """Pairs found under a root, and the hazy files that have no partner."""

    root: Path
    pairs: list[Pair] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subdir(root: Path, aliases: Sequence[str]) -> Path | None:
    by_lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for alias in aliases:
        if alias in by_lower:
            return by_lower[alias]
    return None


def _candidates(stem: str) -> list[str]:
    """Clear-image stems that may belong to hazy ``stem``, most specific first."""
    out = [stem]
    if _HAZY_TOKEN.search(stem):
        out += [_HAZY_TOKEN.sub(lambda m: f"{m.group(1)}{tok}{m.group(2)}", stem) for tok in _CLEAR_TOKENS]
    if "_" in stem:
        out.append(stem.split("_", 1)[0])  # RESIDE: scene id before the haze parameters
    return out


def _match(hazy: list[Path], clear: list[Path], pattern: str | None) -> tuple[list[Pair], list[Path]]:
    by_stem = {p.stem: p for p in clear}
    regex = re.compile(pattern) if pattern else None
    pairs, unmatched = [], []
    for h in hazy:
        if regex is not None:
            m = regex.fullmatch(h.stem)
            if m is None or "key" not in m.groupdict():
                unmatched.append(h)
                continue
            keys = [m.group("key")]
        else:
            keys = _candidates(h.stem)
        partner = next((by_stem[k] for k in keys if k in by_stem and by_stem[k] != h), None)
        if partner is None:
            unmatched.append(h)
        else:
            pairs.append(Pair(h, partner))
    return pairs, unmatched


def find_pairs(root: str | Path, pattern: str | None = None, warn: bool = True) -> PairSet:
    """Find hazy/clear pairs under ``root`` (see the module docstring for the layouts).

    Args:
        root: dataset folder.
        pattern: optional regular expression with a ``key`` group for the hazy stem.
        warn: emit a warning that lists unmatched hazy images.

    Raises:
        ValueError: ``root`` is not a folder, or no pairs are found (the message says what was
            looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    hazy_dir, clear_dir = _subdir(root, HAZY_DIRS), _subdir(root, CLEAR_DIRS)
    if hazy_dir is not None and clear_dir is not None:
        pairs, unmatched = _match(_images(hazy_dir), _images(clear_dir), pattern)
    else:
        files = _images(root)
        hazy = [p for p in files if _HAZY_TOKEN.search(p.stem)] if pattern is None else files
        clear = [p for p in files if p not in hazy] if pattern is None else files
        pairs, unmatched = _match(hazy, clear, pattern)
    if not pairs:
        raise ValueError(
            f"{root}: no hazy/clear pairs found (looked for sub-folders {HAZY_DIRS[0]}/ + "
            f"{CLEAR_DIRS[0]}/ or GT/, RESIDE, O-HAZE and NH-HAZE names"
            + (f", pattern {pattern!r}" if pattern else "") + ")"
        )
    if unmatched and warn:
        shown = ", ".join(p.name for p in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        warnings.warn(f"{root}: {len(unmatched)} hazy image(s) without a clear partner: {shown}")
    return PairSet(root, pairs, unmatched)


def split_unpaired(root: str | Path, holdout: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(training, held-out) images of a ``hazy/``-only folder of photos without ground truth
    (``train/real_unpaired``): a seeded random ``holdout`` share of the files, in sorted order, so that
    every tool that trains or validates on the folder draws the same split."""
    root = Path(root)
    folder = _subdir(root, HAZY_DIRS) if root.is_dir() else None
    files = _images(folder) if folder is not None else []
    if not files:
        raise ValueError(f"{root}: no images in a hazy/ sub-folder")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[: int(round(holdout * len(files)))])
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


AIRLIGHTS_FILE = "airlights.json"


def write_airlights(root: str | Path, airlights: Mapping[str, Sequence[float] | Tensor]) -> None:
    """Record the airlight that relates each pair of a paired folder, ``root/airlights.json``
    ({hazy stem: [r, g, b]}), for pairs whose A is known but cannot be fitted (e.g. a teacher's
    tinted A, where :func:`~hazefree.physics.fit_haze_model` fits grey ones); :class:`PairBank`
    reads it."""
    values = {k: [float(x) for x in torch.as_tensor(v).flatten()] for k, v in airlights.items()}
    text = json.dumps(values, indent=0)
    atomic_write(Path(root) / AIRLIGHTS_FILE, lambda tmp: Path(tmp).write_text(text))


def read_airlights(root: str | Path) -> dict[str, Tensor]:
    """{hazy stem: A (3,)} from ``root/airlights.json``, or {} when the folder has none."""
    path = Path(root) / AIRLIGHTS_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
        out = {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a {{stem: [r, g, b]}} JSON object ({e})") from None
    bad = [k for k, v in out.items() if v.shape != (3,) or not bool(((v >= 0) & (v <= 1)).all())]
    if bad:
        raise ValueError(f"{path}: airlights must be three values in [0, 1]; bad: {', '.join(bad[:5])}")
    return out


def center_crop_to_match(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Centre-crop both N x C x H x W tensors to their common (minimum) size."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])

    def crop(x: Tensor) -> Tensor:
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        return x[..., top : top + h, left : left + w]

    return crop(a), crop(b)


# The largest border, in pixels per side, by which a pair's two images may differ in size and still be
# centre-cropped to their common size: the official SOTS-indoor ground truth (640 x 480) has a 10 px
# frame around its hazy images (620 x 460). A larger difference is a different picture (a resized or
# re-cropped copy), whose crop would pair different content.
MAX_CROP_BORDER = 16


def load_pair(pair: Pair, allow_size_mismatch: bool = False) -> tuple[Tensor, Tensor]:
    """Read a pair as two 1 x 3 x H x W tensors of equal size.

    Sizes that differ by a border of at most :data:`MAX_CROP_BORDER` pixels per side (e.g. official
    SOTS-indoor GT 640 x 480 vs hazy 620 x 460) are centre-cropped to the common size, with a
    warning. A larger difference raises ValueError naming both files and sizes, unless
    ``allow_size_mismatch`` (then it is cropped too).
    """
    hazy, clear = read_image(pair.hazy).rgb, read_image(pair.clear).rgb
    if hazy.shape[-2:] != clear.shape[-2:]:
        (hh, hw), (ch, cw) = hazy.shape[-2:], clear.shape[-2:]
        if max(abs(hh - ch), abs(hw - cw)) > 2 * MAX_CROP_BORDER and not allow_size_mismatch:
            raise ValueError(
                f"{pair.hazy} is {hw} x {hh} pixels but its clear image {pair.clear} is {cw} x {ch}: more than "
                f"a {MAX_CROP_BORDER} px border apart, so not the same view (a resized copy?); fix the pair, or "
                "train with --allow-size-mismatch (data.allow_size_mismatch) to centre-crop it anyway"
            )
        warnings.warn(
            f"{pair.hazy.name}: hazy {tuple(hazy.shape[-2:])} and clear {tuple(clear.shape[-2:])} "
            "differ in size; centre-cropped to the common size"
        )
        hazy, clear = center_crop_to_match(hazy, clear)
    return hazy, clear


# --- synthetic haze from clear + depth ------------------------------------------------------


@dataclass(frozen=True)
class DepthSample:
    """A clear image and its depth (or disparity) map, as stored in ``clear/`` + ``depth/``."""

    clear: Path
    depth: Path
    disparity: bool


def find_depth_samples(root: str | Path) -> list[DepthSample]:
    """Pairs ``root/clear/<stem>.*`` + ``root/depth/<stem>.*``.

    8-bit depth files are taken as Middlebury disparity (larger = nearer, 0 = unknown); 16-bit
    files as metric depth from a depth sensor (0 = unknown).
    """
    root = Path(root)
    clear_dir, depth_dir = root / "clear", root / "depth"
    if not (clear_dir.is_dir() and depth_dir.is_dir()):
        raise ValueError(f"{root}: expected sub-folders clear/ and depth/")
    depth_files = {p.stem: p for p in depth_dir.iterdir() if p.is_file()}
    out = []
    for c in _images(clear_dir):
        d = depth_files.get(c.stem)
        if d is None:
            warnings.warn(f"{c}: no depth map in {depth_dir}")
            continue
        out.append(DepthSample(c, d, disparity=_bit_depth(d) == 8))
    if not out:
        raise ValueError(f"{root}: no clear/depth pairs found")
    return out


def _bit_depth(path: Path) -> int:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"{path}: cannot read depth map")
    return 16 if arr.dtype == np.uint16 else 8


def read_depth(sample: DepthSample) -> Tensor:
    """Relative depth in [0, 1] (1 = farthest), 1 x 1 x H x W; unknown pixels are set to the farthest.

    Disparity is converted to depth as 1 / disparity; both are normalised by their maximum so that
    ``beta`` in :func:`synthesize_haze` has the same meaning for every source.
    """
    import cv2

    raw = cv2.imread(str(sample.depth), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{sample.depth}: cannot read depth map")
    raw = raw.astype(np.float64)
    if raw.ndim == 3:
        raw = raw[..., 0]
    valid = raw > 0
    if sample.disparity:
        depth = np.where(valid, 1.0 / np.maximum(raw, 1e-6), 0.0)
    else:
        valid &= raw < np.iinfo(np.uint16).max  # saturated sensor readings are unknown too
        depth = np.where(valid, raw, 0.0)
    far = depth[valid].max() if valid.any() else 1.0
    depth = np.where(valid, depth, far) / far
    return torch.from_numpy(depth.astype(np.float32))[None, None]


def synthesize_haze(
    clear: Tensor, depth: Tensor, beta: float, airlight: Sequence[float] | Tensor
) -> tuple[Tensor, Tensor]:
    """Render haze on ``clear`` (1 x 3 x H x W) from relative ``depth``; returns (hazy, transmission)."""
    if depth.shape[-2:] != clear.shape[-2:]:
        depth = F.interpolate(depth, size=clear.shape[-2:], mode="bilinear", align_corners=False)
    t = torch.exp(-beta * depth)
    return add_haze(clear, t, torch.as_tensor(airlight, dtype=clear.dtype)), t


# --- in-memory training data with deterministic crops ----------------------------------------


def _draw_airlight(u: Tensor, airlight_range: tuple[float, float], tint: float = 0.1) -> Tensor:
    """An airlight (3,) from four uniforms: a level in ``airlight_range``, times 1 + tint (u - 1/2) per
    channel (tint 0.1: +-5 %, grey-ish; 0.5: +-25 %, as yellow dust or a blue dusk)."""
    level = airlight_range[0] + (airlight_range[1] - airlight_range[0]) * u[0].item()
    return (level * (1.0 + tint * (u[1:4] - 0.5))).clamp(0.0, 1.0)


def density_field(shape: tuple[int, int], variation: float, generator: torch.Generator, cells: int = 4) -> Tensor:
    """A smooth random factor on beta, exp(variation * n), 1 x 1 x H x W: n is a ``cells`` x ``cells``
    grid of standard normals, upsampled bicubically, so haze is denser in some regions of the scene
    than its depth says (non-homogeneous haze, as in NH-HAZE; RIDCP's realistic synthesis)."""
    grid = torch.randn(1, 1, cells, cells, generator=generator)
    return torch.exp(variation * F.interpolate(grid, size=shape, mode="bicubic", align_corners=True))


class PairBank:
    """Images held in memory as uint8 (hazy, clear) pairs; the source of training crops.

    Real pairs are loaded once. For each clear + depth sample, ``synthetic_per_sample`` hazy
    versions are rendered with beta ~ U(beta_range) and an airlight ~ U(airlight_range) tinted per
    channel by +-``airlight_tint`` / 2 (0.1: grey-ish), drawn from ``seed``, so a given seed always
    gives the same set. ``haze_variation`` > 0 multiplies beta by a smooth random field
    (:func:`density_field`), so the haze is not a function of depth alone.

    ``rerender_per_pair`` multiplies the haze levels of synthetic pairs (RESIDE): A and t are
    recovered from the pair (:func:`~hazefree.physics.fit_haze_model`) and the scene is re-rendered
    with t ** k, i.e. beta scaled by k ~ log-U(rerender_beta_scale), and the same A; a fraction
    ``rerender_new_airlight`` of these re-renders instead draws a new airlight the way the depth
    renders do, so scenes whose benchmark fixed A (RESIDE indoor: A = 1) are also seen under dimmer
    and tinted haze, where the brightest pixel is no longer the airlight. Only pairs whose
    re-rendering fits the hazy image to ``rerender_min_fit_db`` qualify: 8-bit quantisation alone
    limits a perfect fit to 10 log10(12 * 255^2) = 58.9 dB, and RESIDE pairs reach about 60 dB,
    while real cloud pairs (RICE, at most 52 dB here) are not rendered by the model.

    ``allow_size_mismatch`` is :func:`load_pair`'s; with ``skip_bad`` an unreadable or truncated image
    is left out with a warning naming it (listed in ``skipped``) instead of raising
    :class:`~hazefree.io.ImageReadError`.

    ``airlights`` holds each image's airlight (3,) where it is known: the A its folder records in
    ``airlights.json`` (:func:`write_airlights`), the fitted A of a pair that
    qualifies for re-rendering (only fitted when ``rerender_per_pair`` > 0), the A of each re-rendered
    level and depth render; NaN elsewhere (real haze, cloud).
    """

    def __init__(
        self,
        pairs: Iterable[Pair] = (),
        depth_samples: Iterable[DepthSample] = (),
        synthetic_per_sample: int = 8,
        beta_range: tuple[float, float] = (0.5, 2.5),
        airlight_range: tuple[float, float] = (0.7, 1.0),
        seed: int = 0,
        max_side: int | None = None,
        rerender_per_pair: int = 0,
        rerender_beta_scale: tuple[float, float] = (0.5, 2.0),
        rerender_min_fit_db: float = 55.0,
        rerender_new_airlight: float = 0.0,
        airlight_tint: float = 0.1,
        haze_variation: float = 0.0,
        allow_size_mismatch: bool = False,
        skip_bad: bool = False,
    ) -> None:
        self.names: list[str] = []
        # "<file>: <problem>" of each unreadable image left out (``skip_bad``; else the first one raises)
        self.skipped: list[str] = []
        pairs, depth_samples = list(pairs), list(depth_samples)
        self.files: list[str] = []  # the file each image comes from (the hazy file; the clear one for depth renders)
        self.sizes: list[tuple[int, int]] = []  # (H, W) of that file, before the ``max_side`` reduction
        self.sources: list[str] = []  # the dataset folder of each pair ("synthetic" for depth renders)
        self.rerendered: list[bool] = []  # a re-rendered haze level, not an image of the benchmark
        self.airlights: list[Tensor] = []  # (3,) A that rendered the image; NaN when not known
        self.hazy: list[Tensor] = []
        self.clear: list[Tensor] = []
        # its own stream, so that enabling re-rendering leaves the depth-synthetic set unchanged
        regen = torch.Generator().manual_seed(seed + 1)
        log_lo, log_hi = (math.log(v) for v in rerender_beta_scale)
        known: dict[str, dict[str, Tensor]] = {}  # each folder's airlights.json (read_airlights)
        for p in pairs:
            try:
                h, c = load_pair(p, allow_size_mismatch)
            except ImageReadError as exc:
                if not skip_bad:
                    raise
                self._skip(exc)
                continue
            folder = p.hazy.parent  # the dataset: its root, above a hazy/ sub-folder
            source = str(folder.parent if folder.name.lower() in HAZY_DIRS else folder)
            if source not in known:
                known[source] = read_airlights(source)
            self._add(p.name, h, c, max_side, source, file=p.hazy, airlight=known[source].get(p.hazy.stem))
            if rerender_per_pair <= 0:
                continue
            a, t, fit_db = fit_haze_model(h, c)
            if fit_db.item() < rerender_min_fit_db:
                continue
            self.airlights[-1] = a.flatten()
            for k in range(rerender_per_pair):
                scale = math.exp(log_lo + (log_hi - log_lo) * torch.rand(1, generator=regen).item())
                a_k = a
                # drawn only when enabled, so configs without it keep their re-rendered levels
                if rerender_new_airlight > 0:
                    u = torch.rand(5, generator=regen)
                    if u[0].item() < rerender_new_airlight:
                        a_k = _draw_airlight(u[1:], airlight_range, airlight_tint).view(1, 3, 1, 1)
                self._add(f"{p.name}_rr{k}", add_haze(c, t.pow(scale), a_k), c, max_side, source, rerendered=True,
                          file=p.hazy, airlight=a_k)
        gen = torch.Generator().manual_seed(seed)
        for s in depth_samples:
            try:
                clear = read_image(s.clear).rgb
                depth = read_depth(s)
            except ValueError as exc:  # an unreadable image or depth map; the message names the file
                if not skip_bad:
                    raise
                self._skip(exc)
                continue
            for k in range(synthetic_per_sample):
                u = torch.rand(5, generator=gen)
                beta = beta_range[0] + (beta_range[1] - beta_range[0]) * u[0].item()
                a_k = _draw_airlight(u[1:5], airlight_range, airlight_tint)
                d = depth
                if haze_variation > 0:  # drawn only when enabled, so configs without it keep their renders
                    d = depth * density_field(tuple(depth.shape[-2:]), haze_variation, gen)
                hazy, _ = synthesize_haze(clear, d, beta, a_k)
                self._add(f"{s.clear.stem}_syn{k}", hazy, clear, max_side, "synthetic", file=s.clear, airlight=a_k)
        if self.skipped:
            kept = len(pairs) + len(depth_samples) - len(self.skipped)
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) (skip_bad); {kept} of "
                f"{len(pairs) + len(depth_samples)} pairs and clear + depth samples remain"
            )
        if not self.names:
            raise ValueError("no training images: give at least one dataset folder")

    def _skip(self, exc: Exception) -> None:
        self.skipped.append(str(exc))
        warnings.warn(f"skipped {exc}")

    def _add(
        self, name: str, hazy: Tensor, clear: Tensor, max_side: int | None, source: str, rerendered: bool = False,
        file: Path | None = None, airlight: Tensor | None = None,
    ) -> None:
        self.airlights.append(torch.full((3,), math.nan) if airlight is None else airlight.flatten().float())
        self.files.append(str(file) if file is not None else name)
        self.sizes.append((int(hazy.shape[-2]), int(hazy.shape[-1])))
        if max_side is not None and max(hazy.shape[-2:]) > max_side:
            s = max_side / max(hazy.shape[-2:])
            size = (round(hazy.shape[-2] * s), round(hazy.shape[-1] * s))
            hazy = F.interpolate(hazy, size=size, mode="bilinear", antialias=True, align_corners=False)
            clear = F.interpolate(clear, size=size, mode="bilinear", antialias=True, align_corners=False)
        self.names.append(name)
        self.sources.append(source)
        self.rerendered.append(rerendered)
        self.hazy.append(_to_uint8(hazy))
        self.clear.append(_to_uint8(clear))

    def __len__(self) -> int:
        return len(self.names)

    def by_source(self, indices: Iterable[int]) -> dict[str, list[int]]:
        """``indices`` grouped by their source, sources in sorted order, indices in given order."""
        groups: dict[str, list[int]] = {}
        for i in indices:
            groups.setdefault(self.sources[i], []).append(i)
        return {k: groups[k] for k in sorted(groups)}

    def split(self, val_fraction: float | Mapping[str, float], seed: int) -> tuple[list[int], list[int]]:
        """Indices (train, val): whole scenes go to one side (a RESIDE scene id, a synthetic source).

        A float draws that fraction of all scenes. A mapping {source label: fraction} (labels as
        :func:`source_labels` gives them, e.g. ``{"sots_indoor": 0.1, "rice1": 0.25}``) splits each
        source on its own, so a small source gets a validation share of its own size; every
        source must be named.
        """
        if not isinstance(val_fraction, Mapping):
            return self._split_scenes(range(len(self)), val_fraction, seed)
        groups = self.by_source(range(len(self)))
        labels = source_labels(groups)
        check_every_source_named(labels.values(), val_fraction, "val_fraction by source", "source")
        train: list[int] = []
        val: list[int] = []
        for src, indices in groups.items():
            t, v = self._split_scenes(indices, val_fraction[labels[src]], seed)
            train += t
            val += v
        return train, val

    def _split_scenes(self, indices: Iterable[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
        groups: dict[str, list[int]] = {}
        for i in indices:
            groups.setdefault(self.names[i].split("_", 1)[0], []).append(i)
        keys = sorted(groups)
        order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = int(round(val_fraction * len(keys))) if val_fraction > 0 else 0
        if val_fraction > 0 and len(keys) > 1:
            n_val = min(max(n_val, 1), len(keys) - 1)
        val_keys = {keys[i] for i in order[:n_val]}
        train = [i for k in keys if k not in val_keys for i in groups[k]]
        val = [i for k in keys if k in val_keys for i in groups[k]]
        return train, val

    def full(self, index: int) -> tuple[Tensor, Tensor]:
        """Whole image ``index`` as float tensors (1 x 3 x H x W)."""
        return _to_float(self.hazy[index]), _to_float(self.clear[index])


def source_labels(sources: Iterable[str]) -> dict[str, str]:
    """A short name for each source: its folder's name, or the whole path where names collide."""
    sources = list(sources)
    names = [Path(src).name for src in sources]
    return {src: name if names.count(name) == 1 else src for src, name in zip(sources, names)}


def check_every_source_named(labels: Iterable[str], mapping: Mapping[str, object], what: str, kind: str) -> None:
    """Raise ValueError unless ``mapping`` names exactly the source ``labels`` (per-source options)."""
    labels = set(labels)
    missing, unknown = sorted(labels - set(mapping)), sorted(set(mapping) - labels)
    if missing or unknown:
        raise ValueError(
            f"{what} must name every {kind} ({', '.join(sorted(labels))}); "
            + "; ".join(f"{name}: {', '.join(keys)}" for name, keys in (("missing", missing), ("unknown", unknown)) if keys)
        )


def source_draw_weights(by_source: Mapping[str, Sequence[int]], source_weights: Mapping[str, float]) -> Tensor:
    """Each source's drawing weight (float64, in ``by_source`` order) from ``{source label: weight}``;
    every source must be named, weights >= 0 with a positive sum."""
    labels = list(source_labels(by_source).values())
    check_every_source_named(labels, source_weights, "source_weights", "training source")
    weights = torch.tensor([float(source_weights[label]) for label in labels], dtype=torch.float64)
    if bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"source_weights must be >= 0 with a positive sum, got {dict(source_weights)}")
    return weights


def _to_uint8(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).squeeze(0)


def _to_float(x: Tensor) -> Tensor:
    return x.float().div(255.0).unsqueeze(0)


class CropSampler:
    """Deterministic random crops: batch ``step`` depends only on (seed, step, rank).

    That makes a resumed run draw exactly the batches of an uninterrupted one, with no sampler
    state to save, and gives each DDP rank its own data. Besides ``hazy`` and ``clear`` a batch
    holds each crop's bank ``index`` (N) and its ``box`` (N x 4: y, x, h, w, rounded) in the
    coordinates of the source file, i.e. before the bank's ``max_side`` reduction and the scaling,
    and its ``airlight`` (N x 3, NaN where the bank does not know it).

    Augmentation: random scale in ``scale_range`` (images smaller than the crop are enlarged to fit),
    horizontal flip, random crop of ``crop`` x ``crop``. With ``balance_sources`` each sample first
    draws a source (a dataset folder, or the depth-synthetic set) uniformly, then an image of it, so
    a large source (e.g. re-rendered RESIDE levels) does not crowd out a small one (RICE). With
    ``source_weights`` ({source label: weight}, every source named) the source is drawn with
    probability proportional to its weight instead. With
    ``channel_shuffle`` the same random permutation of the colour channels for hazy and clear,
    which keeps I = J t + A (1 - t) exact for a grey airlight and so adds scene colours without
    adding a haze the model cannot render.
    """

    def __init__(
        self,
        bank: PairBank,
        indices: Sequence[int],
        crop: int,
        batch_size: int,
        seed: int = 0,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flip: bool = True,
        channel_shuffle: bool = False,
        balance_sources: bool = False,
        source_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not indices:
            raise ValueError("no training images after the validation split")
        self.bank, self.indices = bank, list(indices)
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.scale_range, self.flip, self.channel_shuffle = scale_range, flip, channel_shuffle
        by_source = bank.by_source(self.indices)
        self.groups = list(by_source.values()) if balance_sources or source_weights else [self.indices]
        self.weights = source_draw_weights(by_source, source_weights) if source_weights else None

    def batch(self, step: int, rank: int = 0) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + step) * 1009 + rank) % 2**63)
        hazy, clear, index, box, airlight = [], [], [], [], []
        for _ in range(self.batch_size):
            group = self.groups[0]
            if self.weights is not None:
                group = self.groups[int(torch.multinomial(self.weights, 1, generator=gen))]
            elif len(self.groups) > 1:  # only then an extra draw: unbalanced runs keep their batches
                group = self.groups[int(torch.randint(len(self.groups), (1,), generator=gen))]
            i = group[int(torch.randint(len(group), (1,), generator=gen))]
            h, c, b, perm = self._crop(_to_float(self.bank.hazy[i]), _to_float(self.bank.clear[i]), gen)
            airlight.append(self.bank.airlights[i][perm])
            hazy.append(h)
            clear.append(c)
            # the box back in the source file's pixels: the crop's scale, then the max_side reduction
            (h0, w0), (hs, ws) = self.bank.sizes[i], b[4:]
            box.append([round(b[0] * h0 / hs), round(b[1] * w0 / ws), round(b[2] * h0 / hs), round(b[3] * w0 / ws)])
            index.append(i)
        return {"hazy": torch.cat(hazy), "clear": torch.cat(clear),
                "index": torch.tensor(index), "box": torch.tensor(box), "airlight": torch.stack(airlight)}

    def _crop(
        self, hazy: Tensor, clear: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, tuple[int, ...], Tensor]:
        """The crop pair, (top, left, crop, crop, H, W) in the scaled image of size H x W, and the
        order of its colour channels."""
        u = torch.rand(4, generator=gen).tolist()
        lo, hi = self.scale_range
        s = lo + (hi - lo) * u[0]
        h, w = hazy.shape[-2:]
        s = max(s, self.crop / min(h, w))  # enlarge images smaller than the crop
        if abs(s - 1.0) > 1e-6:
            size = (max(self.crop, math.ceil(h * s)), max(self.crop, math.ceil(w * s)))
            both = F.interpolate(
                torch.cat([hazy, clear]), size=size, mode="bilinear", align_corners=False,
                antialias=s < 1,
            ).clamp(0, 1)
            hazy, clear = both[:1], both[1:]
            h, w = size
        top = int(u[1] * (h - self.crop + 1))
        left = int(u[2] * (w - self.crop + 1))
        hazy = hazy[..., top : top + self.crop, left : left + self.crop]
        clear = clear[..., top : top + self.crop, left : left + self.crop]
        if self.flip and u[3] < 0.5:
            hazy, clear = hazy.flip(-1), clear.flip(-1)
        perm = torch.arange(3)
        if self.channel_shuffle:  # drawn only when enabled: other configs keep their batches
            perm = torch.randperm(3, generator=gen)
            hazy, clear = hazy[:, perm], clear[:, perm]
        return hazy, clear, (top, left, self.crop, self.crop, h, w), perm
