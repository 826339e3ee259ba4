"""The Markdown report of an evaluation, with the paper's published values, marked as the paper's."""

from __future__ import annotations

from typing import Sequence

from .no_reference import CLIPPED_DESCRIPTION, FADE_DESCRIPTION, HAZE_DENSITY_DESCRIPTION
from .protocol import Protocol
from .scoring import DatasetResult
from .tables import _md, dataset_table, no_reference_table, summarize


# Published numbers for reference, never mixed with ours: Ma et al. 2021 (Guided-Pix2Pix), Table I,
# PSNR / SSIM mean ± std on the full SOTS indoor/outdoor and O-HAZE sets (their protocol).
PAPER_TABLE_I = {
    "SOTS indoor": {"DCP": "12.24 ± 5.19 / 0.6678 ± 0.1741", "AOD-Net": "18.73 ± 3.22 / 0.8290 ± 0.0823",
                    "GP2P-G": "16.71 ± 3.59 / 0.7833 ± 0.0815",
                    "GP2P-Rescale": "14.48 ± 3.53 / 0.6910 ± 0.0810",
                    "GP2P-Retinex": "12.32 ± 2.34 / 0.6456 ± 0.1042"},
    "SOTS outdoor": {"DCP": "15.53 ± 5.19 / 0.7877 ± 0.1633", "AOD-Net": "19.50 ± 2.25 / 0.8549 ± 0.0485",
                     "GP2P-G": "21.42 ± 2.47 / 0.8448 ± 0.0673",
                     "GP2P-Rescale": "17.17 ± 2.40 / 0.7588 ± 0.0545",
                     "GP2P-Retinex": "13.58 ± 1.71 / 0.6564 ± 0.0835"},
    "O-HAZE": {"DCP": "13.18 ± 5.12 / 0.5274 ± 0.1596", "AOD-Net": "14.83 ± 1.53 / 0.4670 ± 0.1045",
               "GP2P-G": "16.05 ± 3.18 / 0.5654 ± 0.1301",
               "GP2P-Rescale": "10.38 ± 2.12 / 0.4590 ± 0.0998",
               "GP2P-Retinex": "10.99 ± 1.83 / 0.4438 ± 0.0901"},
}
# Our dataset folders and the paper's sets they are samples of.
PAPER_DATASETS = {"sots_indoor": "SOTS indoor", "sots_outdoor": "SOTS outdoor", "ohaze": "O-HAZE"}


def paper_table() -> str:
    """The paper's Table I values (PSNR / SSIM), as Markdown, marked as the paper's."""
    cols = ["DCP", "AOD-Net", "GP2P-G", "GP2P-Rescale", "GP2P-Retinex"]
    return _md(["dataset (paper's full sets)", *(f"{c} (paper)" for c in cols)],
               [[d, *(vals[c] for c in cols)] for d, vals in PAPER_TABLE_I.items()])


PAPER_NOTE = ("Published values, Ma et al. 2021 (Guided-Pix2Pix, JSTARS), Table I: PSNR (dB) / SSIM, "
              "mean ± std on the full test sets with the authors' protocol and models. They are the "
              "paper's numbers, not ours, and not comparable image for image.")


def report_markdown(results: Sequence[DatasetResult], methods: Sequence[str], protocol: Protocol,
                    post: str | None, title: str = "hazefree evaluation") -> str:
    """A Markdown report: protocol, the no-reference measures, one table per dataset (plus its
    no-reference table if it has ground truth), then the paper's values, marked as such."""
    from ..postprocess import describe_post

    rows = [r for res in results for r in res.rows]
    summary = summarize(rows)
    parts = [f"# {title}", "", protocol.describe(), "", describe_post(post), "",
             "No-reference measures, of the hazy input and of every output:", "",
             *(f"- {d}." for d in (HAZE_DENSITY_DESCRIPTION, FADE_DESCRIPTION, CLIPPED_DESCRIPTION)), ""]
    for res in results:
        ds = res.dataset
        parts += [f"## {ds.name}", "", f"{len(res.rows) // max(1, len(methods))} images from `{ds.root}`", ""]
        if not ds.paired:
            parts += ["No ground truth: no-reference measures only.", ""]
        parts += [dataset_table(summary, ds.name, methods), ""]
        if ds.paired:
            parts += [no_reference_table(summary, ds.name, methods), ""]
    parts += ["## Published values (not ours)", "", PAPER_NOTE, "", paper_table(), ""]
    return "\n".join(parts)
