"""A run's data and its held-out split (:func:`load_training_data`), and validation metrics."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..data import PairBank, find_depth_samples, find_pairs, source_labels
from .config import DataConfig, TrainConfig


def load_training_data(cfg: TrainConfig) -> tuple[PairBank, list[int], list[int]]:
    """The run's images and its (train, validation) indices, as :class:`Trainer` uses them.

    Validation takes whole scenes (:meth:`PairBank.split`; without their re-rendered levels if
    ``data.val_rerendered`` is false), at most ``data.val_max_images`` images:
    the first ones when averaging over images; when averaging over sources, taken from each source
    in turn, so the cap cannot leave a source out.
    """
    d = cfg.data
    if d.val_average not in ("image", "source", "group"):  # before the load, which takes a minute
        raise ValueError(f"data.val_average must be 'image', 'source' or 'group', got {d.val_average!r}")
    if (d.val_average == "group") != bool(d.val_groups):
        raise ValueError("data.val_groups is needed with val_average 'group', and only with it")
    unknown = sorted(set(d.val_group_weights) - set(d.val_groups))
    if unknown:
        raise ValueError(f"data.val_group_weights names groups not in val_groups: {', '.join(unknown)}")
    pairs = [p for root in d.paired for p in find_pairs(root, d.pair_pattern).pairs]
    depth = [s for root in d.synthetic for s in find_depth_samples(root)]
    bank = PairBank(
        pairs, depth, d.synthetic_per_sample, seed=cfg.seed, max_side=d.max_side,
        rerender_per_pair=d.rerender_per_pair, rerender_beta_scale=tuple(d.rerender_beta_scale),
        rerender_new_airlight=d.rerender_new_airlight, rerender_min_fit_db=d.rerender_min_fit_db,
        allow_size_mismatch=d.allow_size_mismatch, skip_bad=d.skip_bad,
        beta_range=tuple(d.synthetic_beta_range), airlight_range=tuple(d.synthetic_airlight_range),
        airlight_tint=d.airlight_tint, haze_variation=d.haze_variation,
    )
    train_idx, val_idx = bank.split(d.val_fraction, cfg.seed if d.split_seed is None else d.split_seed)
    if not d.val_rerendered:
        val_idx = [i for i in val_idx if not bank.rerendered[i]]
    if d.val_average == "image":
        return bank, train_idx, val_idx[: d.val_max_images]
    # "source" and "group": the cap takes from each source in turn
    by_source = bank.by_source(val_idx)
    if d.val_average == "group":  # before training, not at the first validation
        _check_groups(source_labels(by_source).values(), d.val_groups)
    queues = list(by_source.values())
    taken = [q[j] for j in range(max(map(len, queues), default=0)) for q in queues if j < len(q)]
    return bank, train_idx, sorted(taken[: d.val_max_images])


def _check_groups(labels: Iterable[str], groups: Mapping[str, Sequence[str]] | None) -> None:
    """Raise ValueError if a validated source belongs to no group of ``val_groups``."""
    members = {label for group in (groups or {}).values() for label in group}
    stray = sorted(set(labels) - members)
    if stray:
        raise ValueError(f"validated sources in no val_groups group: {', '.join(stray)}")


@torch.no_grad()
def validate(
    model: nn.Module,
    bank: PairBank,
    indices: Sequence[int],
    average: str = "image",
    groups: Mapping[str, Sequence[str]] | None = None,
    group_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """PSNR/SSIM of ``model`` on the whole images ``indices`` of ``bank`` (eval mode, clipped).

    Returns ``val_psnr``/``val_ssim`` averaged over the images (``average="image"``), as the mean
    of the per-source means (``"source"``), or as the ``group_weights``-weighted mean over
    ``groups`` ({name: [source labels]}) of each group's image mean (``"group"``); and each
    source's mean as ``val_psnr@<source>`` / ``val_ssim@<source>`` (the dataset folder's name, see
    :func:`source_labels`), plus each group's as ``val_psnr@group:<name>``.
    """
    from ..metrics import psnr, ssim

    if not indices:
        return {}
    was_training = model.training
    model.eval()
    scores: dict[str, list[tuple[float, float]]] = {}
    for src, group in bank.by_source(indices).items():
        for i in group:
            hazy, clear = bank.full(i)
            pred = model(hazy).clear
            scores.setdefault(src, []).append((psnr(pred, clear).item(), ssim(pred, clear).item()))
    model.train(was_training)

    def mean(pairs):
        return sum(p for p, _ in pairs) / len(pairs), sum(s for _, s in pairs) / len(pairs)

    labels = source_labels(scores)
    out: dict[str, float] = {}
    if average == "image":
        out["val_psnr"], out["val_ssim"] = mean([x for v in scores.values() for x in v])
    elif average == "source":
        out["val_psnr"], out["val_ssim"] = mean([mean(v) for v in scores.values()])
    else:
        by_label = {labels[src]: v for src, v in scores.items()}
        _check_groups(by_label, groups)
        weights = group_weights or {}
        total, psnr_sum, ssim_sum = 0.0, 0.0, 0.0
        for name, members in (groups or {}).items():
            pooled = [x for label in members for x in by_label.get(label, [])]
            if not pooled:
                continue
            p, s = mean(pooled)
            out[f"val_psnr@group:{name}"], out[f"val_ssim@group:{name}"] = p, s
            w = weights.get(name, 1.0)
            total, psnr_sum, ssim_sum = total + w, psnr_sum + w * p, ssim_sum + w * s
        out["val_psnr"], out["val_ssim"] = psnr_sum / total, ssim_sum / total
    for src, v in scores.items():
        out[f"val_psnr@{labels[src]}"], out[f"val_ssim@{labels[src]}"] = mean(v)
    return out


def validate_run(model: nn.Module, bank: PairBank, indices: Sequence[int], data: DataConfig) -> dict[str, float]:
    """:func:`validate` with the averaging a run's data config declares."""
    return validate(model, bank, indices, data.val_average, data.val_groups, data.val_group_weights)
