"""BILD: bi-level patch reweighting (Jiang et al., ECCV 2022; supplementary eqs. 6a-6j, §3).

A small *patch reweighting network* f_phi scores every training patch of a batch; a softmax over
the batch turns the scores into weights w (sum 1; uniform = 1/N). The dehazing network theta is
trained on sum_i w_i l_i, and phi is trained so that this weighting lowers the loss on a held-out
validation set D_v. One step (:meth:`Bild.step`), under the paper's Markov assumption
grad_phi theta_{t-1} ~ 0:

1. w = softmax_batch(f_phi(patches)), computed as exp(log_softmax) so that the entropy term
   w log w stays finite when a weight underflows to 0.
2. Virtual step theta_t = theta_{t-1} - eta sum_i w_i grad_theta l_i(theta_{t-1}), built
   functionally (``torch.func.functional_call`` with ``create_graph``), so theta_t depends
   differentiably on w. eta is the learning rate the run's optimiser has at this step.
3. The outer objective O = J_v(D_v; theta_t) / s - alpha H(w), H = -sum_i w_i log w_i, is
   minimised over phi. Its gradient is eq. 6i: grad_phi O = sum_i R_i grad_phi w_i with, per patch,
   R_i = dO/dw_i = -eta grad J_v(theta_t)^T grad l_i(theta_{t-1}) / s + alpha (log w_i + 1).
   Each patch has its own R_i (one scalar per batch would give a zero gradient under the softmax,
   since sum_i grad_phi w_i = 0). The inner products come from one double-backward pass
   (``autograd.grad`` of J_v with respect to w), which equals the per-sample-gradient form
   without storing N copies of theta's gradient; ``torch.func.vmap``/``jvp`` cannot be used
   because the guided filter (DehazeNet, Guided-Pix2Pix) is a custom ``autograd.Function``.
4. phi takes an Adam step; the dehazing network then takes its real step through the run's own
   objective, optimiser, gradient clipping and schedule, with the new weights, detached.

Scaling (no per-model tuning): s is the standard deviation over the batch of the data part
-eta g_v^T g_i (detached; 1 if it is 0). The raw data part scales with eta and with the gradient
norms of each model (orders of magnitude between AOD-Net and FFA-Net, and along one run), so a
fixed alpha either freezes the weights or lets them collapse; normalised, the data part has unit
spread in every batch and ``alpha`` is its exchange rate with the entropy. Adding a constant to
all R_i changes nothing (sum_i grad_phi w_i = 0), so centring is implicit.

With Adam on phi (steps of about its learning rate whatever the gradient's size) a very large
alpha keeps the weights within one such step of uniform: the entropy gradient vanishes at
uniform weights, so the first step follows the data part, and every later one is pulled back.

Adam: the virtual step is a plain gradient step of size eta; Adam's preconditioning (and SGD's
momentum and weight decay, and clipping) are left out of it, as in Ren et al. 2018 and
Meta-Weight-Net. For small eta, R_i / s tends to -g_v(theta_{t-1})^T g_i / std(.), which does
not depend on eta, so leaving the preconditioner out changes the probe's point theta_t only
by O(eta); the real update uses the full optimiser.

Guided-Pix2Pix: the virtual step and J_v use the reconstruction loss only
(:meth:`Pix2PixObjective.inner_loss`); the weights multiply each patch's whole generator loss
(adversarial + L1) in the real update; the discriminator is trained unweighted.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .config import TrainConfig
from .objectives import Objective

__all__ = ["PatchReweighter", "Bild", "BildStep", "reweighter_input"]


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)


class PatchReweighter(nn.Module):
    """f_phi of §3 / Fig. 1: three (stride-2 conv + residual block) stages with LeakyReLU, global
    average pooling, a fully connected layer to one score per patch. The softmax over the batch
    is taken by :class:`Bild`. The last layer starts at zero, so training starts from uniform
    weights, i.e. from plain training."""

    def __init__(self, in_channels: int = 6, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for k in range(3):
            out = width * 2**k
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2), _ResidualBlock(out)]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3))).squeeze(1)


def reweighter_input(batch: dict[str, Tensor], kind: str) -> Tensor:
    """What f_phi sees: the (hazy, clear) pair as 6 channels, or the hazy patch alone."""
    if kind == "pair":
        return torch.cat([batch["hazy"], batch["clear"]], dim=1)
    if kind == "hazy":
        return batch["hazy"]
    raise ValueError(f"bild.input must be 'pair' or 'hazy', got {kind!r}")


class BildStep(NamedTuple):
    """What one outer step saw: the weights used before and after phi's update (N), R_i (N),
    the normaliser s and the validation loss J_v(theta_t)."""

    weights: Tensor
    new_weights: Tensor
    r: Tensor
    scale: float
    val_loss: float


class Bild:
    """The outer loop around a run's objective; see the module docstring."""

    def __init__(self, objective: Objective, cfg: TrainConfig, val_batches, world: int = 1) -> None:
        b = cfg.bild
        if b.alpha < 0:
            raise ValueError(f"bild.alpha must be >= 0, got {b.alpha}")
        if b.input not in ("pair", "hazy"):
            raise ValueError(f"bild.input must be 'pair' or 'hazy', got {b.input!r}")
        self.objective, self.model, self.kind, self.alpha = objective, objective.generator(), b.input, b.alpha
        self.val_batches, self.world = val_batches, world
        self.net = PatchReweighter(6 if b.input == "pair" else 3, b.width)
        if world > 1:  # every rank starts from rank 0's phi
            for p in self.net.parameters():
                dist.broadcast(p.data, 0)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=b.lr)

    def log_weights(self, batch: dict[str, Tensor]) -> Tensor:
        """log w over the batch (N)."""
        return F.log_softmax(self.net(reweighter_input(batch, self.kind)), dim=0)

    def _virtual_val_loss(self, batch: dict[str, Tensor], val: dict[str, Tensor], w: Tensor, eta: float) -> Tensor:
        """J_v(D_v; theta_t) with theta_t = theta_{t-1} - eta grad sum_i w_i l_i, differentiable in w."""
        theta = {k: p.detach().requires_grad_() for k, p in self.model.named_parameters() if p.requires_grad}
        inner = self.objective.inner_loss(functional_call(self.model, theta, (batch["hazy"],)).clear, batch["clear"])
        grads = torch.autograd.grad((w * inner).sum(), list(theta.values()), create_graph=True,
                                    allow_unused=True, materialize_grads=True)
        theta_t = {k: v - eta * g for (k, v), g in zip(theta.items(), grads)}
        pred = functional_call(self.model, theta_t, (val["hazy"],)).clear
        return self.objective.inner_loss(pred, val["clear"]).mean()

    def outer_objective(self, batch: dict[str, Tensor], val: dict[str, Tensor], eta: float, scale: float) -> Tensor:
        """O(phi) = J_v(theta_t(phi)) / scale - alpha H(w(phi)), differentiable in phi (for checks)."""
        log_w = self.log_weights(batch)
        w = log_w.exp()
        return self._virtual_val_loss(batch, val, w, eta) / scale + self.alpha * (w * log_w).sum()

    def outer_gradient(self, batch: dict[str, Tensor], val: dict[str, Tensor], eta: float) -> BildStep:
        """Leave grad_phi O (eq. 6i) in ``self.net``'s ``.grad``; returns the weights and R_i."""
        log_w = self.log_weights(batch)
        w = log_w.exp()
        w_leaf = w.detach().requires_grad_()
        val_loss = self._virtual_val_loss(batch, val, w_leaf, eta)
        (d_j,) = torch.autograd.grad(val_loss, w_leaf)  # -eta grad J_v(theta_t)^T grad l_i(theta_{t-1})
        scale = float((d_j - d_j.mean()).pow(2).mean().sqrt())
        if not scale > 0:
            scale = 1.0
        r = d_j / scale + self.alpha * (log_w.detach() + 1.0)
        self.opt.zero_grad(set_to_none=True)
        (r * w).sum().backward()  # sum_i R_i grad_phi w_i
        return BildStep(w.detach(), w.detach(), r, scale, float(val_loss.detach()))

    def step(self, batch: dict[str, Tensor], step: int, rank: int, eta: float) -> tuple[dict[str, float], BildStep]:
        """One bi-level step (module docstring, 1-4); returns the objective's losses and what BILD saw."""
        val = self.val_batches.batch(step, rank)
        info = self.outer_gradient(batch, val, eta)
        if self.world > 1:
            for p in self.net.parameters():
                dist.all_reduce(p.grad)
                p.grad /= self.world
        self.opt.step()
        with torch.no_grad():
            new = self.log_weights(batch).exp()
        losses = self.objective.step(batch, new)
        losses = {**losses, "bild_val_loss": info.val_loss}
        return losses, info._replace(new_weights=new)
