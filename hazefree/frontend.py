"""What the command line, the Ray path and the web page share, below all three of them.

Loading a method by name (:func:`load_dehazer`, with the message an unknown name gets), the
one-line text of an exception (:func:`message`) and of a failed file (:func:`failure`), the
usage error type (:class:`UsageError`) and printing a line past a progress bar (:func:`report`).
:mod:`hazefree.cli`, :mod:`hazefree.distributed` and :mod:`hazefree.web.server` import these;
nothing imports the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["UsageError", "NO_TRANSMISSION", "load_dehazer", "message", "failure", "report"]


class UsageError(ValueError):
    """The command cannot run as given (reported as one line, exit status 2)."""


# Printed once after a batch whose method gave no transmission map for --save-transmission.
NO_TRANSMISSION = "note: method {method!r} has no transmission map; nothing saved for --save-transmission"


def message(exc: BaseException) -> str:
    """One line from an exception (a KeyError's str() would add quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = str(text).strip().splitlines()
    return " ".join(line.strip() for line in lines) if lines else type(exc).__name__


def failure(job, exc: Exception) -> str:
    """The one-line report of a file (a :class:`hazefree.pipeline.Job`) whose processing raised ``exc``."""
    from .io import ImageReadError

    if isinstance(exc, ImageReadError):
        return f"error: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"error: {job.source}: cannot write {exc.filename}: {exc.strerror or message(exc)}"
    problem = "not enough memory" if isinstance(exc, MemoryError) else message(exc)
    return f"error: {job.source}: {problem}"


def load_dehazer(method: str | None, airlight: str | None, post: str | None = None, strength: float = 1.0):
    """A :class:`hazefree.Dehazer`; an unknown method name is a :class:`UsageError` listing the known ones."""
    from . import models
    from .api import Dehazer

    # strength 1 is the Dehazer's default (the method's own result): passed only when it differs
    options = {} if strength == 1.0 else {"strength": strength}
    try:
        return Dehazer(method, airlight, post=post, **options)
    except KeyError:
        if method is None or Path(method).suffix in {".safetensors", ".pt", ".pth"}:
            raise  # a weights file naming an unknown model: the registry's message says so
        raise UsageError(
            f"unknown method {method!r}; available: {', '.join(models.available())}, "
            "or a weights file (.safetensors, .pt, .pth)"
        ) from None


def report(line: str) -> None:
    """Print a line to stderr without breaking a running progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
