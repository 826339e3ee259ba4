"""Training configuration: a dataclass tree loaded from YAML (``yaml.safe_load``, never evaluated),
per-model defaults (:data:`MODEL_DEFAULTS`) and ``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..io import atomic_write


@dataclass
class DataConfig:
    """Training data. ``paired``: benchmark folders (any layout :func:`find_pairs` knows);
    ``synthetic``: clear + depth folders rendered with random haze."""

    paired: list[str] = field(default_factory=list)
    synthetic: list[str] = field(default_factory=list)
    synthetic_per_sample: int = 8
    synthetic_beta_range: tuple[float, float] = (0.5, 2.5)  # beta of the depth renders (depth in [0, 1])
    # the airlight level of depth renders and of re-renders under a new airlight, and its tint:
    # each channel times 1 + airlight_tint (u - 1/2) (0.1: grey-ish; 0.5: dust or dusk colours)
    synthetic_airlight_range: tuple[float, float] = (0.7, 1.0)
    airlight_tint: float = 0.1
    haze_variation: float = 0.0  # log-std of a smooth random factor on the depth renders' beta
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
    # centre-crop pairs whose sizes differ by more than data.MAX_CROP_BORDER px per side (else refused)
    allow_size_mismatch: bool = False
    skip_bad: bool = False  # leave out unreadable or truncated images, naming each (else the first stops the run)
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
class BildConfig:
    """Bi-level patch reweighting (BILD, Jiang et al. ECCV 2022; see :mod:`hazefree.training.bild`).

    ``alpha`` weighs the entropy of the weights against the validation signal, which is normalised
    per batch (its standard deviation over the patches is 1), so one value serves every model:
    at the batch's optimum log w_i = const - R_i^data / alpha, i.e. the log-weights spread with a
    standard deviation of 1 / alpha. The default 1 kept the weights near uniform on one noisy-label
    benchmark and separated them on another; 0.1 let them collapse to one patch per batch on real
    data; large alpha keeps them uniform (plain training). The three rules tried in issue #25
    (alpha 0.3 with ``ess`` 0.5 and ``relative``; the same with ``memory``; alpha 0.2 with ``ess``
    0.5, ``consistency`` and lr 1e-4) each failed on SOTS-outdoor's noisy-label runs and none is
    the default (docs/bild.md).
    """

    enabled: bool = False
    alpha: float = 1.0
    # "pair": the network sees hazy and clear patch (6 channels); "hazy": the hazy patch only,
    # which cannot see a corruption that lives in the target (see docs/bild.md)
    input: str = "pair"
    width: int = 16  # channels of the first block (doubled per block)
    lr: float = 1e-3  # Adam learning rate of the reweighting network (constant)
    # a separate folder of trusted pairs for the outer objective; None = the run's validation split
    val_data: str | None = None
    # or D_v = a share ``val_share`` of the *training* split's scenes of these sources (folder names),
    # taken out of D_t (their benchmark images serve as D_v, their re-renders are dropped), so that
    # the run's validation split stays untouched by BILD and can judge it (issue #25, part 3)
    val_sources: list[str] | None = None
    val_share: float = 0.2
    val_batch: int | None = None  # validation crops per step; None = batch_size
    weights_every: int | None = None  # patch_weights.csv rows every N steps; None = log_every
    # "fast": R_i's data part by a central difference along the validation gradient (about 2 plain
    # steps with every=4); "exact": the paper's double backward through the virtual step (4-5 plain
    # steps). See hazefree.training.bild and docs/bild.md.
    mode: str = "fast"
    every: int | None = None  # phi's update every N steps, the weights reused between; None = 4 (fast), 1 (exact)
    # fast: the central difference moves theta by this share of its norm (1e-3 until stage 11:
    # GridDehazeNet's ranks agreed with the exact R_i at Spearman 0.90, at 1e-4 0.99; docs/bild.md)
    fd_step: float = 1e-4
    # ESS rule: the weights are softmax(beta f_phi) with beta <= 1 the largest that keeps the
    # effective sample size 1 / sum w^2 of every batch >= ess x N (bisection per batch). 0 = off.
    ess: float = 0.0
    # with ess_target the ESS is held at ess x N (beta unbounded above) instead of at least that:
    # the batch's scores then set only the order of the weights, not their spread
    ess_target: bool = False
    # R_i's data part from log l_i instead of l_i: g_v^T g_i / l_i, each patch's alignment with the
    # validation gradient per unit of its own loss (a deviation from eq. 6i, see docs/bild.md)
    relative: bool = False
    # per training image, the running mean of its normalised R_i data part, added to f_phi's score
    # as -m / alpha (hazefree.training.bild.ImageEvidence; a deviation from the paper, docs/bild.md);
    # memory_prior: the pseudo-count that shrinks m towards 0 while an image is seldom seen
    memory: bool = False
    memory_prior: float = 4.0
    # a pooled evidence term on each pair's structural consistency c_i (the cosine of the hazy and
    # clear patches' gradient fields): the within-batch regression slope b of the normalised R_i
    # data part on c, accumulated over the run, adds -b c_i / alpha to f_phi's score
    # (hazefree.training.bild.ConsistencyEvidence; a deviation from the paper, docs/bild.md);
    # consistency_prior: added to the sum of squares of c, which shrinks b towards 0 early on
    consistency: bool = False
    consistency_prior: float = 1.0


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.yaml`` in the run folder."""

    model: str = "guided-pix2pix"
    model_options: dict[str, Any] = field(default_factory=dict)
    # "pix2pix" (L1 + PatchGAN), "supervised", or "airlight_head" (fit a Guided-Pix2Pix airlight head
    # on whole images with the rest of init's model frozen: hazefree.training.airlight)
    objective: str = "pix2pix"
    loss: str = "l1"  # per-sample reconstruction loss: "l1", "mse" or "smooth_l1"
    lambda_l1: float = 100.0
    # Weight of the mean absolute error of the predicted airlight, on the samples whose airlight the
    # data know (PairBank.airlights: fitted RESIDE-style pairs, re-renders, depth renders); 0 = off.
    airlight_loss: float = 0.0
    # Weight of the mean absolute error of the coarse transmission t0 against the t that renders the
    # clear crop into the hazy one under its known airlight (objectives.transmission_error); 0 = off.
    transmission_loss: float = 0.0
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
    bild: BildConfig = field(default_factory=BildConfig)

    def validate(self) -> None:
        """Raise ValueError naming every key whose value is out of range (:func:`config_problems`)."""
        problems = config_problems(self)
        if problems:
            raise ValueError(f"invalid training config ({len(problems)} problem(s)): " + "; ".join(problems))


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


# What each key must be, checked by TrainConfig.validate before any data is read: (test, wording).
# A key absent here is still checked by the generic rules of config_problems.
_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0 <= v <= 1, "in [0, 1]")
_OPEN_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
_RULES: dict[str, tuple[Any, str]] = {
    "steps": _POSITIVE, "batch_size": _POSITIVE, "val_every": _POSITIVE, "checkpoint_every": _POSITIVE,
    "keep_checkpoints": _POSITIVE, "log_every": _POSITIVE, "image_every": _POSITIVE, "ndf": _POSITIVE,
    "threads": _POSITIVE, "lambda_l1": _NON_NEGATIVE, "airlight_loss": _NON_NEGATIVE,
    "transmission_loss": _NON_NEGATIVE,
    "ema_decay": (lambda v: 0 < v < 1, "in (0, 1)"), "ddu": (lambda v: v >= 2, ">= 2"),
    "objective": (lambda v: v in ("pix2pix", "supervised", "airlight_head"), "pix2pix, supervised or airlight_head"),
    "loss": (lambda v: v in ("l1", "mse", "smooth_l1"), "l1, mse or smooth_l1"),
    "data.synthetic_per_sample": _NON_NEGATIVE, "data.rerender_per_pair": _NON_NEGATIVE,
    "data.rerender_beta_scale": (lambda v: v[0] > 0, "a range above 0"),
    "data.rerender_new_airlight": _FRACTION, "data.crop": _POSITIVE, "data.max_side": _POSITIVE,
    "data.scale_range": (lambda v: 0 < v[0] and v[1] <= 1, "a range within (0, 1]"),
    "data.val_max_images": _NON_NEGATIVE,
    "data.val_fraction": (
        lambda v: all(0 <= f < 1 for f in (v.values() if isinstance(v, dict) else [v])), "in [0, 1) (per source)"
    ),
    "data.source_weights": (lambda v: all(w >= 0 for w in v.values()), "weights >= 0"),
    "data.val_group_weights": (lambda v: all(w >= 0 for w in v.values()), "weights >= 0"),
    "data.val_average": (lambda v: v in ("image", "source", "group"), "image, source or group"),
    "optim.name": (lambda v: v in ("adam", "sgd"), "adam or sgd"),
    "optim.lr": _POSITIVE, "optim.momentum": _OPEN_FRACTION, "optim.weight_decay": _NON_NEGATIVE,
    "optim.betas": (lambda v: all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    "optim.schedule": (lambda v: v in ("step", "cosine", "constant"), "step, cosine or constant"),
    "optim.lr_decay": (lambda v: 0 < v <= 1, "in (0, 1]"), "optim.lr_decay_every": _POSITIVE,
    "optim.grad_clip": _POSITIVE,
    "bild.alpha": _NON_NEGATIVE, "bild.width": _POSITIVE, "bild.lr": _POSITIVE, "bild.val_batch": _POSITIVE,
    "bild.weights_every": _POSITIVE, "bild.val_share": _OPEN_FRACTION, "bild.input": (lambda v: v in ("pair", "hazy"), "pair or hazy"),
}


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every out-of-range value of ``cfg``, one line each naming its dotted key.

    Beyond :data:`_RULES`: a number where the default is a number, finite floats, and every pair
    field named ``*_range`` or ``*_scale`` an ordered (low, high) pair of numbers; None passes
    where the default is None."""
    problems: list[str] = []

    def walk(obj, prefix: str) -> None:
        defaults = type(obj)()
        for f in dataclasses.fields(obj):
            key, value, default = prefix + f.name, getattr(obj, f.name), getattr(defaults, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
                continue
            if value is None and default is None:
                continue
            problem = _problem(key, value, default)
            if problem:
                problems.append(f"{key} {problem}")

    walk(cfg, "")
    return problems


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _problem(key: str, value, default) -> str | None:
    """Why ``value`` is not allowed at ``key`` (None: it is)."""
    # a number where the default is one ({source: number} mappings where the key's rule takes them)
    if _is_number(default) and not _is_number(value) and not (isinstance(value, dict) and key in _RULES):
        return f"must be a number, got {value!r}"
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value != int(value):
        return f"must be a whole number, got {value!r}"
    if isinstance(default, tuple):
        if not (isinstance(value, (tuple, list)) and len(value) == len(default) and all(map(_is_number, value))):
            return f"must be {len(default)} numbers, got {value!r}"
    values = value if isinstance(value, (tuple, list)) else [value]
    if any(v != v or abs(v) == float("inf") for v in values if _is_number(v)):
        return f"must be finite, got {value!r}"
    if isinstance(default, tuple) and key.rsplit(".", 1)[-1].endswith(("_range", "_scale")) and value[0] > value[1]:
        return f"must be a (low, high) range with low <= high, got {list(value)}"
    rule = _RULES.get(key)
    if rule is not None and value is not None:
        test, wording = rule
        try:
            ok = bool(test(value))
        except (TypeError, AttributeError, IndexError):
            ok = False
        if not ok:
            return f"must be {wording}, got {value!r}"
    return None


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
    """Config from defaults < per-model defaults < YAML file < ``key=value`` overrides; raises
    ValueError naming every out-of-range key (:meth:`TrainConfig.validate`)."""
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
    cfg = _from_dict(TrainConfig, values)
    cfg.validate()
    return cfg


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


def write_config(out: Path, cfg: TrainConfig) -> None:
    """Record the run's full config as ``out/config.yaml`` (atomically), next to its weights."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write(Path(out) / "config.yaml", lambda tmp: Path(tmp).write_text(text))
