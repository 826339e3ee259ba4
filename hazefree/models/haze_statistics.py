"""The haze statistics that Guided-Pix2Pix's airlight head and haze gates read (not in the paper):
airlight estimates of the input, and the colour and transmission of its haziest and clearest pixels.
They describe the haze, not the scene, so that a small head fitted on them cannot recognise the
training scenes."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AIRLIGHT_ESTIMATORS", "DEPTH_STATISTICS", "depth_statistics", "stack_estimates"]

# The airlight estimators whose values the airlight head and the haze gates read, in this order.
AIRLIGHT_ESTIMATORS = ("max_luma", "dark_channel", "dark_channel_brightest")


def stack_estimates(estimates: dict[str, Tensor]) -> Tensor:
    """The N x 9 airlight estimates of :data:`AIRLIGHT_ESTIMATORS`, in order."""
    return torch.cat([estimates[m].flatten(1) for m in AIRLIGHT_ESTIMATORS], 1)


# Number of values :func:`depth_statistics` returns per image.
DEPTH_STATISTICS = 9


def depth_statistics(image: Tensor, t0: Tensor) -> Tensor:
    """Colour and transmission of the haziest and the clearest 1 % of pixels, by t0.

    Returns N x 9: mean colour of the haziest pixels (3) and their mean t0, the same for the
    clearest pixels (3 + 1), and the mean t0. With I = J t + A (1 - t), the haziest pixels'
    colour and t0 bound A from below and say how far to extrapolate.

    The k = 1 % pixels are those strictly beyond the k-th value of t0, plus an equal share of every
    pixel tied with it: a dark channel has plateaus, and which tied pixels ``topk`` returns is up to
    the runtime (PyTorch and onnxruntime differ), so the tied ones are averaged, each with weight
    (k - strictly beyond) / tied. Without ties this is the plain mean of the k selected pixels.
    """
    n = image.shape[0]
    flat_t = t0.reshape(n, -1)
    flat_i = image.reshape(n, image.shape[1], -1)
    k = torch.sym_max(1, flat_t.shape[1] // 100)  # integer arithmetic: also a symbolic size in ONNX export
    out = []
    for sign in (-1.0, 1.0):  # haziest (lowest t0), then clearest
        ranked = sign * flat_t
        kth = ranked.topk(k, dim=1).values[:, -1:]
        beyond, tied = (ranked > kth).to(flat_t), (ranked == kth).to(flat_t)
        share = (k - beyond.sum(dim=1, keepdim=True)) / tied.sum(dim=1, keepdim=True)
        weight = beyond + share * tied  # sums to k
        colour = (flat_i * weight.unsqueeze(1)).sum(dim=2) / k
        out += [colour, (flat_t * weight).sum(dim=1, keepdim=True) / k]
    return torch.cat(out + [flat_t.mean(dim=1, keepdim=True)], dim=1)
