"""The network a run trains (:func:`build_model`) and its best weights on disk (:func:`save_best`),
shared by :mod:`~hazefree.training.trainer` and :mod:`~hazefree.training.airlight`."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .. import models
from ..models.weights import atomic_write, save_weights
from .config import TrainConfig


def build_model(cfg: TrainConfig) -> nn.Module:
    """The network a run trains: the registry model with the config's options."""
    return models.create(cfg.model, **{"ddu": cfg.ddu, **cfg.model_options})


def save_best(out: Path, model: nn.Module, cfg: TrainConfig, step: int, metrics: dict[str, float]) -> None:
    """Write a run's ``best.safetensors`` (the metrics in its metadata) and ``best.json``."""
    save_weights(model, out / "best.safetensors", model_name=cfg.model, options=cfg.model_options,
                 extra={"step": str(step), **{k: f"{v:.4f}" for k, v in metrics.items()}})
    atomic_write(out / "best.json", lambda tmp: Path(tmp).write_text(json.dumps({"step": step, **metrics}, indent=2)))
