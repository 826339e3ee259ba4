"""Objectives: what one optimisation step means for a model, with losses kept per sample (shape N)
so that a reweighting trainer (BILD) can weight them; the optimisers and schedules they use."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..physics import transmission_of
from .config import OptimConfig, TrainConfig


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


def airlight_error(airlight: Tensor | None, target: Tensor) -> Tensor:
    """Per-sample mean absolute error of the predicted airlight (N x 3 x 1 x 1) against ``target``
    (N x 3, a batch's ``airlight``: NaN where the pair does not say; those samples count 0)."""
    if airlight is None:
        raise ValueError("airlight_loss needs a model that returns its airlight (a scattering-model dehazer)")
    target = target.to(airlight)
    known = ~target.isnan().any(dim=1)
    err = (airlight.flatten(1) - target.nan_to_num(0.0)).abs().mean(dim=1)
    return torch.where(known, err, torch.zeros_like(err))


# Below this sum over the channels of (J_c - A_c)^2, about 0.06 per channel, a pixel's t is left out
# of the transmission loss: J is too close to A for the pair to say what t rendered it.
MIN_TRANSMISSION_CONTRAST = 0.01


def transmission_error(coarse: Tensor | None, batch: dict[str, Tensor]) -> Tensor:
    """Per-sample mean absolute error of the coarse transmission t0 (N x 1 x h x w) against the t
    that renders the batch's clear crop into its hazy one under its known airlight
    (:func:`~hazefree.physics.transmission_of`), on the pixels where that t is determined; t0's size
    (the working size) may be smaller than the crop's. Samples without a known airlight, or without a
    determined pixel, count 0."""
    if coarse is None:
        raise ValueError("transmission_loss needs a model that returns its coarse transmission (Guided-Pix2Pix)")
    target = batch["airlight"].to(coarse)
    known = ~target.isnan().any(dim=1)
    t, contrast = transmission_of(batch["hazy"], batch["clear"], target.nan_to_num(1.0).view(-1, 3, 1, 1))
    valid = (contrast >= MIN_TRANSMISSION_CONTRAST).to(coarse)
    if t.shape[-2:] != coarse.shape[-2:]:
        size = coarse.shape[-2:]
        # averaged over the determined pixels only: a weighted area resize
        area = F.interpolate(valid, size=size, mode="area")
        t = F.interpolate(t * valid, size=size, mode="area") / area.clamp(min=1e-6)
        valid = (area > 0.5).to(coarse)
    count = valid.flatten(1).sum(1)
    err = ((coarse - t).abs() * valid).flatten(1).sum(1) / count.clamp(min=1.0)
    return torch.where(known & (count > 0), err, torch.zeros_like(err))


def with_physics_terms(
    loss: Tensor, out, batch: dict[str, Tensor], airlight_weight: float, transmission_weight: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss + airlight_weight * airlight_error + transmission_weight * transmission_error`` per
    sample (``TrainConfig.airlight_loss``, ``transmission_loss``), and each error that is on
    (``{"airlight": ..., "transmission": ...}``); a weight of 0 leaves its term out."""
    errors = {}
    if airlight_weight:
        errors["airlight"] = airlight_error(out.airlight, batch["airlight"])
        loss = loss + airlight_weight * errors["airlight"]
    if transmission_weight:
        errors["transmission"] = transmission_error(getattr(out, "coarse_transmission", None), batch)
        loss = loss + transmission_weight * errors["transmission"]
    return loss, errors


class Objective(Protocol):
    """What the trainer needs from a training method."""

    def networks(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def step(self, batch: dict[str, Tensor], weights: Tensor | None = None) -> dict[str, float]: ...

    def generator(self) -> nn.Module: ...

    def inner_loss(self, pred: Tensor, target: Tensor) -> Tensor: ...


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


def _reduce(losses: Tensor, weights: Tensor | None) -> Tensor:
    """The batch loss: the mean, or sum_i w_i l_i for BILD's patch weights (which sum to 1, so
    uniform weights give the mean)."""
    return losses.mean() if weights is None else (weights.detach() * losses).sum()


class SupervisedObjective:
    """One network trained on a per-sample reconstruction loss of its clear output."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, wrap=lambda m: m) -> None:
        self.model, self.train_model, self.kind = model, wrap(model), cfg.loss
        self.airlight_weight, self.transmission_weight = cfg.airlight_loss, cfg.transmission_loss
        self._opt = {"model": make_optimizer(model.parameters(), cfg.optim)}
        self.optim_cfg = cfg.optim

    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._opt

    def generator(self) -> nn.Module:
        return self.model

    def inner_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The per-sample loss that BILD reweights (shape N)."""
        return per_sample_loss(pred, target, self.kind)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-sample losses (each of shape N)."""
        out = self.train_model(batch["hazy"])
        loss, errors = with_physics_terms(per_sample_loss(out.clear, batch["clear"], self.kind), out, batch,
                                          self.airlight_weight, self.transmission_weight)
        return {"loss": loss, **{f"loss_{k}": v for k, v in errors.items()}}

    def step(self, batch: dict[str, Tensor], weights: Tensor | None = None) -> dict[str, float]:
        """One update; ``weights`` (N, summing to 1) replace the batch mean by a weighted sum."""
        losses = self.losses(batch)
        opt = self._opt["model"]
        opt.zero_grad(set_to_none=True)
        _reduce(losses["loss"], weights).backward()
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

    Under BILD the patch weights multiply each patch's whole generator loss (adversarial + L1) in
    the real update; the discriminator's update stays unweighted, and the virtual step and the
    validation objective use the reconstruction loss alone (:meth:`inner_loss`), because the
    adversarial term measures the current discriminator, not the data, and a virtual step
    through it would make D a second inner variable.
    """

    def __init__(self, generator: nn.Module, cfg: TrainConfig, wrap=lambda m: m) -> None:
        self.g = generator
        self.d = models.PatchDiscriminator(ndf=cfg.ndf)
        self.g_train, self.d_train = wrap(self.g), wrap(self.d)
        self.lambda_l1, self.kind = cfg.lambda_l1, cfg.loss
        self.airlight_weight, self.transmission_weight = cfg.airlight_loss, cfg.transmission_loss
        self._opt = {"generator": make_optimizer(self.g.parameters(), cfg.optim),
                     "discriminator": make_optimizer(self.d.parameters(), cfg.optim)}
        self.optim_cfg = cfg.optim

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._opt

    def generator(self) -> nn.Module:
        return self.g

    def inner_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The per-sample loss that BILD's virtual step and validation objective use (shape N)."""
        return per_sample_loss(pred, target, self.kind)

    def step(self, batch: dict[str, Tensor], weights: Tensor | None = None) -> dict[str, float]:
        """One D and one G update; ``weights`` (N, summing to 1) weight G's per-patch losses."""
        hazy, clear = batch["hazy"], batch["clear"]
        out = self.g_train(hazy)
        fake = out.clear

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
        # the physics terms on the L1 term's scale
        loss_g, errors = with_physics_terms(loss_gan + self.lambda_l1 * loss_l1, out, batch,
                                            self.lambda_l1 * self.airlight_weight,
                                            self.lambda_l1 * self.transmission_weight)
        opt_g = self._opt["generator"]
        opt_g.zero_grad(set_to_none=True)
        _reduce(loss_g, weights).backward()
        _clip(self.g.parameters(), self.optim_cfg)
        opt_g.step()
        self.d.requires_grad_(True)
        logs = {"loss_d": loss_d.mean().item(), "loss_g_gan": loss_gan.mean().item(),
                "loss_g_l1": loss_l1.mean().item(), "loss_g": loss_g.mean().item()}
        logs |= {f"loss_g_{k}": v.mean().item() for k, v in errors.items()}
        return logs
