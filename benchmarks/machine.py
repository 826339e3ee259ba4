"""What the benchmark scripts report about the machine they ran on, and how they time."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from typing import Callable


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """1/5/15-minute load average: on a shared machine other jobs change the timings, so it is
    part of the record."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms over ``repeats`` runs, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, clock: str = "wall") -> dict[str, float]:
    """Median time in ms of each of ``fns``, timed in turn within each repeat (after one warm-up
    call each), so that a change of machine load affects them alike.

    ``clock="wall"`` measures elapsed time; ``"cpu"`` the CPU time of the process (all its threads),
    which other jobs on a loaded machine disturb far less: the work done, not the waiting.
    """
    timer = time.perf_counter if clock == "wall" else time.process_time
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            t0 = timer()
            fn()
            times[name].append((timer() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def copy_gbps(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """Measured memory copy speed in GB/s (bytes read + bytes written per second) of a
    ``megabytes`` float64 buffer with torch's ``copy_`` on ``threads`` threads: the rate that
    bounds a kernel that streams its arrays through memory."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(megabytes * 2**20 // 8, dtype=torch.float64)
        dst = torch.empty_like(src)
        ms = median_ms(lambda: dst.copy_(src), repeats)
    finally:
        torch.set_num_threads(previous)
    return 2 * src.numel() * 8 / (ms * 1e-3) / 1e9
