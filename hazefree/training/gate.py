"""Fitting Guided-Pix2Pix's haze gate with the rest of the model frozen (issue #24).

The gate (:class:`~hazefree.models.haze_gate.HazeGate`) chooses one number per image, g in
[0, 1], the share of the dark-channel prior's strength (:func:`~hazefree.models.haze_gate.blend_prior`).
With the network frozen, an image's loss is a function of g alone, so it is tabulated once on a grid
of g (:func:`gate_table`) and the gate is fitted to the tables, in seconds, by interpolating them:

* a pair (hazy, clear) of ``train/``: the error of J_g against clear, so the paired sets say where
  the network's own strength is right (light synthetic haze, g near 0) and where more is (dense
  haze);
* a real photo without ground truth: the error of J_g against J_g*, the teacher: the strongest g of
  the grid whose clipped-pixel share stays within ``real_clip_allowance`` of g = 0's (stage 9's
  teacher rule, tools/real_haze_targets.py, with the prior's strength in place of t^S).

The error is L1 (``loss="l1"``, stage 11) or L1 relative to the image's own at g = 0 (``"relative"``,
stage 11c; the denominator at least 0.01): the share of the network's error that the prior adds or
removes. Like PSNR, the selection rule's paired metric (a change of 20 log10 of the RMSE ratio), it
weighs an image that the network already restores well as much as a hard one; plain L1 lets the
hard images, where more strength helps, outvote the well-restored ones, where it costs the most
PSNR.

Every source counts with its sampling weight of the training recipe (``data.source_weights``, the
real photos ``real_weight``), spread over its images.

With ``members`` = K > 1 (stage 12) the gate is a :class:`~hazefree.models.haze_gate.CautiousGate`:
the scenes (a RESIDE scene id with its hazy versions, a real photo) are dealt into K folds by
``seed``, member k is fitted without fold k, and the gate takes the members' minimum.

With ``cells`` = R (stage 13) the tables are of a :class:`~hazefree.models.haze_gate.RegionGate`
on a model whose haze gate is fitted and frozen: A and the image's g stay that gate's, t is blended
at each g of the grid over the whole image (:func:`grid_outputs` with ``cells``), and each of the R x R
cells is a row, scored on its own pixels (a real photo's cell against its own teacher), with its
image's weight / R^2. The per-pixel map the region gate makes blends neighbouring cells near their
borders and the guided filter spreads t by its radius; the tables ignore both.

With ``fog`` (stage 15) the cautious gate also gets a fog detector (:func:`fit_fog`), which moves
its g from the members' minimum to their median where an image reads as a real fog photo.

With :func:`balance_collections` (stage 17) the real photos' weight is shared equally by their
collections (DAWN, RIDCP, PTTD in ``train/real_unpaired``) rather than by the photos.

With ``grid_max`` > 1 (stage 14) the grid, and the gate's range, go beyond the prior's strength
(:func:`~hazefree.models.haze_gate.blend_prior` extrapolates the optical depth there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data import PairBank, split_unpaired
from ..data.bank import source_labels
from ..evaluation.no_reference import clipped_share
from ..io import read_image
from ..models.guided_pix2pix import GuidedPix2Pix
from ..models.haze_gate import CautiousGate, HazeGate, RegionGate, blend_prior, region_inputs

__all__ = ["GateConfig", "GateTable", "GateData", "grid_outputs", "image_cells", "scene_folds",
           "teacher_index", "gate_table", "gate_data", "interpolate", "fit_gate", "fit_fog",
           "photo_collection", "balance_collections"]


@dataclass
class GateConfig:
    """How the gate is fitted (module docstring)."""

    grid: int = 11  # g = 0, 0.1, ..., 1
    grid_max: float = 1.0  # the grid's (and the gate's) largest g (stage 14: 1.5, with grid 16)
    real_weight: float = 6.0  # the real photos' sampling weight (stage 10's real_targets10)
    real_clip_allowance: float = 0.002  # the teacher's extra clipped share (stage 9: 0.2 %)
    real_holdout: float = 0.15  # held out of train/real_unpaired for the rule (split_unpaired)
    steps: int = 3000  # full-batch Adam steps
    lr: float = 3e-3
    weight_decay: float = 1e-3
    hidden: int = 16
    seed: int = 0
    loss: str = "l1"  # or "relative" (module docstring)
    members: int = 1  # > 1: a CautiousGate of scene-disjoint folds (module docstring)
    cells: int | None = None  # R: the tables of a RegionGate of R x R cells (module docstring)
    fog: bool = False  # with members > 1: a fog detector between their minimum and median (fit_fog)


class GateTable(NamedTuple):
    """One image's gate inputs (F,) and its L1 error and clipped share at each g of the grid (G,);
    of a region gate's image, one row per cell (R^2 x F, R^2 x G, R^2 x G)."""

    inputs: Tensor
    loss: Tensor
    clipped: Tensor


class GateData(NamedTuple):
    """The tables of a set of images, stacked, with each image's weight and source label."""

    inputs: Tensor  # N x F (a region gate's: one row per cell)
    loss: Tensor  # N x G, L1
    clipped: Tensor  # N x G
    weight: Tensor  # N, summing to 1
    sources: list[str]
    scenes: list[str] | None = None  # scene of each image (the fold unit of a CautiousGate)


def grid_values(n: int, top: float = 1.0) -> Tensor:
    return torch.linspace(0.0, top, n)


@torch.no_grad()
def grid_outputs(
    model: GuidedPix2Pix, hazy: Tensor, grid: Tensor, cells: int | None = None
) -> tuple[list[Tensor], Tensor]:
    """J_g of one 1 x 3 x H x W image at every g of ``grid``, the model's own gates bypassed (the
    network's and the prior's t and A blended at that g), and the gate's inputs (F). With ``cells``
    (a region gate's tables), A keeps the model's haze gate's g, t alone is blended at g over the
    whole image, and the inputs are the region gate's (cells^2 x F)."""
    low = model.working_image(hazy)
    net = model.network_coarse(hazy, low)
    prior = model.prior(hazy, low, net)
    g_image = None if cells is None else model.haze_gate(prior.inputs)
    outputs = []
    for g in grid.tolist():
        t0, a = blend_prior(net.t0, net.airlight, prior.transmission, prior.airlight, torch.tensor(g), g_image)
        outputs.append(model.recover(hazy, low, a, t0).clear)
    if cells is None:
        return outputs, prior.inputs[0]
    return outputs, region_inputs(prior.inputs, g_image, low, net.t0, prior.transmission, cells)[0]


def image_cells(x: Tensor, n: int) -> list[Tensor]:
    """The n x n grid of (nearly) equal cells of a 1 x C x H x W image, in row-major order."""
    h, w = x.shape[-2:]
    ys = [round(h * k / n) for k in range(n + 1)]
    xs = [round(w * k / n) for k in range(n + 1)]
    return [x[..., ys[i] : ys[i + 1], xs[j] : xs[j + 1]] for i in range(n) for j in range(n)]


def teacher_index(clipped: Sequence[float], allowance: float) -> int:
    """The teacher's g of a real photo, as an index into the grid: the strongest whose clipped share
    stays within ``allowance`` of g = 0's (stage 9's teacher rule)."""
    return max(k for k, c in enumerate(clipped) if c <= clipped[0] + allowance)


def gate_table(model: GuidedPix2Pix, hazy: Tensor, clear: Tensor | None, cfg: GateConfig) -> GateTable:
    """:class:`GateTable` of one 1 x 3 x H x W image; ``clear`` None for a real photo (the teacher).
    With ``cfg.cells``, a region gate's: one row per cell (module docstring)."""
    outputs, inputs = grid_outputs(model, hazy, grid_values(cfg.grid, cfg.grid_max), cfg.cells)
    if cfg.cells is None:
        return _table(inputs, outputs, clear, cfg)
    by_cell = [image_cells(out, cfg.cells) for out in outputs]
    targets = [None] * cfg.cells**2 if clear is None else image_cells(clear, cfg.cells)
    rows = [_table(inputs[k], [cell[k] for cell in by_cell], targets[k], cfg) for k in range(cfg.cells**2)]
    return GateTable(*(torch.stack(part) for part in zip(*rows)))


def _table(inputs: Tensor, outputs: list[Tensor], clear: Tensor | None, cfg: GateConfig) -> GateTable:
    clipped = [float(clipped_share(out)[0]) for out in outputs]
    if clear is None:
        clear = outputs[teacher_index(clipped, cfg.real_clip_allowance)]
    loss = torch.tensor([float((out - clear).abs().mean()) for out in outputs])
    return GateTable(inputs, loss, torch.tensor(clipped))


def gate_data(
    model: GuidedPix2Pix,
    bank: PairBank,
    indices: Sequence[int],
    source_weights: dict[str, float],
    real_photos: Sequence[Path],
    cfg: GateConfig,
) -> GateData:
    """Tables of the bank's ``indices`` and of ``real_photos``, weighted as the module docstring says
    (a region gate's: a row per cell, each with its image's weight / cells^2)."""
    model = model.eval()
    by_source = bank.by_source(indices)
    labels = source_labels(by_source)
    rows: list[tuple[GateTable, float, str]] = []
    scenes: list[str] = []
    total = len(indices) + len(real_photos)
    with tqdm(total=total, desc="gate tables", leave=False) as bar:
        for src, members in by_source.items():
            label = labels[src]
            for i in members:
                hazy, clear = bank.full(i)
                rows.append((gate_table(model, hazy, clear, cfg), source_weights[label] / len(members), label))
                scenes.append(f"{label}/{bank.names[i].split('_', 1)[0]}")
                bar.update()
        for path in real_photos:
            hazy = read_image(path).rgb
            rows.append((gate_table(model, hazy, None, cfg), cfg.real_weight / len(real_photos), "real_unpaired"))
            scenes.append(f"real_unpaired/{path.stem}")
            bar.update()
    per = 1 if cfg.cells is None else cfg.cells**2  # rows per image
    weight = torch.tensor([w / per for _, w, _ in rows]).repeat_interleave(per)
    return GateData(
        torch.cat([r.inputs.reshape(per, -1) for r, _, _ in rows]),
        torch.cat([r.loss.reshape(per, -1) for r, _, _ in rows]),
        torch.cat([r.clipped.reshape(per, -1) for r, _, _ in rows]),
        weight / weight.sum(),
        [s for _, _, s in rows for _ in range(per)],
        [s for s in scenes for _ in range(per)],
    )


def interpolate(table: Tensor, g: Tensor, top: float = 1.0) -> Tensor:
    """Each row of the N x G ``table`` (values at g = 0, top/(G-1), ..., top), read at its g (N) by
    linear interpolation: piecewise linear in g, so it has a gradient with respect to g."""
    n = table.shape[1] - 1
    pos = g.clamp(0.0, top) * (n / top)
    lo = pos.detach().floor().clamp(max=n - 1).long()
    frac = pos - lo
    rows = torch.arange(table.shape[0])
    return table[rows, lo] * (1.0 - frac) + table[rows, lo + 1] * frac


def fit_gate(data: GateData, cfg: GateConfig) -> tuple[nn.Module, list[float]]:
    """A :class:`HazeGate` minimising the weighted interpolated loss (full batch, AdamW), and its
    loss every 100 steps; with ``cfg.members`` > 1 a :class:`CautiousGate` (module docstring) and
    the members' losses, one after the other; with ``cfg.cells``, either in a :class:`RegionGate`."""
    if cfg.cells is not None and cfg.grid_max != 1.0:
        raise ValueError("a region gate's g stays within [0, 1]: GateConfig.grid_max must be 1 with cells")
    if cfg.fog and (cfg.members == 1 or cfg.cells is not None):
        raise ValueError("GateConfig.fog chooses between an image gate's members: it needs members > 1 and no cells")
    gate, history = _fit(data, cfg)
    if cfg.cells is None:
        return gate, history
    region = RegionGate(cfg.cells, cfg.members, cfg.hidden)
    region.gate.load_state_dict(gate.state_dict())
    return region.eval(), history


def _fit(data: GateData, cfg: GateConfig) -> tuple[nn.Module, list[float]]:
    if cfg.loss not in ("l1", "relative"):
        raise ValueError(f"GateConfig.loss must be 'l1' or 'relative', got {cfg.loss!r}")
    table = data.loss if cfg.loss == "l1" else data.loss / data.loss[:, :1].clamp(min=0.01)
    if cfg.members == 1:
        return _fit_member(data.inputs, table, data.weight, cfg, cfg.seed)
    if data.scenes is None:
        raise ValueError("a gate of several members needs the tables' scenes (GateData.scenes)")
    fold = scene_folds(data.scenes, cfg.members, cfg.seed)
    gate, history = CautiousGate(cfg.members, cfg.hidden, data.inputs.shape[1], cfg.grid_max, cfg.fog), []
    for k in range(cfg.members):
        keep = fold != k
        member, h = _fit_member(data.inputs[keep], table[keep], data.weight[keep], cfg, cfg.seed * cfg.members + k)
        gate.members[k].load_state_dict(member.state_dict())
        history += h
    if cfg.fog:
        fog, h = fit_fog(data, cfg)
        gate.fog.load_state_dict(fog.state_dict())
        history += h
    return gate.eval(), history


def fit_fog(data: GateData, cfg: GateConfig) -> tuple[HazeGate, list[float]]:
    """The cautious gate's fog detector (stage 15): a :class:`HazeGate` with ``top`` 1 whose output
    is P(real fog photo | gate inputs), fitted by logistic loss (full batch, AdamW) to tell the real
    photos of the tables (source ``real_unpaired``) from every paired image and render. The two
    classes weigh half each, their images equally, so the detector does not lean on the classes'
    sizes. Returns it and its loss every 100 steps."""
    real = torch.tensor([s == "real_unpaired" for s in data.sources])
    if real.all() or not real.any():
        raise ValueError("a fog detector needs both real photos (source 'real_unpaired') and paired images")
    weight = torch.where(real, 0.5 / real.sum(), 0.5 / (~real).sum())
    detector = _new_gate(data.inputs, cfg.hidden, 1.0, cfg.seed)
    nn.init.zeros_(detector.mlp[-1].bias)  # start at p = 1/2, not at a gate's g near 0
    x = (data.inputs - detector.shift) / detector.scale

    def loss() -> Tensor:
        logit = detector.mlp(x).flatten()
        return (F.binary_cross_entropy_with_logits(logit, real.float(), reduction="none") * weight).sum()

    history = _descend(detector, loss, cfg)
    return detector.eval(), history


def photo_collection(scene: str) -> str:
    """The collection of a real photo from its tables' scene name ``real_unpaired/<stem>``: the
    stem's first word (``real_unpaired/dawn_foggy-001`` -> ``dawn``)."""
    return scene.rsplit("/", 1)[-1].split("_", 1)[0]


def balance_collections(data: GateData) -> GateData:
    """``data`` with the real photos' total weight shared equally by their collections
    (:func:`photo_collection`) and each collection's equally by its rows (stage 17: in
    ``train/real_unpaired`` 262 of 274 photos are DAWN road scenes); the other rows keep theirs."""
    if data.scenes is None:
        raise ValueError("balancing the real photos' collections needs the tables' scenes (GateData.scenes)")
    groups: dict[str, list[int]] = {}
    for i, (source, scene) in enumerate(zip(data.sources, data.scenes)):
        if source == "real_unpaired":
            groups.setdefault(photo_collection(scene), []).append(i)
    if not groups:
        raise ValueError("the tables hold no real photos (source 'real_unpaired') to balance")
    weight = data.weight.clone()
    total = sum(float(data.weight[rows].sum()) for rows in groups.values())
    for rows in groups.values():
        weight[rows] = total / len(groups) / len(rows)
    return data._replace(weight=weight)


def scene_folds(scenes: Sequence[str], k: int, seed: int) -> Tensor:
    """Each row's fold (N, in 0..k-1): the distinct ``scenes`` dealt into ``k`` folds in an order
    drawn from ``seed``, so that every row of a scene lands in the same fold."""
    names = sorted(set(scenes))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    fold = {names[j]: i % k for i, j in enumerate(order)}
    return torch.tensor([fold[s] for s in scenes])


def _new_gate(inputs: Tensor, hidden: int, top: float, seed: int) -> HazeGate:
    """A :class:`HazeGate` initialised from ``seed``, its input shift and scale those of ``inputs``."""
    torch.manual_seed(seed)
    gate = HazeGate(hidden=hidden, features=inputs.shape[1], top=top)
    gate.shift.copy_(inputs.mean(dim=0))
    gate.scale.copy_(inputs.std(dim=0).clamp(min=1e-3))
    return gate


def _descend(module: nn.Module, loss, cfg: GateConfig) -> list[float]:
    """``cfg.steps`` full-batch AdamW steps on ``loss()``; its value every 100 steps and at the end."""
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    for step in range(cfg.steps):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            history.append(float(value.detach()))
    return history


def _fit_member(
    inputs: Tensor, table: Tensor, weight: Tensor, cfg: GateConfig, seed: int
) -> tuple[HazeGate, list[float]]:
    gate = _new_gate(inputs, cfg.hidden, cfg.grid_max, seed)
    weight = weight / weight.sum()
    history = _descend(gate, lambda: (interpolate(table, gate(inputs).flatten(), cfg.grid_max) * weight).sum(), cfg)
    return gate.eval(), history


def real_split(root: str | Path, cfg: GateConfig) -> tuple[list[Path], list[Path]]:
    """(fitting, held-out) photos of ``train/real_unpaired``: the split every stage since 9 used."""
    return split_unpaired(root, cfg.real_holdout, 0)
