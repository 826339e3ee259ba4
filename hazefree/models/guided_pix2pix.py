"""Guided-Pix2Pix (Ma et al., "Guided-Pix2Pix", IEEE JSTARS 2021).

A Pix2Pix U-Net G0 predicts a coarse transmission t0 = sigmoid(G0(I)) (eq. 39), the parameter-free
guided filter layer refines it with the hazy image's gray version as guide, t = f_guided(I, t0)
(eq. 41), A is the brightest-luma colour, and J = (I - A) / t + A (eq. 42). Trained with L1 plus a
conditional PatchGAN loss (eqs. 43-44); see :mod:`hazefree.training`.

Beyond the paper, the U-Net can run at a working resolution (``work_size``, the longer side): a
larger input is resized down for the U-Net, and the fast guided filter computes the refinement's
coefficients there and applies them at full resolution, so a 4K photo costs about as much as its
working-size version while the transmission keeps full-resolution edges. Also beyond the paper: a
learned airlight head (:class:`AirlightHead`) and haze gates that blend in the dark-channel prior's
strength (:mod:`hazefree.models.haze_gate`), both reading :mod:`hazefree.models.haze_statistics`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import fast_guided_filter, guided_filter, rgb_to_gray
from ..physics import MIN_AIRLIGHT, airlight_floor, estimate_airlights, opened_maximum
from .haze_gate import (
    CautiousGate, HazeGate, RegionGate, blend_prior, gate_inputs, opening_radius, prior_airlight, prior_radius,
    prior_transmission, region_inputs,
)
from .haze_statistics import AIRLIGHT_ESTIMATORS, DEPTH_STATISTICS, depth_statistics, stack_estimates
from .outputs import DehazeOutput


def _norm(channels: int) -> nn.Module:
    # InstanceNorm (the paper's choice) keeps no running statistics: the model has no hidden state,
    # so functional_call / per-sample training see exactly what inference sees.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net (Isola et al. 2017, "unet_256" with ``num_downs=8``).

    Encoder blocks: conv 4x4 stride 2 -> InstanceNorm -> LeakyReLU(0.2) (no norm on the first and
    the innermost block). Decoder blocks: ReLU -> transposed conv 4x4 stride 2 -> InstanceNorm ->
    Dropout (the three innermost decoder blocks) with skip connections by concatenation.
    Channel widths: ngf * (1, 2, 4, 8, 8, ...).

    Input sizes are padded (reflect) to a multiple of 2**num_downs and the output cropped back, so
    any H x W works.

    Shape:
        N x in_channels x H x W -> N x out_channels x H x W (raw, no output activation).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        num_downs: int = 8,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        self.num_downs = num_downs
        self.down = nn.ModuleList()
        c_in = in_channels
        for i, c in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c, 4, stride=2, padding=1)]
            if 0 < i < num_downs - 1:
                layers.append(_norm(c))
            layers.append(nn.LeakyReLU(0.2))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for j, i in enumerate(range(num_downs - 1, 0, -1)):  # innermost first
            c_skip_in = widths[i] if j == 0 else 2 * widths[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_skip_in, widths[i - 1], 4, stride=2, padding=1)]
            layers.append(_norm(widths[i - 1]))
            if j < 3 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.head = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and the innermost (bottleneck) features, N x ngf*min(2**(num_downs-1), 8) x h x w."""
        h, w = x.shape[-2:]
        m = 2**self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect padding needs pad < size; replicate covers tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        bottleneck = skips.pop()  # the innermost output is x itself
        for block in self.up:
            x = block(x)
            x = torch.cat([x, skips.pop()], dim=1)
        return self.head(x)[..., :h, :w], bottleneck


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (Isola et al. 2017; 70 x 70 receptive field with ``n_layers=3``).

    Sees the hazy image concatenated with a clear (real or generated) image and returns one logit
    per patch. Blocks: conv 4x4 -> InstanceNorm -> LeakyReLU(0.2) (Ma et al. Sec. III-E).

    Shape:
        (N x 3 x H x W, N x 3 x H x W) -> N x 1 x H' x W' logits.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_next = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1), _norm(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, hazy: Tensor, clear: Tensor) -> Tensor:
        return self.net(torch.cat([hazy, clear], dim=1))


class NetworkCoarse(NamedTuple):
    """The network's own coarse output (:meth:`GuidedPix2Pix.network_coarse`)."""

    airlight: Tensor  # N x 3 x 1 x 1
    t0: Tensor  # N x 1 x h x w, working size
    estimates: dict[str, Tensor]  # airlight estimates of the input, by method


class Prior(NamedTuple):
    """The dark-channel prior and the gate's inputs (:meth:`GuidedPix2Pix.prior`)."""

    transmission: Tensor  # N x 1 x h x w, He et al. eq. 12 at the working size
    airlight: Tensor  # N x 3 x 1 x 1
    inputs: Tensor  # N x 27, :func:`gate_inputs`


class AirlightHead(nn.Module):
    """Learned correction of an airlight estimate (a deviation from the paper, which uses max luma).

    Max luma is right for dense white haze but is outshone by bright objects under dim haze;
    the dark-channel rules err the other way on scenes whose haziest pixels are not opaque (an
    indoor room whose far wall has t = 0.5 shows at most A / 2 + J / 2, so every rule that reads A
    off the image's pixels finds it too dark). The head sees the U-Net's pooled bottleneck
    features, the three estimates (:data:`AIRLIGHT_ESTIMATORS`) and :func:`depth_statistics` of the
    coarse transmission, from which A can be extrapolated: I = J t + A (1 - t) at the haziest
    pixels. It returns A = clamp(A_ref + 0.5 tanh(delta)) per channel, where A_ref is the model's
    configured estimator, and is trained end to end through J = (I - A) / t + A (and, where a
    training pair says what A is, on A itself: ``TrainConfig.airlight_loss``). The last layer
    starts at zero, so a new head leaves a trained model's output unchanged.

    With ``features=False`` the head reads only the estimates and the depth statistics (27 numbers
    that describe the haze, none that identify the scene), so that it cannot learn the training
    scenes' airlights by their look.

    Shape:
        (N x F inputs from :func:`head_inputs`, N x 3 x 1 x 1 A_ref) -> N x 3 x 1 x 1, where
        F = C + 3 * len(AIRLIGHT_ESTIMATORS) + DEPTH_STATISTICS for C bottleneck channels.
    """

    def __init__(self, channels: int, hidden: int = 64, features: bool = True) -> None:
        super().__init__()
        self.skip = 0 if features else channels  # leading inputs the head does not read
        self.mlp = nn.Sequential(
            nn.Linear(channels - self.skip + 3 * len(AIRLIGHT_ESTIMATORS) + DEPTH_STATISTICS, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, inputs: Tensor, reference: Tensor) -> Tensor:
        delta = 0.5 * torch.tanh(self.mlp(inputs[:, self.skip :]))
        return (reference + delta.view_as(reference)).clamp(MIN_AIRLIGHT, 1.0)


def head_inputs(bottleneck: Tensor, estimates: Tensor, low: Tensor, t0: Tensor) -> Tensor:
    """The :class:`AirlightHead`'s input: the pooled bottleneck, the N x 9 airlight ``estimates``
    (:data:`AIRLIGHT_ESTIMATORS`, in order) and :func:`depth_statistics` of the working-size image
    ``low`` by the coarse ``t0``. t0 enters as an input, like the estimates: the head's error does
    not steer the transmission through it."""
    return torch.cat([bottleneck.mean(dim=(2, 3)), estimates, depth_statistics(low, t0.detach())], dim=1)


def working_size(h, w, work_size: int):
    """(h', w') with the longer side ``work_size`` (aspect kept, rounded half up), or (h, w) when the
    longer side is not larger. One integer formula without a branch, so that it also holds for the
    symbolic sizes of an ONNX export (:mod:`hazefree.export`): with M = max(h, w, work_size),
    h' = max(1, round(h work_size / M))."""
    m = torch.sym_max(torch.sym_max(h, w), work_size)
    return (
        torch.sym_max(1, (2 * h * work_size + m) // (2 * m)),
        torch.sym_max(1, (2 * w * work_size + m) // (2 * m)),
    )


class GuidedPix2Pix(nn.Module):
    """Guided-Pix2Pix generator G: U-Net -> guided filter layer -> scattering equation.

    Args:
        ngf: base width of the U-Net.
        num_downs: number of U-Net down-sampling blocks.
        dropout: dropout in the three innermost decoder blocks (training only).
        radius: guided-filter radius, in pixels of the working resolution (paper: 60 at 512 x 512).
        eps: guided-filter epsilon (paper: 1e-8).
        t_min: lower bound of the refined transmission; J is clipped to [0, 1] in eval mode only,
            so training keeps gradients for every pixel.
        airlight: airlight estimator, ``"max_luma"`` (paper), ``"dark_channel"`` or
            ``"dark_channel_brightest"`` (see :func:`~hazefree.physics.estimate_airlight`).
        airlight_head: refine that estimate with a learned :class:`AirlightHead` (not in the paper).
        airlight_head_features: the head also reads the U-Net's pooled bottleneck features.
        airlight_floor: raise A to :func:`~hazefree.physics.airlight_floor` of the working-size image
            and its refined t, letting this fraction of pixels clip (e.g. 0.01); ``None`` keeps the
            estimate (the paper). Not in the paper: a pixel-read A is too dark under light haze.
        haze_gate: blend in the dark-channel prior's t and A per image by a learned :class:`HazeGate`
            (not in the paper; issue #24).
        gate_members: with the gate, a :class:`CautiousGate` of this many members (1: one :class:`HazeGate`).
        gate_fog: the cautious gate's fog detector, which moves g to the members' median on real fog
            (not in the paper; stage 15).
        region_cells: with the gate, also a :class:`RegionGate` of this many cells a side, which sets
            the transmission's g per region (not in the paper; stage 13); ``None``: none.
        region_members: the region gate's members (as ``gate_members``).
        gate_max: the haze gate's largest g (1: the prior's strength; 1.5: half as deep again, stage 14).
        prior_airlight_window: with the gate, cap the prior's A by :func:`~hazefree.physics.opened_maximum`
            of the working-size image with a window of this share of its longer side (0.03: 15 px
            at 512), so that a headlight is not read as the airlight; ``None``: DCP's A as it is.
        work_size: longer side at which the U-Net runs; larger inputs are resized down and the fast
            guided filter carries t back to full resolution. ``None`` runs at full resolution.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` (clear, transmission, airlight,
        coarse_transmission).
    """

    def __init__(
        self,
        ngf: int = 64,
        num_downs: int = 8,
        dropout: float = 0.5,
        radius: int = 60,
        eps: float = 1e-8,
        t_min: float = 0.05,
        airlight: str = "max_luma",
        work_size: int | None = None,
        airlight_head: bool = False,
        airlight_floor: float | None = None,
        airlight_head_features: bool = True,
        haze_gate: bool = False,
        prior_airlight_window: float | None = None,
        gate_members: int = 1,
        region_cells: int | None = None,
        region_members: int = 1,
        gate_max: float = 1.0,
        gate_fog: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = UNetGenerator(3, 1, ngf=ngf, num_downs=num_downs, dropout=dropout)
        self.radius, self.eps, self.t_min = radius, eps, t_min
        self.airlight, self.work_size, self.airlight_floor = airlight, work_size, airlight_floor
        bottleneck = ngf * min(2 ** (num_downs - 1), 8)
        self.airlight_head = AirlightHead(bottleneck, features=airlight_head_features) if airlight_head else None
        self.haze_gate = None
        if haze_gate:
            if gate_fog and gate_members == 1:
                raise ValueError("gate_fog chooses between a cautious gate's members: it needs gate_members > 1")
            self.haze_gate = (HazeGate(top=gate_max) if gate_members == 1
                              else CautiousGate(gate_members, top=gate_max, fog=gate_fog))
        if region_cells is not None and not haze_gate:
            raise ValueError("region_cells refines the haze gate's g: it needs haze_gate=True")
        self.region_gate = None if region_cells is None else RegionGate(region_cells, region_members)
        self.prior_airlight_window = prior_airlight_window

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The U-Net's input size for an H x W image: its own size, or longer side ``work_size``."""
        if self.work_size is None or max(height, width) <= self.work_size:
            return height, width
        return tuple(int(v) for v in working_size(height, width, self.work_size))

    def working_image(self, hazy: Tensor) -> Tensor:
        """``hazy`` resized to :meth:`working_size` (the same tensor when it already is)."""
        size = self.working_size(*hazy.shape[-2:])
        if size == tuple(hazy.shape[-2:]):
            return hazy
        return F.interpolate(hazy, size=size, mode="bilinear", align_corners=False, antialias=True)

    def network_coarse(self, hazy: Tensor, low: Tensor) -> NetworkCoarse:
        """The network's own A (N x 3 x 1 x 1: the statistics of ``hazy``, refined by the head if
        any, raised to the floor if set) and coarse t0 = sigmoid(G0(low)) (eq. 39) at the working
        size, with the airlight estimates (by name) they came from; no haze gate."""
        methods = (self.airlight,)
        if self.airlight_head is not None or self.haze_gate is not None:
            methods = (self.airlight, *AIRLIGHT_ESTIMATORS)
        with torch.no_grad():  # the estimates are statistics of the input; no parameter influences them
            est = estimate_airlights(hazy, methods)
        a = est[self.airlight]
        logits, bottleneck = self.backbone.forward_features(low)
        t0 = torch.sigmoid(logits)
        if self.airlight_head is not None:
            a = self.airlight_head(head_inputs(bottleneck, stack_estimates(est), low, t0), a)
        if self.airlight_floor is not None:
            with torch.no_grad():  # a statistic of the input and of t, like the estimate it raises
                t = guided_filter(rgb_to_gray(low), t0, self.radius, self.eps).clamp(self.t_min, 1.0)
                floor = airlight_floor(low, t, self.airlight_floor)
            a = torch.maximum(a, floor)  # outside no_grad: a head's A keeps its gradient where above
        return NetworkCoarse(a, t0, est)

    def prior(self, hazy: Tensor, low: Tensor, coarse: NetworkCoarse) -> Prior:
        """The dark-channel prior the :class:`HazeGate` blends in, and the gate's inputs. A statistic
        of the input and of the network's t0, like the airlight estimates: no gradient flows."""
        with torch.no_grad():
            cap = None
            if self.prior_airlight_window is not None:
                cap = opened_maximum(low, 2 * opening_radius(self.prior_airlight_window, max(low.shape[-2:])) + 1)
            a_prior = prior_airlight(coarse.estimates["dark_channel"], cap)
            t_prior = prior_transmission(low, a_prior, prior_radius(low.shape[-1], hazy.shape[-1]))
            inputs = gate_inputs(stack_estimates(coarse.estimates), low, coarse.t0, t_prior)
        return Prior(t_prior, a_prior, inputs)

    def coarse(self, hazy: Tensor, low: Tensor) -> tuple[Tensor, Tensor]:
        """Airlight A (N x 3 x 1 x 1) and coarse transmission t0 at the working size: the network's
        (:meth:`network_coarse`), blended with the dark-channel prior by the haze gate if any."""
        net = self.network_coarse(hazy, low)
        if self.haze_gate is None:
            return net.airlight, net.t0
        prior = self.prior(hazy, low, net)
        t0, a = self.blend_gated(low, net.t0, net.airlight, prior.transmission, prior.airlight, prior.inputs)
        return a, t0

    def blend_gated(
        self, low: Tensor, t0: Tensor, a: Tensor, t_prior: Tensor, a_prior: Tensor, inputs: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The coarse t0 and A blended with the prior (:func:`blend_prior`) by the haze gate's g,
        t0 by the region gate's g per pixel if there is one (:class:`RegionGate`)."""
        g = self.haze_gate(inputs)
        g_t = g
        if self.region_gate is not None:
            cells = self.region_gate(region_inputs(inputs, g, low, t0, t_prior, self.region_gate.cells))
            g_t = F.interpolate(cells, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return blend_prior(t0, a, t_prior, a_prior, g_t, g)

    def recover(self, hazy: Tensor, low: Tensor, a: Tensor, t0: Tensor) -> DehazeOutput:
        """The guided filter layer (eq. 41; the fast guided filter when ``low`` is smaller than
        ``hazy``) and J = (I - A) / t + A (eq. 42)."""
        guide_low = rgb_to_gray(low)
        if low is hazy:
            t = guided_filter(guide_low, t0, self.radius, self.eps)
        else:
            t = fast_guided_filter(rgb_to_gray(hazy), guide_low, t0, self.radius, self.eps)
        t = t.clamp(self.t_min, 1.0)
        clear = (hazy - a) / t + a
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear, transmission=t, airlight=a, coarse_transmission=t0)

    def forward(self, hazy: Tensor) -> DehazeOutput:
        low = self.working_image(hazy)
        a, t0 = self.coarse(hazy, low)
        return self.recover(hazy, low, a, t0)

    def extra_repr(self) -> str:
        return (
            f"radius={self.radius}, eps={self.eps}, t_min={self.t_min}, "
            f"airlight={self.airlight!r}, airlight_head={self.airlight_head is not None}, "
            f"airlight_floor={self.airlight_floor}, haze_gate={self.haze_gate is not None}, "
            f"prior_airlight_window={self.prior_airlight_window}, "
            f"region_gate={None if self.region_gate is None else self.region_gate.cells}, "
            f"work_size={self.work_size}"
        )


def guided_pix2pix(**kwargs) -> GuidedPix2Pix:
    return GuidedPix2Pix(**kwargs)


__all__ = [
    "UNetGenerator",
    "PatchDiscriminator",
    "AirlightHead",
    "head_inputs",
    "GuidedPix2Pix",
    "guided_pix2pix",
    "working_size",
]
