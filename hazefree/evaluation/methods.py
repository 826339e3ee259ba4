"""Methods under evaluation: ``dcp``, registry models, weights files and saved outputs (``folder:PATH``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from torch import Tensor

from ..io import read_image
from .datasets import Dataset, Item, _image_files


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
    from .. import models
    from ..api import Dehazer
    from ..postprocess import get_post

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


def _check_outputs(outputs: FolderOutputs, ds: Dataset, items: Sequence[Item]) -> None:
    missing = [i.name for i in items if outputs.locate(ds, i) is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"folder:{outputs.root}: no output for {len(missing)} of {len(items)} images of {ds.name} "
            f"(looked for the hazy file names, any image extension, in {outputs.root / ds.name} and "
            f"{outputs.root}): {shown}"
        )
