"""ONNX export of the dehazers: one graph per model, with dynamic height and width.

The graph is traced by ``torch.export`` (the dynamo-based ``torch.onnx.export``, opset 18) from
export-only wrappers around the loaded model, so the weights and every setting (radius, eps,
t_min, working size) are those of :class:`hazefree.Dehazer`. Each wrapper computes the same
function as the model's ``forward`` in eval mode, written with operations whose shapes are
symbolic expressions of the input's H and W (no Python branch on a size):

* Guided filter (He et al. 2013, Alg. 1; Ma et al. 2021, eq. 41): the (2r+1)^2 box sums are
  cumulative sums (``CumSum``) along H and then W, padded with r + 1 zeros in front and r copies
  of the last sum behind, so that each clipped window sum is the difference of two slices
  (``Slice`` + ``Sub``); the window pixel counts come from ``Range``/``Clip``. All window
  statistics run in float64, as in :mod:`hazefree.ops` (eps down to 1e-8). :mod:`hazefree.ops`
  clips r to the image size first, a Python branch on the shape; padding by r instead gives the
  same sums for any r and size.
* Guided-Pix2Pix: the antialiased bilinear resize to the working size is an ONNX ``Resize``
  (``antialias=1``), with the working size computed in the graph by
  :func:`hazefree.models.guided_pix2pix.working_size`; the
  U-Net's padding to a multiple of 2**num_downs is a ``Gather`` with reflect indices (replicate
  for inputs too small to reflect), so the padded size is a known multiple of 2**num_downs; the
  fast guided filter's coefficients are upsampled by ``Resize`` (bilinear) to full size. Inputs no
  larger than the working size take the same path: resizing to the same size is the identity,
  and the fast guided filter then equals the guided filter.
* DCP: the dark channel's min filter is the same shifted ``Min`` passes as
  :func:`hazefree.physics.dark_channel`.

Not in the graph: the airlight A. Every estimator takes the mean colour of the top 0.1 % of pixels
by a ranking (``TopK`` with k = ceil(0.001 H W) from the shape, then a second ``TopK`` among the
candidates). The caller computes A and passes it as the second input; ``examples/onnx_dehaze.py``
does it with NumPy and OpenCV, tested to give the same A as :mod:`hazefree.physics`. The
graph's metadata (``airlight_method``) names the estimator the model was trained with. A model
with a learned airlight head takes the three estimates its head reads instead (``airlight_estimates``,
N x 9, the estimators named in the metadata's ``airlight_estimates``, in order) and computes A in the
graph (its ``TopK`` selects the haziest 1 % of pixels by t0); A is then a third output.

Graph inputs and outputs (float32):
    ``hazy`` N x 3 x H x W in [0, 1]; ``airlight`` N x 3 x 1 x 1 (models with a scattering model:
    guided-pix2pix, dcp) -> ``clear`` N x 3 x H x W in [0, 1] and ``transmission`` N x 1 x H x W
    (the same models). With an airlight head: ``hazy``, ``airlight_estimates`` N x 9 -> ``clear``,
    ``transmission``, ``airlight`` N x 3 x 1 x 1. AOD-Net has only ``hazy`` -> ``clear``.

Example:
    >>> info = export_onnx("aod-net", "aod-net.onnx")
    >>> info.inputs, info.outputs
    (('hazy',), ('clear',))
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OPSET", "ExportInfo", "export_onnx", "graph_module"]

# Resize with antialias needs opset 18.
OPSET = 18


class ExportInfo(NamedTuple):
    """What :func:`export_onnx` wrote."""

    path: Path
    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # the estimator the caller runs for the ``airlight`` input (graphs that take one)
    airlight_method: str | None
    # the estimators whose colours, in this order, make the ``airlight_estimates`` input (a model
    # with an airlight head); the graph's metadata records the same two fields
    airlight_estimates: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- graph operations


def _window_sum(x: Tensor, r: int, dim: int) -> Tensor:
    """Sum over the window [i - r, i + r] along ``dim``, clipped at the border, for any r."""
    n = x.shape[dim]
    csum = torch.cumsum(x, dim=dim)
    head, tail = list(x.shape), list(x.shape)
    head[dim], tail[dim] = r + 1, r
    p = torch.cat([x.new_zeros(head), csum, csum.narrow(dim, n - 1, 1).expand(tail)], dim)
    return p.narrow(dim, 2 * r + 1, n) - p.narrow(dim, 0, n)


def _box_mean(x: Tensor, r: int) -> Tensor:
    h, w = x.shape[-2:]
    ih, iw = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    count_h = (ih + r + 1).clamp(max=h) - (ih - r).clamp(min=0)
    count_w = (iw + r + 1).clamp(max=w) - (iw - r).clamp(min=0)
    count = count_h.to(x.dtype)[:, None] * count_w.to(x.dtype)[None, :]
    return _window_sum(_window_sum(x, r, -2), r, -1) / count


def _guided_coefficients(guide: Tensor, src: Tensor, r: int, eps: float) -> tuple[Tensor, Tensor]:
    """Gray-guide guided filter coefficients (mean_a, mean_b), He et al. Alg. 1 lines 1-10, in float64."""
    guide, src = guide.double(), src.double()
    mean_i, mean_x = _box_mean(guide, r), _box_mean(src, r)
    var_i = (_box_mean(guide * guide, r) - mean_i * mean_i).clamp(min=0.0)
    a = (_box_mean(guide * src, r) - mean_i * mean_x) / (var_i + eps)
    b = mean_x - a * mean_i
    return _box_mean(a, r), _box_mean(b, r)


def _pad_index(n, multiple: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices padding an axis of size n to the next multiple: (reflect, replicate)."""
    i = torch.arange(multiple * ((n + multiple - 1) // multiple), device=device)
    return torch.where(i < n, i, 2 * n - 2 - i), i.clamp(max=n - 1)


def _unet_features(unet: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`UNetGenerator.forward_features` with its padding as a gather (see the module doc)."""
    h, w = x.shape[-2:]
    m = 2**unet.num_downs
    reflect_h, replicate_h = _pad_index(h, m, x.device)
    reflect_w, replicate_w = _pad_index(w, m, x.device)
    # reflect needs pad < size on both axes, else both replicate (as F.pad's modes in the model)
    ok = (reflect_h.min() >= 0) & (reflect_w.min() >= 0)
    x = x.index_select(2, torch.where(ok, reflect_h, replicate_h))
    x = x.index_select(3, torch.where(ok, reflect_w, replicate_w))
    skips = []
    for block in unet.down:
        x = block(x)
        skips.append(x)
    bottleneck = skips.pop()
    for block in unet.up:
        x = torch.cat([block(x), skips.pop()], dim=1)
    return unet.head(x)[..., :h, :w], bottleneck


# ------------------------------------------------------------------------------- graph modules


class _GuidedPix2PixGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hazy: Tensor, airlight: Tensor) -> tuple[Tensor, Tensor]:
        t, _, _, _ = self.transmission(hazy)
        return ((hazy - airlight) / t + airlight).clamp(0.0, 1.0), t

    def transmission(self, hazy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(refined t at full size, working-size image, coarse t0, U-Net bottleneck)."""
        low, t0, bottleneck = self.coarse(hazy)
        return self.refine(hazy, low, t0), low, t0, bottleneck

    def coarse(self, hazy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(working-size image, the U-Net's coarse t0, its bottleneck)."""
        from .models.guided_pix2pix import working_size

        net = self.model
        h, w = hazy.shape[-2:]
        work = net.work_size if net.work_size is not None else torch.sym_max(h, w)
        low = F.interpolate(hazy, size=working_size(h, w, work), mode="bilinear", align_corners=False, antialias=True)
        logits, bottleneck = _unet_features(net.backbone, low)
        return low, torch.sigmoid(logits), bottleneck

    def refine(self, hazy: Tensor, low: Tensor, t0: Tensor) -> Tensor:
        """The fast guided filter's refinement of t0 at full size (eq. 41)."""
        from .ops import rgb_to_gray

        net = self.model
        mean_a, mean_b = _guided_coefficients(rgb_to_gray(low), t0, net.radius, net.eps)
        up_a = F.interpolate(mean_a.float(), size=hazy.shape[-2:], mode="bilinear", align_corners=False)
        up_b = F.interpolate(mean_b.float(), size=hazy.shape[-2:], mode="bilinear", align_corners=False)
        return (up_a * rgb_to_gray(hazy) + up_b).clamp(net.t_min, 1.0)


class _HeadedGuidedPix2PixGraph(_GuidedPix2PixGraph):
    """Guided-Pix2Pix with a learned airlight head: the caller passes the head's three airlight
    estimates (``airlight_estimates``, N x 9, in the order of the graph's metadata), and the graph
    computes A from them, the bottleneck and the depth statistics, as
    :meth:`GuidedPix2Pix.coarse` does; A is a third output."""

    def forward(self, hazy: Tensor, estimates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t, low, t0, bottleneck = self.transmission(hazy)
        a = self.head_airlight(estimates, low, t0, bottleneck)
        return ((hazy - a) / t + a).clamp(0.0, 1.0), t, a

    def head_airlight(self, estimates: Tensor, low: Tensor, t0: Tensor, bottleneck: Tensor) -> Tensor:
        """The head's A from the caller's estimates (N x 9), as :meth:`GuidedPix2Pix.network_coarse`."""
        from .models.guided_pix2pix import head_inputs
        from .models.haze_statistics import AIRLIGHT_ESTIMATORS

        net = self.model
        k = AIRLIGHT_ESTIMATORS.index(net.airlight)
        reference = estimates[:, 3 * k : 3 * k + 3].reshape(-1, 3, 1, 1)
        return net.airlight_head(head_inputs(bottleneck, estimates, low, t0), reference)


def _pick(variants: list[Tensor], index) -> Tensor:
    """``variants[index]`` for a symbolic ``index``: stacked and selected in the graph."""
    return torch.stack(variants).select(0, index)


class _GatedGuidedPix2PixGraph(_HeadedGuidedPix2PixGraph):
    """Guided-Pix2Pix with a haze gate (stage 12) and its region gate if any (stage 13): the headed
    graph, plus the gates' blend of the dark-channel prior into t0 before the guided filter, as
    :meth:`GuidedPix2Pix.coarse` does (:meth:`~hazefree.models.guided_pix2pix.GuidedPix2Pix.blend_gated`). The
    prior's airlight is the caller's ``dark_channel`` estimate (one of the N x 9). Its patch radius
    (:func:`~hazefree.models.haze_gate.prior_radius`) and the opening's
    (:func:`~hazefree.models.haze_gate.opening_radius`) depend on the image size, a branch in
    Python; the graph computes the dark channel (and the opening) for every radius the working size
    allows and selects one by the radius computed from the shape."""

    def forward(self, hazy: Tensor, estimates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from .models.haze_gate import (
            DCP_RADIUS, gate_inputs, opening_radius, prior_airlight, prior_radius, prior_transmission,
        )
        from .models.haze_statistics import AIRLIGHT_ESTIMATORS
        from .physics import opened_maximum

        net = self.model
        low, t0, bottleneck = self.coarse(hazy)
        a = self.head_airlight(estimates, low, t0, bottleneck)
        d = AIRLIGHT_ESTIMATORS.index("dark_channel")
        cap = None
        if net.prior_airlight_window is not None:
            top = opening_radius(net.prior_airlight_window, net.work_size)
            r = opening_radius(net.prior_airlight_window, torch.sym_max(*low.shape[-2:]))
            cap = _pick([opened_maximum(low, 2 * q + 1) for q in range(1, top + 1)], r - 1)
        a_prior = prior_airlight(estimates[:, 3 * d : 3 * d + 3].reshape(-1, 3, 1, 1), cap)
        priors = [prior_transmission(low, a_prior, q) for q in range(1, DCP_RADIUS + 1)]
        t_prior = _pick(priors, prior_radius(low.shape[-1], hazy.shape[-1]) - 1)
        t0, a = net.blend_gated(low, t0, a, t_prior, a_prior, gate_inputs(estimates, low, t0, t_prior))
        t = self.refine(hazy, low, t0)
        return ((hazy - a) / t + a).clamp(0.0, 1.0), t, a


class _DarkChannelPriorGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hazy: Tensor, airlight: Tensor) -> tuple[Tensor, Tensor]:
        from .ops import rgb_to_gray
        from .physics import dark_channel, remove_haze

        net = self.model
        coarse = 1.0 - net.omega * dark_channel(hazy / airlight, net.patch_size)
        mean_a, mean_b = _guided_coefficients(rgb_to_gray(hazy), coarse, net.radius, net.eps)
        t = (mean_a * rgb_to_gray(hazy).double() + mean_b).float().clamp(0.0, 1.0)
        return remove_haze(hazy, t, airlight, t_min=net.t_min), t


class _ClearOnlyGraph(nn.Module):
    """Models that map hazy to clear directly (AOD-Net): the model's own forward is exportable."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hazy: Tensor) -> Tensor:
        return self.model(hazy).clear


def graph_module(model: nn.Module) -> nn.Module:
    """The export wrapper of a loaded model (eval mode); ValueError for unsupported architectures."""
    from .models import AODNet, DarkChannelPrior, GuidedPix2Pix

    wrappers = {GuidedPix2Pix: _GuidedPix2PixGraph, DarkChannelPrior: _DarkChannelPriorGraph, AODNet: _ClearOnlyGraph}
    if type(model) is GuidedPix2Pix and model.airlight_floor is not None:
        # the floor reads the refined t, which only the graph computes: the caller could not pass A
        raise ValueError("export of Guided-Pix2Pix with airlight_floor is not supported; export it without the option")
    if type(model) is GuidedPix2Pix and model.haze_gate is not None and model.airlight_head is None:
        raise ValueError("export of Guided-Pix2Pix with a haze gate but no airlight head is not supported")
    if type(model) is GuidedPix2Pix and model.airlight_head is not None:
        from .models.haze_statistics import AIRLIGHT_ESTIMATORS

        if model.airlight not in AIRLIGHT_ESTIMATORS:
            raise ValueError(f"export of an airlight head over the {model.airlight!r} estimate is not supported")
        if model.haze_gate is not None:
            if model.work_size is None:
                raise ValueError("export of Guided-Pix2Pix with a haze gate needs a work_size (the prior's sizes are bounded by it)")
            return _GatedGuidedPix2PixGraph(model.eval()).eval()
        return _HeadedGuidedPix2PixGraph(model.eval()).eval()
    for cls, wrapper in wrappers.items():
        if type(model) is cls:
            return wrapper(model.eval()).eval()
    names = ", ".join(cls.__name__ for cls in wrappers)
    raise ValueError(f"ONNX export supports {names}; not {type(model).__name__}")


# ---------------------------------------------------------------------------------------- export


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(
            f"ONNX export needs {' and '.join(missing)}; install them with: pip install 'hazefree[onnx]'"
        )


def export_onnx(method: str | None, path: str | Path, *, verbose: bool = False) -> ExportInfo:
    """Export ``method`` (a model name, a weights file, or None for the default) to ONNX at ``path``.

    The model is loaded exactly as :class:`hazefree.Dehazer` loads it. The file is written
    atomically (a failed export leaves no file behind). Raises ValueError for a model whose
    architecture has no graph wrapper, ModuleNotFoundError when onnx/onnxscript are missing.
    """
    from . import __version__
    from .api import Dehazer
    from .io import atomic_write

    _require_onnx()
    dehazer = Dehazer(method)
    graph = graph_module(dehazer.model)
    # Example shapes: neither a multiple of the U-Net's 128 nor equal, so that no size is special.
    noise = torch.rand(1, 3, 300, 420, generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    estimates: tuple[str, ...] = ()
    if isinstance(graph, _ClearOnlyGraph):
        inputs, outputs, example, airlight_method = ("hazy",), ("clear",), (noise,), None
    elif isinstance(graph, _HeadedGuidedPix2PixGraph):
        from .models.haze_statistics import AIRLIGHT_ESTIMATORS as estimates

        inputs, outputs = ("hazy", "airlight_estimates"), ("clear", "transmission", "airlight")
        example, airlight_method = (noise, torch.full((1, 9), 0.8)), None
    else:
        inputs, outputs = ("hazy", "airlight"), ("clear", "transmission")
        example, airlight_method = (noise, torch.full((1, 3, 1, 1), 0.8)), dehazer.model.airlight
    dynamic = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its notes on optional torchvision operators are not ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
            program = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes=(dynamic,) + ({},) * (len(inputs) - 1),
                external_data=False,
                verbose=verbose,
            )
    finally:
        logger.setLevel(level)
    proto = program.model_proto
    meta = {
        "hazefree_version": __version__,
        "method": dehazer.method,
        "airlight_method": airlight_method or "",
        "airlight_estimates": json.dumps(estimates),
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(outputs),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(path)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(proto.SerializeToString()))
    return ExportInfo(out, dehazer.method, inputs, outputs, airlight_method, estimates)
