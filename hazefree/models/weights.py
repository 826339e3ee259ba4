"""Reading and writing model weights safely.

Weights are stored as safetensors (plain tensors plus string metadata: the model name and its
options as JSON), so loading a file can never run code. Legacy ``.pt``/``.pth`` files are read
with ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _st_load
from safetensors.torch import save_file as _st_save
from torch import nn

from ..io import (
    atomic_write,  # the helper lives in hazefree.io; kept importable from here
)
from .ddu import DownUp, wrapper_options

__all__ = ["CheckpointError", "save_weights", "load_weights", "load_state_strict", "shipped_path"]

_PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used (corrupt, unsafe or of another model)."""


def shipped_path(name: str) -> Path:
    """Location of the weights shipped in the package for model ``name``."""
    return _PACKAGE_WEIGHTS / f"{name}.safetensors"


def save_weights(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    model_name: str | None = None,
    options: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write a state dict as safetensors (atomically), with the model name and options as metadata.

    A :class:`~hazefree.models.ddu.DownUp` model records its ``ddu*`` options with the others, so
    :func:`hazefree.models.load_file` rebuilds the wrapper.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if model_name is not None and isinstance(model_or_state, nn.Module):
        options = {**(options or {}), **wrapper_options(model_or_state)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": "hazefree"}
    if model_name is not None:
        meta["model"] = model_name
    if options is not None:
        meta["options"] = json.dumps(dict(options), sort_keys=True)
    meta.update(extra or {})
    atomic_write(path, lambda tmp: _st_save(tensors, tmp, metadata=meta))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read (state dict, metadata) from a safetensors file, or a weights-only ``.pt``/``.pth`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            return _st_load(str(path)), meta
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path}: refused to load: not a plain-tensor checkpoint (weights_only=True rejected it: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return obj, {}


def load_state_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path, new_modules: Sequence[str] = ()
) -> None:
    """Load ``state`` into ``model``; on any missing, unexpected or mis-shaped key raise a clear error.

    Parameters of the modules named in ``new_modules`` (e.g. a head added on top of trained
    weights) may be absent from ``state``; they keep their current values. Into a
    :class:`~hazefree.models.ddu.DownUp` model, the weights of a plain model go to the wrapped
    model, and the upsampler keeps its initialisation (bilinear upsampling).
    """
    if isinstance(model, DownUp) and not any(k.startswith("model.") for k in state):
        inner_new = [m.removeprefix("model.") for m in new_modules if m.startswith("model.")]
        return load_state_strict(model.model, state, source, inner_new)
    own = model.state_dict()
    keys_of = {m: {k for k in own if k.startswith(f"{m}.")} for m in new_modules}
    fresh = set().union(*keys_of.values())
    unknown = [m for m, keys in keys_of.items() if not keys]
    if unknown:
        raise CheckpointError(f"{source}: {type(model).__name__} has no module {', '.join(unknown)}")
    missing = sorted(set(own) - set(state) - fresh)
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{label}: {', '.join(keys[:8])}{more}")
        raise CheckpointError(
            f"{source}: weights do not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict({**{k: own[k] for k in fresh - set(state)}, **state}, strict=True)
