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

Cost (``bild.mode``, ``bild.every``; deviations from the paper, see docs/bild.md). ``exact`` is
steps 1-4 above, every step: 4-5 plain steps. ``fast`` (the default) makes two changes:

* R_i's data part by a central difference along the validation gradient instead of the double
  backward: -eta g_v^T g_i ~ -eta [l_i(theta + eps g_v) - l_i(theta - eps g_v)] / (2 eps), with
  g_v = grad J_v(theta_{t-1}) (one forward/backward of D_v) and two forwards of the batch without
  autograd. Every parameter takes part; the differences from eq. 6i are O(eta) (g_v taken at
  theta_{t-1} rather than at the virtual theta_t, as in the small-eta limit above) and O(eps^2).
  J_v is then J_v(theta_{t-1}).
* phi takes its step every ``every`` steps (default 4); in between the weights come from
  f_phi's forward alone (the reweighter reused), and the logged s and J_v are the last ones.

Options tried as issue #25's default alpha rule, which failed on two of its four judged runs
(docs/bild.md), so they are off by default (both are deviations from the paper):

* ``ess`` > 0: w = softmax(beta f_phi) with beta in (0, 1] the largest for which the batch's
  effective sample size 1 / sum w_i^2 is >= ess N (:func:`temper`, bisection; beta = 1, the
  paper's softmax, whenever that already holds). The weights of a batch cannot collapse onto a
  few patches, whatever alpha and the data; eq. 6i's gradient is taken with beta held fixed.
* ``relative``: the virtual step (both modes) is on sum_i w_i log l_i, so R_i's data part is
  -eta g_v^T g_i / l_i, each patch's alignment with the validation gradient per unit of its own
  loss. Measured: its ranks are unrelated to the paper's R_i, and with it the fast probe and the
  exact form disagree (the virtual step is no longer small).
* ``ess_target``: beta unbounded above, so the batch's ESS is held at ess N (:func:`temper`'s
  ceiling).
* ``memory`` (:class:`ImageEvidence`) and ``consistency`` (:class:`ConsistencyEvidence`,
  :func:`pair_consistency`): R_i's evidence accumulated over the run, per training image or pooled
  over the pairs' structural consistency; each is in a later rule that failed too.
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

__all__ = ["PatchReweighter", "ImageEvidence", "ConsistencyEvidence", "Bild", "BildStep", "pair_consistency",
           "reweighter_input"]


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


class ImageEvidence(nn.Module):
    """Per training image, the running mean of its patches' normalised data part of R_i
    (``bild.memory``; a deviation from the paper, docs/bild.md).

    At one batch's optimum of the outer objective, log w_i = const - R_i^data / alpha (the entropy
    term's stationary point). One batch's R_i^data is noisy (unit spread by construction); its mean
    over every batch an image has appeared in is not, so the score added to f_phi's is that
    optimum, averaged over time: -m_i / alpha, with m_i = sum of the image's centred, normalised
    data parts / (its count + ``prior``): shrunk towards 0 (uniform) while an image has been seen
    only a few times. Buffers, so they are checkpointed with the reweighter.
    """

    def __init__(self, n_images: int, prior: float) -> None:
        super().__init__()
        if prior <= 0:
            raise ValueError(f"bild.memory_prior must be > 0, got {prior}")
        self.prior = prior
        self.register_buffer("total", torch.zeros(n_images, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(n_images, dtype=torch.float64))

    def mean(self, index: Tensor) -> Tensor:
        """m_i of the images ``index`` (N), as float32."""
        return (self.total[index] / (self.count[index] + self.prior)).float()

    def add(self, index: Tensor, data_part: Tensor) -> None:
        """Count one batch: ``data_part`` (N) is R_i^data / s, centred here over the batch."""
        centred = (data_part - data_part.mean()).double()
        self.total.index_add_(0, index, centred)
        self.count.index_add_(0, index, torch.ones_like(centred))


def pair_consistency(hazy: Tensor, clear: Tensor) -> Tensor:
    """c_i in [-1, 1] (N): the cosine between the hazy and the clear patch's gradient fields (forward
    differences of the channel mean). Haze under a slowly varying t scales the scene's gradients,
    I = J t + A (1 - t) gives grad I ~ t grad J, so a true pair is near 1; a target of another scene,
    noise or a misaligned one is near 0."""
    def grads(x: Tensor) -> Tensor:
        g = x.mean(dim=1)
        return torch.cat([(g[:, 1:, :-1] - g[:, :-1, :-1]).flatten(1), (g[:, :-1, 1:] - g[:, :-1, :-1]).flatten(1)], 1)

    a, b = grads(hazy), grads(clear)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


class ConsistencyEvidence(nn.Module):
    """The pooled slope b of the normalised R_i data part on the pair consistency c_i
    (:func:`pair_consistency`), for ``bild.consistency`` (a deviation from the paper, docs/bild.md).

    Like :class:`ImageEvidence` it uses the outer objective's per-batch optimum log w_i = const -
    R_i^data / alpha, but pools it over a feature instead of an image: b = sum (c - c_bar)(d - d_bar)
    / (sum (c - c_bar)^2 + ``prior``), with sums over every patch of every probed batch, centred
    within each batch. A single image's lasting offset in R_i then averages out over the others that
    share its consistency. The score added to f_phi's is -b c_i / alpha.
    """

    def __init__(self, prior: float) -> None:
        super().__init__()
        if prior <= 0:
            raise ValueError(f"bild.consistency_prior must be > 0, got {prior}")
        self.prior = prior
        self.register_buffer("sxy", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sxx", torch.zeros((), dtype=torch.float64))

    def slope(self) -> float:
        return float(self.sxy / (self.sxx + self.prior))

    def add(self, c: Tensor, data_part: Tensor) -> None:
        """Count one batch: consistencies ``c`` and data parts R_i^data / s (N each)."""
        dc, dd = (c - c.mean()).double(), (data_part - data_part.mean()).double()
        self.sxy += (dc * dd).sum()
        self.sxx += dc.pow(2).sum()


def reweighter_input(batch: dict[str, Tensor], kind: str) -> Tensor:
    """What f_phi sees: the (hazy, clear) pair as 6 channels, or the hazy patch alone."""
    if kind == "pair":
        return torch.cat([batch["hazy"], batch["clear"]], dim=1)
    if kind == "hazy":
        return batch["hazy"]
    raise ValueError(f"bild.input must be 'pair' or 'hazy', got {kind!r}")


class BildStep(NamedTuple):
    """What one outer step saw: the weights used before and after phi's update (N), R_i (N),
    the normaliser s and the validation loss J_v. On a step without phi's update (``fast`` mode
    between refreshes) ``r`` is None, both weights are the ones used, s and J_v the last ones."""

    weights: Tensor
    new_weights: Tensor
    r: Tensor | None
    scale: float
    val_loss: float
    refreshed: bool = True


def _index(batch: dict[str, Tensor]) -> Tensor:
    """The batch's training-image indices (the crop sampler's ``index``), which ``bild.memory`` needs."""
    if "index" not in batch:
        raise ValueError("bild.memory needs the batch's image indices (batch['index'])")
    return batch["index"].long()


def _ess(w: Tensor) -> float:
    """Effective sample size 1 / sum w_i^2 of weights summing to 1 (N when uniform)."""
    return float(1.0 / w.pow(2).sum())


def temper(scores: Tensor, share: float, iters: int = 50, ceiling: float = 1.0) -> float:
    """The largest beta in (0, ``ceiling``] with ESS(softmax(beta scores)) >= share N, by bisection
    (the ESS falls as beta grows, from N at beta = 0): tempered importance weights. ``ceiling``
    when the weights at that beta already have that ESS (with the default 1: the paper's softmax
    untouched; with a large ceiling the batch's ESS is held at share N, ``bild.ess_target``)."""
    n = scores.numel()

    def ess(beta: float) -> float:
        return _ess(torch.softmax(beta * scores.double(), dim=0))

    if ess(ceiling) >= share * n:
        return ceiling
    lo, hi = 0.0, ceiling
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) >= share * n else (lo, mid)
    return lo


# beta's upper bound under bild.ess_target: far beyond what any batch needs to reach its ESS
TARGET_CEILING = 1e4


class Bild:
    """The outer loop around a run's objective; see the module docstring."""

    def __init__(self, objective: Objective, cfg: TrainConfig, val_batches, world: int = 1,
                 n_images: int | None = None) -> None:
        b = cfg.bild
        if b.alpha < 0:
            raise ValueError(f"bild.alpha must be >= 0, got {b.alpha}")
        if b.input not in ("pair", "hazy"):
            raise ValueError(f"bild.input must be 'pair' or 'hazy', got {b.input!r}")
        if b.mode not in ("fast", "exact"):
            raise ValueError(f"bild.mode must be 'fast' or 'exact', got {b.mode!r}")
        self.every = b.every if b.every is not None else (4 if b.mode == "fast" else 1)
        if self.every < 1:
            raise ValueError(f"bild.every must be >= 1, got {b.every}")
        self.objective, self.model, self.kind, self.alpha = objective, objective.generator(), b.input, b.alpha
        self.mode, self.fd_step, self.relative = b.mode, b.fd_step, b.relative
        if not 0 <= b.ess < 1:
            raise ValueError(f"bild.ess must be in [0, 1) (0 = off), got {b.ess}")
        self.ess_min = b.ess
        self.ess_ceiling = TARGET_CEILING if b.ess_target else 1.0
        self.val_batches, self.world = val_batches, world
        self._last_scale, self._last_val_loss = 1.0, float("nan")
        self.net = PatchReweighter(6 if b.input == "pair" else 3, b.width)
        self.memory: ImageEvidence | None = None
        if b.memory:
            if n_images is None:
                raise ValueError("bild.memory needs the number of training images")
            if self.alpha <= 0:
                raise ValueError("bild.memory needs bild.alpha > 0 (its scores are -m_i / alpha)")
            self.memory = ImageEvidence(n_images, b.memory_prior)
        self.consistency: ConsistencyEvidence | None = None
        if b.consistency:
            if self.alpha <= 0:
                raise ValueError("bild.consistency needs bild.alpha > 0 (its scores are -b c / alpha)")
            self.consistency = ConsistencyEvidence(b.consistency_prior)
        if world > 1:  # every rank starts from rank 0's phi
            for p in self.net.parameters():
                dist.broadcast(p.data, 0)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=b.lr)

    def log_weights(self, batch: dict[str, Tensor]) -> Tensor:
        """log w over the batch (N): log_softmax(beta (f_phi - m / alpha - b c / alpha)), m the images'
        evidence (``bild.memory``, else 0), b c the consistency evidence (``bild.consistency``, else
        0), beta = :func:`temper` of the scores under the ESS rule (``bild.ess`` > 0), else 1."""
        scores = self.net(reweighter_input(batch, self.kind))
        if self.memory is not None:
            scores = scores - self.memory.mean(_index(batch)) / self.alpha
        if self.consistency is not None:
            scores = scores - self.consistency.slope() * pair_consistency(batch["hazy"], batch["clear"]) / self.alpha
        if self.ess_min > 0:
            scores = scores * temper(scores.detach(), self.ess_min, ceiling=self.ess_ceiling)
        return F.log_softmax(scores, dim=0)

    def _virtual_val_loss(self, batch: dict[str, Tensor], val: dict[str, Tensor], w: Tensor, eta: float) -> Tensor:
        """J_v(D_v; theta_t) with theta_t = theta_{t-1} - eta grad sum_i w_i l_i, differentiable in w."""
        theta = {k: p.detach().requires_grad_() for k, p in self.model.named_parameters() if p.requires_grad}
        inner = self.objective.inner_loss(functional_call(self.model, theta, (batch["hazy"],)).clear, batch["clear"])
        if self.relative:  # bild.relative: the virtual step on sum_i w_i log l_i
            inner = torch.log(inner.clamp_min(1e-12))
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

    def exact_data_part(self, batch: dict[str, Tensor], val: dict[str, Tensor], w: Tensor,
                        eta: float) -> tuple[Tensor, float]:
        """dJ_v(theta_t)/dw_i = -eta grad J_v(theta_t)^T grad l_i(theta_{t-1}) (N) by the double
        backward, and J_v(theta_t)."""
        w_leaf = w.detach().requires_grad_()
        val_loss = self._virtual_val_loss(batch, val, w_leaf, eta)
        (d_j,) = torch.autograd.grad(val_loss, w_leaf)
        return d_j, float(val_loss.detach())

    def fast_data_part(self, batch: dict[str, Tensor], val: dict[str, Tensor], eta: float) -> tuple[Tensor, float]:
        """-eta g_v^T g_i (N) by a central difference of l_i along g_v = grad J_v(theta_{t-1})
        (module docstring, ``fast``), and J_v(theta_{t-1}). The step eps moves theta by ``fd_step``
        times its norm; both forwards draw the same random numbers (dropout)."""
        theta = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        pred = functional_call(self.model, theta, (val["hazy"],)).clear
        val_loss = self.objective.inner_loss(pred, val["clear"]).mean()
        g_v = torch.autograd.grad(val_loss, list(theta.values()), allow_unused=True, materialize_grads=True)
        with torch.no_grad():
            g_norm = torch.sqrt(sum(g.pow(2).sum() for g in g_v))
            p_norm = torch.sqrt(sum(p.pow(2).sum() for p in theta.values()))
            n = batch["hazy"].shape[0]
            if not (g_norm > 0 and p_norm > 0):
                return torch.zeros(n), float(val_loss.detach())
            eps = float(self.fd_step * p_norm / g_norm)
            state = torch.get_rng_state()
            loss = []
            for sign in (1.0, -1.0):
                torch.set_rng_state(state)
                moved = {k: p + sign * eps * g for (k, p), g in zip(theta.items(), g_v)}
                out = functional_call(self.model, moved, (batch["hazy"],)).clear
                loss.append(self.objective.inner_loss(out, batch["clear"]).double())
            if self.relative:  # d log l_i: each patch's change relative to its own loss
                loss = [torch.log(v.clamp_min(1e-12)) for v in loss]
        return (-eta * (loss[0] - loss[1]) / (2 * eps)).float(), float(val_loss.detach())

    def outer_gradient(self, batch: dict[str, Tensor], val: dict[str, Tensor], eta: float) -> BildStep:
        """Leave grad_phi O (eq. 6i) in ``self.net``'s ``.grad``; returns the weights and R_i.
        The data part of R_i comes from :meth:`exact_data_part` or :meth:`fast_data_part`
        (``bild.mode``)."""
        log_w = self.log_weights(batch)
        w = log_w.exp()
        if self.mode == "exact":
            d_j, val_loss = self.exact_data_part(batch, val, w, eta)
        else:
            d_j, val_loss = self.fast_data_part(batch, val, eta)
        d_j = d_j.to(w)
        scale = float((d_j - d_j.mean()).pow(2).mean().sqrt())
        if not scale > 0:
            scale = 1.0
        r = d_j / scale + self.alpha * (log_w.detach() + 1.0)
        if self.memory is not None:
            for index, part in self._every_rank(_index(batch), d_j / scale):
                self.memory.add(index, part)
        if self.consistency is not None:
            for c, part in self._every_rank(pair_consistency(batch["hazy"], batch["clear"]), d_j / scale):
                self.consistency.add(c, part)
        self.opt.zero_grad(set_to_none=True)
        (r * w).sum().backward()  # sum_i R_i grad_phi w_i
        return BildStep(w.detach(), w.detach(), r, scale, val_loss)

    def _every_rank(self, *tensors: Tensor) -> list[tuple[Tensor, ...]]:
        """``tensors`` as every rank has them (one tuple per rank) under DDP, else this rank's:
        the evidence counts every rank's batch."""
        if self.world == 1:
            return [tensors]
        gathered = []
        for t in tensors:
            copies = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(copies, t.contiguous())
            gathered.append(copies)
        return list(zip(*gathered))

    def step(self, batch: dict[str, Tensor], step: int, rank: int, eta: float) -> tuple[dict[str, float], BildStep]:
        """One bi-level step (module docstring, 1-4; phi's update only every ``every`` steps);
        returns the objective's losses and what BILD saw."""
        if step % self.every:
            with torch.no_grad():
                w = self.log_weights(batch).exp()
            info = BildStep(w, w, None, self._last_scale, self._last_val_loss, refreshed=False)
        else:
            val = self.val_batches.batch(step, rank)
            info = self.outer_gradient(batch, val, eta)
            if self.world > 1:
                for p in self.net.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
            self.opt.step()
            with torch.no_grad():
                new = self.log_weights(batch).exp()
            info = info._replace(new_weights=new)
            self._last_scale, self._last_val_loss = info.scale, info.val_loss
        losses = self.objective.step(batch, info.new_weights)
        losses = {**losses, "bild_val_loss": info.val_loss, "bild_ess": _ess(info.new_weights) / info.new_weights.numel()}
        return losses, info
