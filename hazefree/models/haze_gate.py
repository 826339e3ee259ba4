"""Guided-Pix2Pix's haze gates (issue #24; not in the paper): how much of the dark-channel prior's
strength to blend into the network's coarse transmission and airlight, per image (:class:`HazeGate`,
:class:`CautiousGate`) and per region (:class:`RegionGate`), and the prior itself at the working
size (He et al., "Single Image Haze Removal Using Dark Channel Prior", eq. 12)."""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..physics import MIN_AIRLIGHT, dark_channel
from .haze_statistics import AIRLIGHT_ESTIMATORS, DEPTH_STATISTICS, depth_statistics

__all__ = [
    "DCP_RADIUS", "prior_radius", "opening_radius", "prior_airlight", "prior_transmission", "blend_prior",
    "GATE_FEATURES", "HazeGate", "CautiousGate", "gate_inputs", "cell_views", "region_inputs", "RegionGate",
]


# He et al.'s dark-channel patch radius (a 15 px patch) on the full image; the prior's is scaled from it.
DCP_RADIUS = 7


def prior_radius(low_width, width):
    """The prior's dark-channel patch radius at the working size: :data:`DCP_RADIUS` scaled by
    ``low_width / width`` and rounded half up, between 1 and :data:`DCP_RADIUS`. Integer arithmetic,
    so that it is also a symbolic size in an ONNX export."""
    return torch.sym_max(1, (2 * DCP_RADIUS * low_width + width) // (2 * width))


def opening_radius(window: float, longer_side):
    """The radius of the opening that caps the prior's airlight: ``window`` x the working image's
    longer side / 2, rounded half up, at least 1 (``window`` as a fraction p/q, so that the formula
    is integer arithmetic)."""
    frac = Fraction(window).limit_denominator(1000)
    return torch.sym_max(1, (frac.numerator * longer_side + frac.denominator) // (2 * frac.denominator))


def prior_airlight(estimate: Tensor, cap: Tensor | None) -> Tensor:
    """The prior's airlight: DCP's ``estimate`` (N x 3 x 1 x 1), at most ``cap`` (the opened maximum
    of ``prior_airlight_window``; None: uncapped) and at least ``MIN_AIRLIGHT`` (a black image: no
    0 / 0 in I / A)."""
    capped = estimate if cap is None else torch.minimum(estimate, cap)
    return capped.clamp(min=MIN_AIRLIGHT)


def prior_transmission(low: Tensor, airlight: Tensor, radius: int, omega: float = 0.95) -> Tensor:
    """He et al.'s coarse transmission t = 1 - omega dark(I / A) (eq. 12) of the working-size image
    ``low`` with a (2 ``radius`` + 1) px patch (:func:`prior_radius`: DCP's 15 px patch on the full
    image, scaled to the working size)."""
    return 1.0 - omega * dark_channel(low / airlight, 2 * radius + 1)


def blend_prior(
    t0: Tensor, a: Tensor, t_prior: Tensor, a_prior: Tensor, g: Tensor, g_airlight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The :class:`HazeGate`'s blend: t0_g = t0^(1-g) min(t0, t_prior)^g, A_g = (1-g) A + g A_prior.

    In optical depth tau = -ln t, tau_g = tau0 + g max(0, tau_prior - tau0): g = 0 is the network
    alone, g = 1 takes the deeper of the two everywhere with the prior's airlight (issue #24's rule
    "DCP's strength everywhere"). g > 1 (``gate_max``; stage 14) extrapolates the depth beyond the
    prior's, while A stops at the prior's: its weight is min(g, 1). ``g`` is N x 1 x 1 x 1, or
    N x 1 x h x w for a g per pixel (:class:`RegionGate`); A is then blended by ``g_airlight``
    (N x 1 x 1 x 1; default ``g``).
    """
    stronger = torch.minimum(t0, t_prior).clamp(min=1e-3)
    t = t0.clamp(min=1e-3).pow(1.0 - g) * stronger.pow(g)
    g_airlight = (g if g_airlight is None else g_airlight).clamp(max=1.0)
    return t, (1.0 - g_airlight) * a + g_airlight * a_prior


# Number of values :func:`gate_inputs` returns per image.
GATE_FEATURES = 3 * len(AIRLIGHT_ESTIMATORS) + 2 * DEPTH_STATISTICS


class HazeGate(nn.Module):
    """Per image, how much of the dark-channel prior's strength to take: g in [0, ``top``] (issue
    #24; not in the paper; ``top`` > 1 goes beyond the prior's depth, :func:`blend_prior`). Dense,
    coloured real haze needs about DCP's strength, light synthetic haze the network's own t; the
    gate reads which one it is looking at from haze statistics only (the airlight estimates and
    :func:`depth_statistics` of the image by t0 and by the prior's t; no scene features, so that it
    cannot recognise training scenes) and :func:`blend_prior` applies it to the coarse t and A,
    before the guided filter. It is fitted with the rest of the model
    frozen (:mod:`hazefree.training.gate`). It starts at g = ``top`` sigmoid(-6) = 0.0025 ``top``,
    next to the network alone.

    Shape:
        N x F inputs (:func:`gate_inputs`) -> N x 1 x 1 x 1.
    """

    def __init__(self, hidden: int = 16, features: int = GATE_FEATURES, top: float = 1.0) -> None:
        super().__init__()
        self.top = top
        # the inputs' mean and standard deviation over the fitting set (set by the fit, saved with it)
        self.register_buffer("shift", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.constant_(self.mlp[-1].bias, -6.0)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.top * torch.sigmoid(self.mlp((inputs - self.shift) / self.scale)).view(-1, 1, 1, 1)


class CautiousGate(nn.Module):
    """K :class:`HazeGate` members, each fitted without one of K scene-disjoint folds, combined by the
    minimum: the prior's strength only where every member asks for it (stage 12; not in the paper).
    An image unlike the fitting set, on which the members disagree, gets the most cautious g.

    With ``fog`` (stage 15; not in the paper), a fog detector p in [0, 1] (a :class:`HazeGate` with
    ``top`` 1, fitted as a classifier of real fog photos against the paired sets,
    :func:`hazefree.training.gate.fit_fog`) moves g from the members' minimum to their median where
    the image reads as real fog: g = min + p (median - min). The members' minimum leaves the paired
    sets at the network's own error on new scenes, while their median comes closer to the real
    photos' teacher (benchmarks/gate_members.py). With an even K the median is the lower middle one.

    Shape:
        N x F inputs (:func:`gate_inputs`) -> N x 1 x 1 x 1.
    """

    def __init__(
        self, members: int, hidden: int = 16, features: int = GATE_FEATURES, top: float = 1.0, fog: bool = False
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(HazeGate(hidden, features, top) for _ in range(members))
        self.fog = HazeGate(hidden, features) if fog else None

    def forward(self, inputs: Tensor) -> Tensor:
        g = torch.stack([m(inputs) for m in self.members])
        if self.fog is None:
            return g.amin(dim=0)
        # a sort, not torch.median, so that the ONNX graph is a TopK
        ordered = g.sort(dim=0).values
        low, middle = ordered[0], ordered[(len(self.members) - 1) // 2]
        return low + self.fog(inputs) * (middle - low)


def gate_inputs(estimates: Tensor, low: Tensor, t0: Tensor, t_prior: Tensor) -> Tensor:
    """The :class:`HazeGate`'s input: the N x 9 airlight ``estimates`` and :func:`depth_statistics`
    of ``low`` by the coarse ``t0`` and by the prior's ``t_prior`` (N x 27)."""
    return torch.cat([estimates, depth_statistics(low, t0), depth_statistics(low, t_prior)], dim=1)


# Side, in pixels, of each cell's square view in which :func:`region_inputs` reads its statistics.
CELL_SIDE = 64


def cell_views(x: Tensor, cells: int, side: int = CELL_SIDE) -> Tensor:
    """The ``cells`` x ``cells`` grid of equal cells of N x C x h x w ``x``, each resized to ``side``
    square: (N cells^2) x C x side x side, cells in row-major order. One resize to a fixed size and a
    reshape, so that it is also a graph of symbolic sizes in an ONNX export."""
    n, c = x.shape[:2]
    x = F.interpolate(x, size=(cells * side, cells * side), mode="bilinear", align_corners=False, antialias=True)
    x = x.reshape(n, c, cells, side, cells, side).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * cells * cells, c, side, side)


def region_inputs(inputs: Tensor, g: Tensor, low: Tensor, t0: Tensor, t_prior: Tensor, cells: int) -> Tensor:
    """The :class:`RegionGate`'s input, N x cells^2 x (F + 1 + 2 x 9): per cell, the image's gate
    ``inputs`` (N x F), its gate's ``g`` (N x 1 x 1 x 1) and :func:`depth_statistics` of the cell of
    ``low`` by the cell's ``t0`` and by its ``t_prior`` (:func:`cell_views`)."""
    n, k, c = low.shape[0], cells * cells, low.shape[1]
    image = torch.cat([inputs, g.reshape(n, 1)], dim=1)
    views = cell_views(torch.cat([low, t0, t_prior], dim=1), cells)
    local = torch.cat([depth_statistics(views[:, :c], views[:, c + j : c + j + 1]) for j in range(2)], dim=1)
    return torch.cat([image.unsqueeze(1).expand(n, k, image.shape[1]), local.reshape(n, k, -1)], dim=2)


class RegionGate(nn.Module):
    """The haze gate's g per region (stage 13; not in the paper): per cell of a ``cells`` x ``cells``
    grid, g in [0, 1] for the transmission, from the image's gate inputs and g and the cell's own
    depth statistics (:func:`region_inputs`). The cells' g are interpolated bilinearly to the working
    size and t0 is blended per pixel (:func:`blend_prior`), while A keeps the image's g: dense haze in
    one part of a photo (the far field, a valley) can take the prior's strength where the near field
    or a bright sky would clip. A :class:`HazeGate` (a :class:`CautiousGate` with ``members`` > 1)
    applied to each cell's row.

    Shape:
        N x cells^2 x F inputs (:func:`region_inputs`) -> N x 1 x cells x cells.
    """

    def __init__(self, cells: int, members: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.cells = cells
        features = GATE_FEATURES + 1 + 2 * DEPTH_STATISTICS
        self.gate = HazeGate(hidden, features) if members == 1 else CautiousGate(members, hidden, features)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.gate(inputs.flatten(0, 1)).reshape(inputs.shape[0], 1, self.cells, self.cells)
