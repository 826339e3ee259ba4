"""One training loop for every model: configuration, objectives, checkpoints, logging, DDP.

* Configuration is a dataclass tree (:class:`TrainConfig`) loaded from YAML (``yaml.safe_load``,
  never evaluated) and overridable key by key on the command line (``--set optim.lr=2e-4``).
* An *objective* owns what one optimisation step means: :class:`SupervisedObjective` (one network,
  a per-sample loss) or :class:`Pix2PixObjective` (Guided-Pix2Pix: L1 + conditional PatchGAN,
  Ma et al. 2021 eqs. 43-44). Losses are computed per sample (shape N) and reduced only by the
  objective's step, so a bi-level reweighting trainer (BILD) can weight them.
* :class:`Trainer` owns the loop: batches, learning-rate schedule, validation, atomic checkpoints
  (safetensors weights + optimiser/scheduler/step/RNG state), resume, the best checkpoint by
  validation PSNR, an optional exponential moving average of the weights (``ema_decay``; then
  validation and ``best.safetensors`` use the average), tqdm and TensorBoard, and
  DistributedDataParallel under ``torchrun``.

Determinism: batch ``k`` depends only on (seed, k, rank) (see :class:`hazefree.data.CropSampler`)
and the global torch RNG (dropout) is checkpointed, so on CPU a resumed run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import models
from .data import CropSampler, PairBank, find_depth_samples, find_pairs, source_labels
from .models.weights import CheckpointError, atomic_write, load_state_strict, load_weights, save_weights

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "SupervisedObjective",
    "Pix2PixObjective",
    "Trainer",
    "load_training_data",
    "validate",
    "validate_run",
    "train",
    "add_train_parser",
]


# --- configuration --------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Training data. ``paired``: benchmark folders (any layout :func:`find_pairs` knows);
    ``synthetic``: clear + depth folders rendered with random haze."""

    paired: list[str] = field(default_factory=list)
    synthetic: list[str] = field(default_factory=list)
    synthetic_per_sample: int = 8
    # extra haze levels per synthetic pair, re-rendered from its recovered A and t (see PairBank)
    rerender_per_pair: int = 0
    rerender_beta_scale: tuple[float, float] = (0.5, 2.0)
    rerender_new_airlight: float = 0.0  # fraction of re-renders under a new airlight (see PairBank)
    # only pairs whose fitted scattering model reproduces the hazy image to this PSNR are re-rendered:
    # 55 dB admits lossless RESIDE renders only; about 45 dB also admits JPEG-stored synthetic outdoor
    # pairs (SOTS-outdoor, HazeRD: 44-57 dB) and still excludes real haze (O-/NH-/Dense-HAZE, RICE2: < 35 dB)
    rerender_min_fit_db: float = 55.0
    channel_shuffle: bool = False  # random colour-channel permutation of each crop (see CropSampler)
    balance_sources: bool = False  # draw each dataset folder / the synthetic set equally often
    # {source label: weight}: draw each sample's source with probability proportional to its weight
    # (every training source named; overrides balance_sources)
    source_weights: dict[str, float] = field(default_factory=dict)
    pair_pattern: str | None = None
    # a fraction of all scenes, or {source label: fraction} to split each source on its own
    val_fraction: float | dict[str, float] = 0.1
    crop: int = 256
    scale_range: tuple[float, float] = (0.5, 1.0)
    max_side: int | None = 1024
    val_max_images: int = 16
    # "image": val_psnr/val_ssim are means over the validation images; "source": means of the
    # per-source means, so each dataset folder (and the synthetic set) weighs the same in the
    # choice of best.safetensors however many images (or re-rendered levels) it contributes;
    # "group": the weighted mean over ``val_groups`` of each group's image mean, so several small
    # sources of one kind (e.g. three real-haze sets of 4 images) pool into one voice
    val_average: str = "image"
    # {group name: [source labels]} for val_average "group"; every validated source in one group
    val_groups: dict[str, list[str]] = field(default_factory=dict)
    val_group_weights: dict[str, float] = field(default_factory=dict)  # default weight 1 per group
    # False: validate on the benchmark's own hazy images of the held-out scenes only, not on their
    # re-rendered levels (which, like the rest of those scenes, are not trained on either)
    val_rerendered: bool = True
    # seed of the scene split; None = the run's seed. Fix it to train several seeds on one split.
    split_seed: int | None = None


@dataclass
class OptimConfig:
    """Optimiser and schedule. Defaults are Ma et al.'s: Adam, lr 1e-4, betas (0.5, 0.999),
    x0.9 every 100 steps (``schedule="step"``); ``"cosine"`` anneals to 0 over the run
    (FFA-Net), ``"constant"`` keeps lr."""

    name: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_decay: float = 0.9
    lr_decay_every: int = 100
    grad_clip: float | None = None  # max gradient norm (DehazeNet/AOD-Net style clipping), None = off


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.yaml`` in the run folder."""

    model: str = "guided-pix2pix"
    model_options: dict[str, Any] = field(default_factory=dict)
    objective: str = "pix2pix"  # "pix2pix" (L1 + PatchGAN) or "supervised"
    loss: str = "l1"  # per-sample reconstruction loss: "l1", "mse" or "smooth_l1"
    lambda_l1: float = 100.0
    ndf: int = 64
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 8
    steps: int = 1000
    seed: int = 0
    val_every: int = 250
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10
    image_every: int = 500
    threads: int | None = None
    out: str = "runs/guided-pix2pix"
    # Weights (safetensors) the model starts from instead of its random initialisation: a second
    # training stage on top of a previous run's best.safetensors. --resume takes precedence.
    init: str | None = None
    # Modules of the model that ``init`` lacks and that keep their fresh initialisation (e.g.
    # ["airlight_head"] when a head is added to a previous stage's weights).
    init_new_modules: list[str] = field(default_factory=list)
    # Exponential moving average of the model's weights (BasicSR's ``ema_decay``), updated after
    # every step; validation and best.safetensors use the average. None = off.
    ema_decay: float | None = None
    # DDU down-up factor S: the model runs at 1/S size inside hazefree.models.DownUp (crop >= S x
    # the model's minimum size); None = full resolution
    ddu: int | None = None


# Per-model defaults, applied before the YAML file and the command line.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "guided-pix2pix": {"objective": "pix2pix", "ndf": 16},
    "guided-pix2pix-paper": {"objective": "pix2pix", "ndf": 64, "data": {"crop": 512}},
    # MSBDN-DFF, official train.py: MSE, Adam lr 1e-4 (default betas), batch 16, 256 x 256 patches
    # cut from images resized by 0.5/0.7/1 (our scale_range default), 100 epochs with lr x0.1 after
    # epoch 50. Estimated from its HDF5 script (10k 620 x 460 images, stride 128: ~8 patches each),
    # an epoch is ~5k steps: x0.1 at ~250k of ~500k steps; set `steps` and lr_decay_every together.
    # Its --clip flag is parsed but never applied, so no grad_clip.
    "msbdn": {
        "objective": "supervised", "loss": "mse", "batch_size": 16, "data": {"crop": 256},
        "optim": {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "schedule": "step",
                  "lr_decay": 0.1, "lr_decay_every": 250_000},
    },
    # FFA-Net, paper + official README: L1, Adam lr 1e-4 betas (0.9, 0.999), cosine annealing to 0
    # over the run (paper: 5e5 steps ITS, 1e6 OTS; set `steps`), batch 2, 240 x 240 crops.
    "ffa-net": {
        "objective": "supervised", "loss": "l1", "batch_size": 2, "data": {"crop": 240},
        "optim": {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "schedule": "cosine"},
    },
    # AOD-Net, paper (implementation details): MSE, SGD momentum 0.9, weight decay 1e-4, lr 1e-3
    # (constant), batch 8 of whole 480 x 640 images (no rescaling; our crops are square, so
    # 480 x 480), gradient norm clipped to 0.1.
    "aod-net": {
        "objective": "supervised", "loss": "mse", "batch_size": 8,
        "data": {"crop": 480, "scale_range": [1.0, 1.0]},
        "optim": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant",
                  "grad_clip": 0.1},
    },
    # DehazeNet, paper: MSE, SGD, batch 128 of 16 x 16 patches, lr 0.005 halved every 100k iterations
    # (down to 3.125e-4; 500k iterations, set `steps`). The paper's loss is on t of synthetic patches;
    # here it is on J (see the model docstring). Momentum 0.9 is assumed (Caffe's usual value).
    "dehazenet": {
        "objective": "supervised", "loss": "mse", "batch_size": 128,
        "data": {"crop": 16, "scale_range": [1.0, 1.0]},
        "optim": {"name": "sgd", "lr": 5e-3, "momentum": 0.9, "schedule": "step",
                  "lr_decay": 0.5, "lr_decay_every": 100_000},
    },
    # GridDehazeNet, paper + official train.py: Adam lr 1e-3 (default betas), batch 18, 240 x 240
    # crops (no rescaling), lr x0.5 every 20 epochs, 100 epochs on ITS (~14k images / 18 = ~777
    # steps per epoch: x0.5 every ~15.5k of ~78k steps; set `steps`). Loss: smooth L1 alone; the
    # official + 0.04 x VGG16 perceptual term needs pretrained weights we cannot download.
    "griddehazenet": {
        "objective": "supervised", "loss": "smooth_l1", "batch_size": 18,
        "data": {"crop": 240, "scale_range": [1.0, 1.0]},
        "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "schedule": "step",
                  "lr_decay": 0.5, "lr_decay_every": 15_540},
    },
}


def _from_dict(cls, values: Mapping[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(names)}")
    kwargs = {}
    for k, v in values.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            v = _from_dict(type(default), v or {})
        elif isinstance(default, tuple) and isinstance(v, list):
            v = tuple(float(x) if isinstance(x, str) else x for x in v)
        elif isinstance(default, float) and isinstance(v, (int, str)) and not isinstance(v, bool):
            v = _number(v, float, f"{cls.__name__}.{k}")  # YAML 1.1 reads "3e-4" as a string
        elif isinstance(default, int) and not isinstance(default, bool) and isinstance(v, str):
            v = _number(v, int, f"{cls.__name__}.{k}")
        kwargs[k] = v
    return cls(**kwargs)


def _number(value, kind, key: str):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, model: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Config from defaults < per-model defaults < YAML file < ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read config ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
        values = loaded
    name = model or values.get("model") or TrainConfig.model
    values = _merge(_merge({"model": name}, MODEL_DEFAULTS.get(name, {})), values)
    if model:
        values["model"] = model
    values = apply_overrides(values, overrides)
    return _from_dict(TrainConfig, values)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings; values are parsed as YAML scalars/lists (safe_load)."""
    out = json.loads(json.dumps(values))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def config_to_dict(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# --- objectives -----------------------------------------------------------------------------


def per_sample_loss(pred: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    """Reconstruction loss per sample (shape N): mean absolute (L1, eq. 43) or squared error."""
    diff = pred - target
    if kind == "l1":
        return diff.abs().flatten(1).mean(1)
    if kind == "mse":
        return diff.pow(2).flatten(1).mean(1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none").flatten(1).mean(1)
    raise ValueError(f"unknown loss {kind!r}; choose l1, mse or smooth_l1")


class Objective(Protocol):
    """What the trainer needs from a training method."""

    def networks(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]: ...

    def generator(self) -> nn.Module: ...


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name``."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}; choose adam or sgd")


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Per-step learning-rate schedule named by ``cfg.schedule``."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, cfg.lr_decay_every, cfg.lr_decay)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total_steps, 1))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose step, cosine or constant")


def _clip(params, cfg: OptimConfig) -> None:
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)


class SupervisedObjective:
    """One network trained on a per-sample reconstruction loss of its clear output."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, wrap=lambda m: m) -> None:
        self.model, self.train_model, self.kind = model, wrap(model), cfg.loss
        self._opt = {"model": make_optimizer(model.parameters(), cfg.optim)}
        self.optim_cfg = cfg.optim

    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._opt

    def generator(self) -> nn.Module:
        return self.model

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-sample losses (each of shape N)."""
        out = self.train_model(batch["hazy"])
        return {"loss": per_sample_loss(out.clear, batch["clear"], self.kind)}

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        losses = self.losses(batch)
        opt = self._opt["model"]
        opt.zero_grad(set_to_none=True)
        losses["loss"].mean().backward()
        _clip(self.model.parameters(), self.optim_cfg)
        opt.step()
        return {k: v.mean().item() for k, v in losses.items()}


def _bce_per_sample(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)


class Pix2PixObjective:
    """Conditional GAN + L1 (Ma et al. 2021, eqs. 43-44; Isola et al. 2017).

    D step: BCE(D(I, J), 1) + BCE(D(I, G(I)), 0), halved, with G(I) detached.
    G step: BCE(D(I, G(I)), 1) + lambda * L1(G(I), J), with D frozen.
    """

    def __init__(self, generator: nn.Module, cfg: TrainConfig, wrap=lambda m: m) -> None:
        self.g = generator
        self.d = models.PatchDiscriminator(ndf=cfg.ndf)
        self.g_train, self.d_train = wrap(self.g), wrap(self.d)
        self.lambda_l1, self.kind = cfg.lambda_l1, cfg.loss
        self._opt = {"generator": make_optimizer(self.g.parameters(), cfg.optim),
                     "discriminator": make_optimizer(self.d.parameters(), cfg.optim)}
        self.optim_cfg = cfg.optim

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._opt

    def generator(self) -> nn.Module:
        return self.g

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        hazy, clear = batch["hazy"], batch["clear"]
        fake = self.g_train(hazy).clear

        self.d.requires_grad_(True)
        # real and fake in one forward: DDP expects one forward per backward, and InstanceNorm
        # keeps the two halves independent
        n = hazy.shape[0]
        logits = self.d_train(torch.cat([hazy, hazy]), torch.cat([clear, fake.detach()]))
        loss_d = 0.5 * (_bce_per_sample(logits[:n], True) + _bce_per_sample(logits[n:], False))
        opt_d = self._opt["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.mean().backward()
        opt_d.step()

        # D frozen; its plain module is used so that DDP does not wait for gradients it never gets.
        self.d.requires_grad_(False)
        loss_gan = _bce_per_sample(self.d(hazy, fake), True)
        loss_l1 = per_sample_loss(fake, clear, self.kind)
        loss_g = loss_gan + self.lambda_l1 * loss_l1
        opt_g = self._opt["generator"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.mean().backward()
        _clip(self.g.parameters(), self.optim_cfg)
        opt_g.step()
        self.d.requires_grad_(True)
        return {"loss_d": loss_d.mean().item(), "loss_g_gan": loss_gan.mean().item(),
                "loss_g_l1": loss_l1.mean().item(), "loss_g": loss_g.mean().item()}


# --- the loop -------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    )
    train_idx, val_idx = bank.split(d.val_fraction, cfg.seed if d.split_seed is None else d.split_seed)
    if not d.val_rerendered:
        val_idx = [i for i in val_idx if not bank.rerendered[i]]
    if d.val_average == "image":
        return bank, train_idx, val_idx[: d.val_max_images]
    # "source" and "group": the cap takes from each source in turn
    queues = list(bank.by_source(val_idx).values())
    taken = [q[j] for j in range(max(map(len, queues), default=0)) for q in queues if j < len(q)]
    return bank, train_idx, sorted(taken[: d.val_max_images])


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
    from .metrics import psnr, ssim

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
        member = {label: name for name, members in (groups or {}).items() for label in members}
        stray = sorted(set(by_label) - set(member))
        if stray:
            raise ValueError(f"validated sources in no val_groups group: {', '.join(stray)}")
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


class Trainer:
    """The training loop shared by every model. See the module docstring."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        # checked before the data are loaded, which takes a minute on the full training set
        if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
        self.rank, self.world = _dist_info()
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = models.create(cfg.model, **{"ddu": cfg.ddu, **cfg.model_options})
        if cfg.init:  # a checkpoint found by --resume replaces these weights below
            state, _ = load_weights(cfg.init)
            load_state_strict(self.model, state, cfg.init, cfg.init_new_modules)
        wrap = self._ddp if self.world > 1 else (lambda m: m)
        if cfg.objective == "pix2pix":
            self.objective: Objective = Pix2PixObjective(self.model, cfg, wrap)
        elif cfg.objective == "supervised":
            self.objective = SupervisedObjective(self.model, cfg, wrap)
        else:
            raise ValueError(f"unknown objective {cfg.objective!r}; choose pix2pix or supervised")
        self.schedulers = {
            k: make_scheduler(o, cfg.optim, cfg.steps)
            for k, o in self.objective.optimizers().items()
        }
        self.bank, train_idx, self.val_idx = load_training_data(cfg)
        self.sampler = CropSampler(self.bank, train_idx, cfg.data.crop, cfg.batch_size, cfg.seed,
                                   tuple(cfg.data.scale_range), channel_shuffle=cfg.data.channel_shuffle,
                                   balance_sources=cfg.data.balance_sources,
                                   source_weights=cfg.data.source_weights or None)
        self.ema: AveragedModel | None = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
        self.step = 0
        self.best_psnr = float("-inf")
        if resume:
            self._resume()

    @staticmethod
    def _ddp(module: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(module)

    def _evaluated(self) -> nn.Module:
        """The network that is validated and kept as best: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.model

    # checkpoints: RUN/checkpoints/step_000123/{<network>.safetensors, [ema.safetensors,] state.pt}
    def _ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        final = self._ckpt_dir() / f"step_{self.step:07d}"
        tmp = self._ckpt_dir() / f".tmp_step_{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, net in self.objective.networks().items():
            save_weights(net, tmp / f"{name}.safetensors", model_name=self.cfg.model if net is self.model else None,
                         options=self.cfg.model_options if net is self.model else None)
        state = {
            "step": self.step,
            "best_psnr": self.best_psnr,
            "optimizers": {k: o.state_dict() for k, o in self.objective.optimizers().items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "torch_rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            save_weights(self.ema.module, tmp / "ema.safetensors", model_name=self.cfg.model,
                         options=self.cfg.model_options)
            state["ema_n_averaged"] = self.ema.n_averaged
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a directory rename is atomic: a checkpoint is complete or absent
        for old in self._checkpoints()[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _checkpoints(self) -> list[Path]:
        if not self._ckpt_dir().is_dir():
            return []
        return sorted(p for p in self._ckpt_dir().glob("step_*") if (p / "state.pt").is_file())

    def _resume(self) -> None:
        ckpts = self._checkpoints()
        if not ckpts:
            if self.rank == 0:
                print(f"no checkpoint in {self._ckpt_dir()}; starting from step 0", file=sys.stderr)
            return
        last = ckpts[-1]
        for name, net in self.objective.networks().items():
            state, _ = load_weights(last / f"{name}.safetensors")
            load_state_strict(net, state, last / f"{name}.safetensors")
        state = torch.load(last / "state.pt", map_location="cpu", weights_only=True)
        for k, o in self.objective.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            if "ema_n_averaged" not in state:
                raise CheckpointError(f"{last}: saved without a weight average; drop ema_decay to resume it")
            ema_state, _ = load_weights(last / "ema.safetensors")
            load_state_strict(self.ema.module, ema_state, last / "ema.safetensors")
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        self.step, self.best_psnr = int(state["step"]), float(state["best_psnr"])
        if self.rank == 0:
            print(f"resumed from {last} (step {self.step})", file=sys.stderr)

    def validate(self) -> dict[str, float]:
        """:func:`validate` of the validated network (the weight average if there is one)."""
        return validate_run(self._evaluated(), self.bank, self.val_idx, self.cfg.data)

    def _save_best(self, metrics: dict[str, float]) -> None:
        if self.rank != 0 or metrics.get("val_psnr", float("-inf")) <= self.best_psnr:
            return
        self.best_psnr = metrics["val_psnr"]
        save_weights(self._evaluated(), self.out / "best.safetensors", model_name=self.cfg.model,
                     options=self.cfg.model_options, extra={"step": str(self.step), **{k: f"{v:.4f}" for k, v in metrics.items()}})
        atomic_write(self.out / "best.json",
                     lambda tmp: Path(tmp).write_text(json.dumps({"step": self.step, **metrics}, indent=2)))

    def fit(self) -> dict[str, float]:
        """Train until ``cfg.steps``; returns the last logged losses and metrics."""
        cfg = self.cfg
        writer = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.yaml",
                         lambda tmp: Path(tmp).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False)))
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)
            val = self.bank.by_source(self.val_idx)
            labels = source_labels(val)
            print(f"{len(self.sampler.indices)} training images; validation on {len(self.val_idx)} "
                  f"({', '.join(f'{labels[k]} {len(v)}' for k, v in val.items()) or 'none'})", file=sys.stderr)
        bar = None
        if self.rank == 0 and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.model}", dynamic_ncols=True)
        self.model.train()
        last: dict[str, float] = {}
        t0 = time.time()
        while self.step < cfg.steps:
            batch = self.sampler.batch(self.step, self.rank)
            losses = self.objective.step(batch)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for s in self.schedulers.values():
                s.step()
            self.step += 1
            last = dict(losses)
            if writer is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                for k, v in losses.items():
                    writer.add_scalar(f"train/{k}", v, self.step)
                lr = next(iter(self.objective.optimizers().values())).param_groups[0]["lr"]
                writer.add_scalar("train/lr", lr, self.step)
                writer.add_scalar("train/steps_per_second", self.step / max(time.time() - t0, 1e-9), self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                metrics = self.validate() if self.rank == 0 else {}
                last.update(metrics)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k[4:]}", v, self.step)
                self._save_best(metrics)
            if writer is not None and (self.step % cfg.image_every == 0 or self.step == cfg.steps):
                self._log_images(writer, batch)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._save_checkpoint()
                if self.world > 1:
                    dist.barrier()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        return last

    @torch.no_grad()
    def _log_images(self, writer, batch: dict[str, Tensor]) -> None:
        g = self._evaluated()
        was_training = g.training
        g.eval()
        hazy, clear = batch["hazy"][:2], batch["clear"][:2]
        pred = g(hazy).clear
        g.train(was_training)
        grid = torch.cat([torch.cat([h, p, c], dim=-1) for h, p, c in zip(hazy, pred, clear)], dim=-2)
        writer.add_image("samples/hazy_pred_clear", grid.clamp(0, 1), self.step)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Run a training job; under ``torchrun`` it joins the process group (gloo on CPU, NCCL on GPU)."""
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        return Trainer(cfg, resume=resume, progress=progress).fit()
    finally:
        if started:
            dist.destroy_process_group()


# --- command line ---------------------------------------------------------------------------


def add_train_parser(subparsers) -> None:
    """Register ``hazefree train`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "train",
        help="train a registry model",
        description="Train MODEL; values come from the model's defaults, then --config, then the flags.",
    )
    p.add_argument("model", help="registry name, e.g. guided-pix2pix")
    p.add_argument("--config", help="YAML file mapped onto hazefree.training.TrainConfig")
    p.add_argument("--data", nargs="+", help="paired dataset folder(s) (replaces data.paired)")
    p.add_argument("--synthetic", nargs="+", help="clear+depth folder(s) (replaces data.synthetic)")
    p.add_argument("--steps", type=int, help="total number of optimisation steps")
    p.add_argument("--out", help="run folder (checkpoints, best.safetensors, tensorboard/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set optim.lr=2e-4 (repeatable)")
    p.add_argument("--ddu", type=int, metavar="S", help="wrap the model in the DDU down-up module: it runs at 1/S size")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--validate", metavar="WEIGHTS",
                   help="no training: score WEIGHTS on the config's validation split and print the metrics "
                        "(model options: the config's, else those recorded in WEIGHTS)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for key, value in (("steps", args.steps), ("out", args.out), ("ddu", args.ddu)):
        if value is not None:
            overrides.append(f"{key}={value}")
    for key, value in (("data.paired", args.data), ("data.synthetic", args.synthetic)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.model not in models.MODELS:
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(models.available())}")
    cfg = load_config(args.config, args.model, overrides)
    if args.validate is not None:
        # the same held-out images and metric that chose each run's best.safetensors, so weights
        # from different runs or stages can be compared on one split
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # options recorded with the weights (e.g. an inference radius chosen later) unless the config sets them
        net = models.load_file(args.validate, model=cfg.model, **cfg.model_options)
        bank, _, val_idx = load_training_data(cfg)
        print(json.dumps({"weights": args.validate, **validate_run(net, bank, val_idx, cfg.data)}))
        return 0
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"step": cfg.steps, **{k: round(v, 5) for k, v in result.items()}}))
    return 0
