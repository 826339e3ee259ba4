"""Fitting a Guided-Pix2Pix airlight head on whole images, the rest of the model frozen
(``objective: airlight_head``).

On 256-px crops the head sees neither the whole scene's haziest pixels nor the statistics that
inference computes on the whole working-size image, and the U-Net keeps moving under it. Here the
model is frozen: each training image is run once through it, whole (at most ``data.max_side``),
caching what its :class:`~hazefree.models.AirlightHead` reads (:func:`~hazefree.models.guided_pix2pix.head_inputs`
and the reference estimate) and a fixed random sample of pixels (I, t, J). The head then minimises,
per image, the loss ``cfg.loss`` between J and (I - A) / t + A clipped to [0, 1] (eq. 42, as
inference computes it) on those pixels, plus ``cfg.airlight_loss`` x |A - A_true| where the data
know A (:attr:`hazefree.data.PairBank.airlights`). Minibatches of ``batch_size`` images, drawn by
``data.source_weights`` like the crop sampler's (uniformly without them), Adam with
the run's schedule; every ``val_every`` steps the whole model is validated as :class:`Trainer`
does, and the best is written to ``best.safetensors`` / ``best.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import source_draw_weights
from ..models.weights import atomic_write, load_state_strict, load_weights
from .config import TrainConfig, write_config
from .model import build_model, save_best
from .objectives import airlight_error, make_optimizer, make_scheduler, per_sample_loss
from .validation import load_training_data, validate_run

# Pixels sampled per training image: enough for a per-image mean error, small enough to hold
# a few thousand images in memory (7 floats each).
PIXELS = 4096


class HeadExamples(NamedTuple):
    """What the frozen model gives the head for each training image."""

    inputs: Tensor  # N x F, head_inputs(...)
    reference: Tensor  # N x 3 x 1 x 1, the configured estimator's A
    hazy: Tensor  # N x 3 x PIXELS
    transmission: Tensor  # N x 1 x PIXELS, the refined t
    clear: Tensor  # N x 3 x PIXELS
    airlight: Tensor  # N x 3, NaN where not known


@torch.no_grad()
def head_examples(model, bank, indices, seed: int, progress: bool = True) -> HeadExamples:
    """Run ``model`` (eval) once on each whole image ``indices`` of ``bank`` and cache the head's view."""
    seen: dict[str, Tensor] = {}

    def capture(_module, args):
        seen["inputs"], seen["reference"] = args

    hook = model.airlight_head.register_forward_pre_hook(capture)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Tensor]] = {k: [] for k in HeadExamples._fields}
    model.eval()
    try:
        for i in tqdm(indices, desc="airlight head: caching", disable=not progress):
            hazy, clear = bank.full(i)
            t = model(hazy).transmission
            pick = torch.randint(hazy.shape[-2] * hazy.shape[-1], (PIXELS,), generator=gen)
            rows["inputs"].append(seen["inputs"])
            rows["reference"].append(seen["reference"])
            rows["hazy"].append(hazy.flatten(2)[..., pick])
            rows["transmission"].append(t.flatten(2)[..., pick])
            rows["clear"].append(clear.flatten(2)[..., pick])
            rows["airlight"].append(bank.airlights[i].view(1, 3))
    finally:
        hook.remove()
    return HeadExamples(**{k: torch.cat(v) for k, v in rows.items()})


def head_loss(head, ex: HeadExamples, idx: Tensor, cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    """Per-image losses (reconstruction + airlight term, and the airlight error alone) of images ``idx``."""
    a = head(ex.inputs[idx], ex.reference[idx]).view(-1, 3, 1)
    pred = ((ex.hazy[idx] - a) / ex.transmission[idx] + a).clamp(0.0, 1.0)
    loss = per_sample_loss(pred, ex.clear[idx], cfg.loss)
    err = airlight_error(a.unsqueeze(-1), ex.airlight[idx])
    return loss + cfg.airlight_loss * err, err


def _write_json(path: Path, value) -> None:
    text = json.dumps(value, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def fit_airlight_head(cfg: TrainConfig, progress: bool = True) -> dict[str, float]:
    """Fit the head of ``cfg.init``'s model plus a head (see the module doc); returns the best metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.model_options.get("airlight_head"):
        raise ValueError("objective airlight_head needs model_options.airlight_head: true")
    if not cfg.init:
        raise ValueError("objective airlight_head fits a head onto trained weights: set init")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    state, _ = load_weights(cfg.init)
    load_state_strict(model, state, cfg.init, cfg.init_new_modules)
    model.requires_grad_(False).eval()
    head = model.airlight_head
    head.requires_grad_(True)

    bank, train_idx, val_idx = load_training_data(cfg)
    examples = head_examples(model, bank, train_idx, cfg.seed, progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    opt = make_optimizer(head.parameters(), cfg.optim)
    sched = make_scheduler(opt, cfg.optim, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    n = len(examples.inputs)
    # images drawn as the crop sampler draws them: a source by data.source_weights, then an image of it
    draw = torch.ones(n, dtype=torch.float64)
    if cfg.data.source_weights:
        by_source = bank.by_source(train_idx)
        position = {i: k for k, i in enumerate(train_idx)}
        for weight, members in zip(source_draw_weights(by_source, cfg.data.source_weights), by_source.values()):
            draw[[position[i] for i in members]] = weight / len(members)
    best: dict[str, float] = {"val_psnr": float("-inf")}
    log = []
    for step in tqdm(range(1, cfg.steps + 1), desc="airlight head: fitting", disable=not progress):
        idx = torch.multinomial(draw, cfg.batch_size, replacement=True, generator=gen)
        loss, err = head_loss(head, examples, idx, cfg)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        sched.step()
        if step % cfg.val_every == 0 or step == cfg.steps:
            metrics = validate_run(model, bank, val_idx, cfg.data)
            log.append({"step": step, "loss": loss.mean().item(), "airlight_error": err.mean().item(), **metrics})
            if metrics.get("val_psnr", float("-inf")) > best["val_psnr"]:
                best = {"step": step, **metrics}
                save_best(out, model, cfg, step, metrics)
            _write_json(out / "log.json", log)
    return best
