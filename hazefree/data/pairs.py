"""Pairing rules of the benchmarks' real layouts (:func:`find_pairs`), loading a pair, the
held-out split of photos without ground truth and recorded airlights."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..io import IMAGE_EXTENSIONS, atomic_write, read_image

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
