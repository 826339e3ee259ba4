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
* :mod:`hazefree.training.bild` wraps any objective in BILD's bi-level patch reweighting
  (``--bild``, the config's ``bild:`` section).

Determinism: batch ``k`` depends only on (seed, k, rank) (see :class:`hazefree.data.CropSampler`)
and the global torch RNG (dropout) is checkpointed, so on CPU a resumed run reproduces an
uninterrupted one.
"""

from .bild import Bild, PatchReweighter
from .cli import add_train_parser, run_train
from .config import MODEL_DEFAULTS, BildConfig, DataConfig, OptimConfig, TrainConfig, apply_overrides, config_to_dict, load_config
from .objectives import (
    Objective,
    Pix2PixObjective,
    SupervisedObjective,
    make_optimizer,
    make_scheduler,
    per_sample_loss,
)
from .trainer import Trainer, train
from .validation import load_training_data, validate, validate_run

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
    "run_train",
    "MODEL_DEFAULTS",
    "config_to_dict",
    "per_sample_loss",
    "Objective",
    "make_optimizer",
    "make_scheduler",
    "BildConfig",
    "Bild",
    "PatchReweighter",
]
