"""Dataset folders: paired (hazy + ground truth) or hazy photos only (:func:`open_dataset`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..data import CLEAR_DIRS, HAZY_DIRS, find_pairs
from ..io import IMAGE_EXTENSIONS


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
