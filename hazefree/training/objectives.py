"""Objectives: what one optimisation step means for a model, with losses kept per sample (shape N)
so that a reweighting trainer (BILD) can weight them; the optimisers and schedules they use."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
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


def with_airlight_term(loss: Tensor, out, batch: dict[str, Tensor], weight: float) -> tuple[Tensor, Tensor | None]:
    """``loss + weight * airlight_error`` per sample (``TrainConfig.airlight_loss``), and that error;
    ``(loss, None)`` when the weight is 0."""
    if not weight:
        return loss, None
    err = airlight_error(out.airlight, batch["airlight"])
    return loss + weight * err, err


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
        self.airlight_weight = cfg.airlight_loss
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
        loss, err = with_airlight_term(per_sample_loss(out.clear, batch["clear"], self.kind), out, batch,
                                       self.airlight_weight)
        return {"loss": loss} if err is None else {"loss": loss, "loss_airlight": err}

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
        self.airlight_weight = cfg.airlight_loss
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
        # the airlight term on the L1 term's scale
        loss_g, err = with_airlight_term(loss_gan + self.lambda_l1 * loss_l1, out, batch,
                                         self.lambda_l1 * self.airlight_weight)
        opt_g = self._opt["generator"]
        opt_g.zero_grad(set_to_none=True)
        _reduce(loss_g, weights).backward()
        _clip(self.g.parameters(), self.optim_cfg)
        opt_g.step()
        self.d.requires_grad_(True)
        logs = {"loss_d": loss_d.mean().item(), "loss_g_gan": loss_gan.mean().item(),
                "loss_g_l1": loss_l1.mean().item(), "loss_g": loss_g.mean().item()}
        if err is not None:
            logs["loss_g_airlight"] = err.mean().item()
        return logs
