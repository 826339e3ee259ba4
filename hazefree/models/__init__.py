"""Dehazing models: one file per architecture, a registry of named presets, shipped weights.

Every model maps an N x 3 x H x W hazy batch in [0, 1] to a :class:`DehazeOutput`.

Example:
    >>> from hazefree import models
    >>> net = models.create("guided-pix2pix")          # architecture, random weights
    >>> net = models.load("guided-pix2pix")            # with the weights shipped in the package
    >>> out = net.eval()(torch.rand(1, 3, 64, 64)); out.clear.shape
    torch.Size([1, 3, 64, 64])
    >>> net = models.create("aod-net", ddu=4)         # any model inside the DDU down-up wrapper

The ``ddu`` option (and ``ddu_upsampler``) of :func:`create`, :func:`load` and :func:`load_file`
wraps the model in :class:`DownUp` (see :mod:`hazefree.models.ddu`); weights files record it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import weights as _weights
from .aod_net import AODNet
from .dcp import DarkChannelPrior
from .ddu import DownUp
from .dehazenet import DehazeNet
from .ffa_net import FFANet
from .griddehazenet import GridDehazeNet
from .guided_pix2pix import GuidedPix2Pix, PatchDiscriminator, UNetGenerator
from .msbdn import MSBDN
from .outputs import DehazeOutput
from .registry import Registry
from .weights import CheckpointError, load_weights, save_weights

__all__ = [
    "DehazeOutput",
    "DarkChannelPrior",
    "DownUp",
    "GuidedPix2Pix",
    "PatchDiscriminator",
    "UNetGenerator",
    "MSBDN",
    "FFANet",
    "AODNet",
    "DehazeNet",
    "GridDehazeNet",
    "CheckpointError",
    "create",
    "available",
    "load",
    "load_file",
    "save_weights",
    "load_weights",
    "count_parameters",
    "has_pretrained",
    "pretrained",
    "override_airlight",
    "MODELS",
]


def _build_registry() -> Registry[nn.Module]:
    reg: Registry[nn.Module] = Registry("model")
    reg.register("dcp", DarkChannelPrior, "Dark Channel Prior (He et al. 2009) + guided filter")
    # CPU preset: trains here in hours and dehazes a 1080p photo in about a second on 2 cores.
    # Deviations from the paper: ngf 16 / 7 down-blocks instead of 64 / 8; r = 30, eps = 1e-4 at a
    # 256-512 px working size instead of r = 60, eps = 1e-8 at 512. The shipped weights were trained
    # with, and record, airlight="dark_channel_brightest" instead of max luma (docs/models.md, "Guided-Pix2Pix
    # presets").
    reg.register(
        "guided-pix2pix",
        GuidedPix2Pix,
        "Guided-Pix2Pix (Ma et al. 2021), CPU preset",
        ngf=16, num_downs=7, radius=30, eps=1e-4, t_min=0.05, work_size=512,
    )
    # The published configuration: Pix2Pix unet_256 widths, r = 60, eps = 1e-8 at 512 x 512.
    reg.register(
        "guided-pix2pix-paper",
        GuidedPix2Pix,
        "Guided-Pix2Pix (Ma et al. 2021), paper preset",
        ngf=64, num_downs=8, radius=60, eps=1e-8, t_min=0.05, work_size=512,
    )
    # Published configurations, exact parameter counts (31,353,061 and 4,455,913); hazy-to-clear.
    reg.register("msbdn", MSBDN, "MSBDN-DFF (Dong et al. 2020), paper configuration", res_blocks=18)
    reg.register("ffa-net", FFANet, "FFA-Net (Qin et al. 2020), 3 groups x 19 blocks", blocks=19, dim=64)
    # Published configurations, exact parameter counts: AOD-Net 1,761 (released Caffe model),
    # DehazeNet 8,305 (paper Table I; the Caffe re-implementation has 8,561, see its docstring),
    # GridDehazeNet 958,051 (official default 3 x 6 grid).
    reg.register("aod-net", AODNet, "AOD-Net (Li et al. 2017), K-estimation + J = K*I - K + 1", b=1.0)
    reg.register(
        "dehazenet",
        DehazeNet,
        "DehazeNet (Cai et al. 2016), CNN transmission + guided filter",
        radius=50, eps=1e-3, t_min=0.1, airlight="dark_channel",
    )
    reg.register(
        "griddehazenet",
        GridDehazeNet,
        "GridDehazeNet (Liu et al. 2019), 3 x 6 grid, attention fusion",
        height=3, width=6, depth_rate=16, num_dense_layer=4, growth_rate=16,
    )
    return reg


MODELS = _build_registry()


def available(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob ``pattern``."""
    return MODELS.names(pattern)


def create(name: str, pretrained: bool = False, **options: Any) -> nn.Module:
    """Build model ``name`` with its preset defaults, overridden by ``options`` (None = default).

    ``ddu=S`` (an int >= 2) wraps the model in the DDU down-up module (:class:`DownUp`): it runs
    at 1/S of the size and a learned bilateral-grid upsampler restores full resolution;
    ``ddu_upsampler`` picks ``"bilateral"`` (default), ``"bilinear"`` or ``"guided"``.
    With ``pretrained=True`` the weights shipped in the package are loaded (see :func:`load`).
    """
    if pretrained:
        return load(name, **options)
    return _build(name, options)


def _build(name: str, options: dict[str, Any]) -> nn.Module:
    """The registry model, wrapped in :class:`DownUp` when ``options`` has a ``ddu`` factor."""
    options = dict(options)
    scale, upsampler = options.pop("ddu", None), options.pop("ddu_upsampler", None)
    net = MODELS.build(name, **options)
    if scale is None:
        if upsampler is not None:
            raise ValueError(f"ddu_upsampler={upsampler!r} needs a ddu factor")
        return net
    return DownUp(net, scale, upsampler or "bilateral")


def _inner(net: nn.Module) -> nn.Module:
    return net.model if isinstance(net, DownUp) else net


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def has_pretrained(name: str) -> bool:
    """True if the package ships weights for ``name`` (models without parameters count as shipped)."""
    if name not in MODELS:
        return False
    if _weights.shipped_path(name).is_file():
        return True
    # Counted on the meta device: no memory is allocated or initialised for the parameters.
    with torch.device("meta"):
        return count_parameters(MODELS.build(name)) == 0


def pretrained() -> list[str]:
    """Registered names usable without a weights file: shipped weights or no parameters."""
    return [name for name in available() if has_pretrained(name)]


def load(name: str, **options: Any) -> nn.Module:
    """Model ``name`` with its shipped pretrained weights, in eval mode; no network access.

    ``options`` may change inference-only settings (e.g. ``work_size``, ``airlight``); the
    architecture options recorded with the weights win over the preset's defaults.
    """
    MODELS.get(name)  # unknown names raise KeyError listing the known ones
    path = _weights.shipped_path(name)
    if path.is_file():
        return load_file(path, **options)
    model = _build(name, options)
    # a parameter-free model needs no weights; around it, DDU starts as bilinear upsampling
    if count_parameters(_inner(model)) == 0:
        return model.eval()
    shipped = [n for n in available() if _weights.shipped_path(n).is_file()]
    raise FileNotFoundError(
        f"no pretrained weights are shipped for {name!r}; models with weights: {', '.join(shipped) or 'none'}; "
        f"or give a weights file written by hazefree train"
    )


def load_file(path: str | Path, *, model: str | None = None, **options: Any) -> nn.Module:
    """Model from a weights file written by :func:`save_weights` or by ``hazefree train``.

    The file records the model name and its options; ``options`` override inference settings.
    A file written from a :class:`DownUp`-wrapped model rebuilds the wrapper; ``ddu=S`` wraps a
    plain model's weights (the upsampler starts as bilinear upsampling). ``model`` names the architecture for a file without that record (a plain safetensors state
    dict); for a file with one, the two must agree.
    """
    state, meta = load_weights(path)
    name = meta.get("model", model)
    if name is None:
        raise CheckpointError(f"{path}: no 'model' entry in the file's metadata; not a hazefree weights file")
    if model is not None and name != model:
        raise CheckpointError(f"{path}: holds weights for {name!r}, not {model!r}")
    recorded = json.loads(meta.get("options", "{}"))
    net = _build(name, {**recorded, **options})
    _weights.load_state_strict(net, state, path)
    return net.eval()


def _estimator(net: nn.Module) -> str | None:
    """The name of the airlight estimator ``net`` runs, None for a model without an airlight."""
    name = getattr(_inner(net), "airlight", None)
    return name if isinstance(name, str) else None


def override_airlight(net: nn.Module, airlight: str, method: str) -> nn.Module:
    """Make ``net`` (model ``method``) use the estimator ``airlight`` for A, in place; returns ``net``.

    A is then exactly that estimator's: a learned airlight head (Guided-Pix2Pix's
    :class:`~hazefree.models.guided_pix2pix.AirlightHead`), an airlight floor and a haze gate
    (which blends DCP's A in), which would otherwise correct, raise or move it, are bypassed; t is
    then the network's own. A model without an airlight (it maps hazy to clear
    directly, e.g. AOD-Net) raises ValueError saying so.
    """
    if _estimator(net) is None:
        with torch.device("meta"):  # which models take an estimator, without allocating any of them
            takers = [name for name in available() if _estimator(MODELS.build(name)) is not None]
        raise ValueError(
            f"method {method!r} has no airlight estimator to override: it maps a hazy image to a clear one "
            f"without an airlight A; --airlight applies to {', '.join(takers)}"
        )
    inner = _inner(net)
    inner.airlight = airlight
    if getattr(inner, "airlight_head", None) is not None:
        inner.airlight_head = None
    if getattr(inner, "airlight_floor", None) is not None:
        inner.airlight_floor = None
    if getattr(inner, "haze_gate", None) is not None:
        inner.haze_gate = None
        inner.region_gate = None
    return net
