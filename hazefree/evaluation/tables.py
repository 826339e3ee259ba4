"""Summaries of scored rows: mean ± population std per (dataset, method), Markdown tables, CSV."""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import Iterable, Mapping, Sequence

from .protocol import Row

# The per-image scores of a Row that summarize() averages.
SCORES = ("psnr", "ssim", "haze_input", "haze_output", "fade_input", "fade_output", "clipped_input",
          "clipped_output")
# No-reference rows of the tables: label, Row field prefix, decimals, display scale.
_NO_REFERENCE = (("haze density (lower = clearer)", "haze", 3, 1.0), ("FADE (lower = less fog)", "fade", 3, 1.0),
                 ("clipped pixels (%)", "clipped", 2, 100.0))

def _stats(values: list[float]) -> tuple[float, float]:
    if any(math.isinf(v) for v in values):  # a perfect output (PSNR = inf): no finite mean or spread
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def summarize(rows: Iterable[Row]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Per (dataset, method): image count ``n``, mean and population std (``<name>_std``) of every
    score of :data:`SCORES` (None where not measured for some image), and mean ``seconds``."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.method), []).append(r)
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, rs in groups.items():
        entry: dict[str, float | None] = {"n": len(rs)}
        for name in SCORES:
            values = [getattr(r, name) for r in rs]
            if any(v is None for v in values):
                entry[name] = entry[f"{name}_std"] = None
            else:
                entry[name], entry[f"{name}_std"] = _stats(values)
        times = [r.seconds for r in rs]
        entry["seconds"] = None if any(t is None for t in times) else statistics.fmean(times)
        out[key] = entry
    return out


def _pm(v: dict, key: str, digits: int, scale: float = 1.0) -> str:
    if v is None or v.get(key) is None:
        return "-"
    return f"{scale * v[key]:.{digits}f} ± {scale * v[key + '_std']:.{digits}f}"


def _md(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def dataset_table(summary: Mapping[tuple[str, str], dict], dataset: str, methods: Sequence[str]) -> str:
    """Table-I-style Markdown table of one dataset: methods as columns, PSNR / SSIM (mean ± std)
    as rows, or for a dataset without ground truth the no-reference measures (haze density, FADE,
    clipped pixels) of input and outputs (for a paired one, :func:`no_reference_table` has them)."""
    stats = [summary.get((dataset, m)) for m in methods]
    known = [s for s in stats if s is not None]
    if not known:
        raise ValueError(f"no results for dataset {dataset!r}")
    n = int(known[0]["n"])
    secs = ["-" if s is None or s["seconds"] is None else f"{s['seconds']:.3f}" for s in stats]
    if known[0]["psnr"] is not None:
        body = [["PSNR (dB)", *(_pm(s, "psnr", 2) for s in stats)],
                ["SSIM", *(_pm(s, "ssim", 4) for s in stats)],
                ["seconds / image", *secs]]
        return _md([f"{dataset} (n = {n})", *methods], body)
    body = [*_no_reference_rows(stats), ["seconds / image", "-", *secs]]
    return _md([f"{dataset} (n = {n}, no ground truth)", "hazy input", *methods], body)


def _no_reference_rows(stats: Sequence[dict | None]) -> list[list[str]]:
    known = next(s for s in stats if s is not None)
    return [[label, _pm(known, f"{key}_input", digits, scale), *(_pm(s, f"{key}_output", digits, scale) for s in stats)]
            for label, key, digits, scale in _NO_REFERENCE]


def no_reference_table(summary: Mapping[tuple[str, str], dict], dataset: str, methods: Sequence[str]) -> str:
    """Markdown table of the no-reference measures of one dataset (with or without ground truth):
    haze density, FADE and clipped pixels (%) of the hazy input and of each method, mean ± std."""
    stats = [summary.get((dataset, m)) for m in methods]
    known = [s for s in stats if s is not None]
    if not known:
        raise ValueError(f"no results for dataset {dataset!r}")
    n = int(known[0]["n"])
    return _md([f"{dataset} (n = {n}), no reference", "hazy input", *methods], _no_reference_rows(stats))


def markdown_table(summary: Mapping[tuple[str, str], dict], methods: Sequence[str]) -> str:
    """Overview of the paired datasets: one row per dataset, ``PSNR ± std / SSIM ± std`` per method."""
    datasets = [d for d in dict.fromkeys(d for d, _ in summary)
                if any(v["psnr"] is not None for (dd, _), v in summary.items() if dd == d)]
    body = []
    for d in datasets:
        n = next(int(v["n"]) for (dd, _), v in summary.items() if dd == d)
        cells = []
        for m in methods:
            v = summary.get((d, m))
            cells.append("-" if v is None else f"{_pm(v, 'psnr', 2)} / {_pm(v, 'ssim', 4)}")
        body.append([f"{d} ({n})", *cells])
    return _md(["dataset (n)", *methods], body)


def win_table(rows: Iterable[Row], methods: Sequence[str], references: Sequence[str]) -> str:
    """Per-image robustness of each method against each reference (e.g. DCP and the hazy input):
    the share of images on which its PSNR is higher, and the worst image's PSNR margin, per dataset.

    A mean gain can hide images that a method makes worse; the win rate and the worst margin show them.
    """
    psnr: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r.psnr is not None:
            psnr.setdefault((r.dataset, r.method), {})[r.image] = r.psnr
    datasets = list(dict.fromkeys(d for d, _ in psnr))
    pairs = [(m, ref) for m in methods for ref in references if m != ref]
    body = []
    for d in datasets:
        cells = []
        for m, ref in pairs:
            ours, theirs = psnr.get((d, m), {}), psnr.get((d, ref), {})
            common = [i for i in ours if i in theirs]
            if not common:
                cells.append("-")
                continue
            margins = [ours[i] - theirs[i] for i in common]
            wins = sum(x > 0 for x in margins)
            cells.append(f"{wins}/{len(common)}, worst {min(margins):+.2f}")
        body.append([d, *cells])
    return _md(["dataset", *(f"{m} vs {ref}" for m, ref in pairs)], body)


def fade_table(rows: Iterable[Row], methods: Sequence[str], reference: str) -> str:
    """Real photos, one row per dataset: mean FADE of the inputs, then per method its mean FADE, its
    mean clipped-pixel share and on how many photos its FADE is below ``reference``'s (clearer)."""
    fade: dict[tuple[str, str], dict[str, float]] = {}
    clipped: dict[tuple[str, str], list[float]] = {}
    inputs: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.fade_output is None or r.fade_input is None:
            continue
        fade.setdefault((r.dataset, r.method), {})[r.image] = r.fade_output
        clipped.setdefault((r.dataset, r.method), []).append(r.clipped_output or 0.0)
        inputs.setdefault(r.dataset, {})[r.image] = r.fade_input
    body = []
    for d, by_image in inputs.items():
        cells = []
        for m in methods:
            ours, theirs = fade.get((d, m), {}), fade.get((d, reference), {})
            if not ours:
                cells.append("-")
                continue
            cell = f"{statistics.fmean(ours.values()):.3f} / {100 * statistics.fmean(clipped[d, m]):.2f} %"
            if m != reference and theirs:
                common = [i for i in ours if i in theirs]
                cell += f", clearer on {sum(ours[i] < theirs[i] for i in common)}/{len(common)}"
            cells.append(cell)
        body.append([f"{d} ({len(by_image)})", f"{statistics.fmean(by_image.values()):.3f}", *cells])
    return _md(["dataset (n)", "hazy input", *methods], body)


def haze_table(summary: Mapping[tuple[str, str], dict], methods: Sequence[str]) -> str:
    """Haze density (mean ± std) of the inputs and of each method's outputs, one row per dataset."""
    datasets = list(dict.fromkeys(d for d, _ in summary))
    body = []
    for d in datasets:
        first = next(v for (dd, _), v in summary.items() if dd == d)
        body.append([f"{d} ({int(first['n'])})", _pm(first, "haze_input", 3),
                     *(_pm(summary.get((d, m)), "haze_output", 3) for m in methods)])
    return _md(["dataset (n)", "hazy input", *methods], body)


def rows_to_csv(rows: Iterable[Row]) -> str:
    """Per-image CSV: dataset, image, method, psnr, ssim, seconds, haze_input, haze_output,
    fade_input, fade_output, clipped_input, clipped_output (clipped: a share in [0, 1]); empty
    cells where a value was not measured."""

    def fmt(v: float | None, digits: int) -> str:
        return "" if v is None else ("inf" if math.isinf(v) else f"{v:.{digits}f}")

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "image", "method", "psnr", "ssim", "seconds", "haze_input", "haze_output",
                "fade_input", "fade_output", "clipped_input", "clipped_output"])
    for r in rows:
        w.writerow([r.dataset, r.image, r.method, fmt(r.psnr, 4), fmt(r.ssim, 6), fmt(r.seconds, 4),
                    fmt(r.haze_input, 5), fmt(r.haze_output, 5), fmt(r.fade_input, 6), fmt(r.fade_output, 6),
                    fmt(r.clipped_input, 6), fmt(r.clipped_output, 6)])
    return buf.getvalue()
