"""Training images held in memory (:class:`PairBank`), with re-rendered haze levels and depth
renders, and the per-source helpers of a run's configuration."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import ImageReadError, read_image
from ..physics import add_haze, fit_haze_model
from .pairs import HAZY_DIRS, Pair, load_pair, read_airlights
from .synthesis import (
    DepthSample,
    _draw_airlight,
    density_field,
    read_depth,
    synthesize_haze,
)


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
            return self.split_scenes(range(len(self)), val_fraction, seed)
        groups = self.by_source(range(len(self)))
        labels = source_labels(groups)
        check_every_source_named(labels.values(), val_fraction, "val_fraction by source", "source")
        train: list[int] = []
        val: list[int] = []
        for src, indices in groups.items():
            t, v = self.split_scenes(indices, val_fraction[labels[src]], seed)
            train += t
            val += v
        return train, val

    def split_scenes(self, indices: Iterable[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """``indices`` split (train, val) by scene (the name up to its first ``_``: a RESIDE scene id
        and its re-renders stay together); ``val_fraction`` of the scenes, at least one and at most
        all but one, drawn from ``seed``."""
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
