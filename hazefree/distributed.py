"""Batch dehazing on a Ray cluster: ``hazefree dehaze INPUT... -o OUT --ray [ADDRESS]``.

The driver (the ``hazefree`` process) plans the jobs exactly as the single-machine command does
(the same output names, the same refusal to overwrite, ``--skip-existing``); this module only
changes where each file is processed. Every file is one Ray task running the command's per-file
function (:func:`hazefree.pipeline.dehaze_file`); a task returns its outcome and its warning or error
lines, which the driver prints as the single-machine command would, under one progress bar for the
whole job. The exit status is the command's: 0 when every file was dehazed, 1 when some failed
(each named), 2 for an unusable command (including a cluster that cannot be reached).

Each Ray worker process loads the model once, on its first task, and keeps it for the next ones
(:func:`_cached_dehazer`); a task asks for one CPU, so a node runs as many model copies as it has
CPUs, each with one torch thread. Tasks hold paths, not pixels: the workers read and write the
files themselves, so every node must see the inputs and the output folder at the same paths (a
shared file system, or object storage mounted at one path; see docs/deployment.md). At most
:data:`IN_FLIGHT_PER_CPU` tasks per cluster CPU are submitted at a time, so an archive of millions
of files does not put millions of pending tasks on the driver.

Without ADDRESS a local Ray instance is started for the run (and shut down after it); a Ray
connection that is already open in the calling process is used as it is.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["process_on_ray", "IN_FLIGHT_PER_CPU", "LOCAL_OBJECT_STORE_BYTES"]

IN_FLIGHT_PER_CPU = 4
# Tasks pass paths and a few lines of text, never images, so a local instance needs little shared
# memory; Ray's default (30 % of RAM) would reserve gigabytes for nothing.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


class _Settings(NamedTuple):
    """What every task needs besides its job."""

    method: str
    airlight: str | None
    post: str | None
    max_pixels: int | None
    tile: int | None  # --tile (None: chosen from each image's size)
    debug: bool
    cwd: str  # the driver's working folder, for relative paths
    strength: float = 1.0  # --strength
    crf: int = 18  # --crf, for videos (a whole video is one task)


class _Outcome(NamedTuple):
    ok: bool
    has_transmission: bool
    lines: list[str]  # warnings and the error, in order, ready to print


@functools.lru_cache(maxsize=2)
def _cached_dehazer(method: str | None, airlight: str | None, post: str | None, strength: float = 1.0):
    from .frontend import load_dehazer

    return load_dehazer(method, airlight, post, strength)


def _run_job(job, settings: _Settings) -> _Outcome:
    """One file, in a Ray worker: the single-machine command's per-file function and messages."""
    from .frontend import failure
    from .pipeline import FileOptions, dehaze_file

    # Relative paths mean what they meant to the driver (the same folder on shared storage).
    if os.getcwd() != settings.cwd and os.path.isdir(settings.cwd):
        os.chdir(settings.cwd)
    lines: list[str] = []
    try:
        dehazer = _cached_dehazer(settings.method, settings.airlight, settings.post, settings.strength)
        from .video import VideoOptions

        video = VideoOptions(crf=settings.crf, max_pixels=settings.max_pixels)
        result = dehaze_file(dehazer, job, FileOptions(settings.max_pixels, settings.tile, video))
        lines += [f"warning: {text}" for text in result.warnings]
        return _Outcome(True, result.has_transmission, lines)
    except Exception as exc:  # reported by the driver; the job goes on
        if settings.debug:
            lines.append(traceback.format_exc().rstrip())
        lines.append(failure(job, exc))
        return _Outcome(False, False, lines)


def _connect(ray: Any, address: str) -> bool:
    """Connect to ``address`` or start a local instance; True if this call started Ray."""
    import logging

    from .frontend import UsageError

    if ray.is_initialized():
        return False
    options: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address:
        options["address"] = address
    else:
        options.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    try:
        ray.init(**options)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UsageError(f"--ray: cannot start or reach {where}: {type(exc).__name__}: {exc}") from None
    return True


def _import_ray():
    from .frontend import UsageError

    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray; install it with: pip install 'hazefree[ray]'") from None
    return ray


def process_on_ray(jobs: list, dehazer, args: argparse.Namespace) -> tuple[int, int]:
    """Dehaze ``jobs`` (planned by :mod:`hazefree.cli`) as Ray tasks; return (done, failed).

    ``dehazer`` is the driver's loaded method (it has already validated ``args.method``); the
    workers load the same method, airlight and post-processing by name.
    """
    from tqdm import tqdm

    from .frontend import NO_TRANSMISSION, UsageError, report

    if args.ray and os.path.exists(args.ray):
        # `--ray photos/ more/ -o out` takes photos/ as the address (an optional option value)
        raise UsageError(
            f"--ray took {args.ray!r} as the cluster address; write --ray=ADDRESS or put --ray after the inputs"
        )
    ray = _import_ray()
    if not jobs:
        return 0, 0
    method = dehazer.method
    if Path(method).is_file():
        method = str(Path(method).resolve())  # a weights file, found by the workers on shared storage
    settings = _Settings(
        method, args.airlight, dehazer.post, args.max_pixels or None, getattr(args, "tile", None),
        getattr(args, "debug", False), os.getcwd(), dehazer.strength, getattr(args, "crf", 18)
    )
    started = _connect(ray, args.ray)
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(_run_job)
        window = max(1, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        done = failed = 0
        no_transmission = False
        pending: dict[Any, Any] = {}
        queue = iter(jobs)
        bar = tqdm(total=len(jobs), unit="image", disable=len(jobs) <= 1, file=sys.stderr, dynamic_ncols=True)
        while True:
            for job in queue:
                pending[task.remote(job, settings)] = job
                if len(pending) >= window:
                    break
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as exc:  # the task itself failed (worker lost twice, ...)
                outcome = _Outcome(False, False, [f"error: {job.source}: Ray task failed: {type(exc).__name__}"])
            for line in outcome.lines:
                report(line)
            done += outcome.ok
            failed += not outcome.ok
            no_transmission |= outcome.ok and job.transmission is not None and not outcome.has_transmission
            bar.update()
        bar.close()
    finally:
        if started:
            ray.shutdown()
    if no_transmission:
        report(NO_TRANSMISSION.format(method=dehazer.method))
    return done, failed
