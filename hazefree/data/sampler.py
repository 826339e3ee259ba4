"""Deterministic random crops of a :class:`~hazefree.data.bank.PairBank` (:class:`CropSampler`)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .bank import PairBank, _to_float, source_draw_weights


class CropSampler:
    """Deterministic random crops: batch ``step`` depends only on (seed, step, rank).

    That makes a resumed run draw exactly the batches of an uninterrupted one, with no sampler
    state to save, and gives each DDP rank its own data. Besides ``hazy`` and ``clear`` a batch
    holds each crop's bank ``index`` (N) and its ``box`` (N x 4: y, x, h, w, rounded) in the
    coordinates of the source file, i.e. before the bank's ``max_side`` reduction and the scaling,
    and its ``airlight`` (N x 3, NaN where the bank does not know it).

    Augmentation: random scale in ``scale_range`` (images smaller than the crop are enlarged to fit),
    horizontal flip, random crop of ``crop`` x ``crop``. With ``balance_sources`` each sample first
    draws a source (a dataset folder, or the depth-synthetic set) uniformly, then an image of it, so
    a large source (e.g. re-rendered RESIDE levels) does not crowd out a small one (RICE). With
    ``source_weights`` ({source label: weight}, every source named) the source is drawn with
    probability proportional to its weight instead. With
    ``channel_shuffle`` the same random permutation of the colour channels for hazy and clear,
    which keeps I = J t + A (1 - t) exact for a grey airlight and so adds scene colours without
    adding a haze the model cannot render.
    """

    def __init__(
        self,
        bank: PairBank,
        indices: Sequence[int],
        crop: int,
        batch_size: int,
        seed: int = 0,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flip: bool = True,
        channel_shuffle: bool = False,
        balance_sources: bool = False,
        source_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not indices:
            raise ValueError("no training images after the validation split")
        self.bank, self.indices = bank, list(indices)
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.scale_range, self.flip, self.channel_shuffle = scale_range, flip, channel_shuffle
        by_source = bank.by_source(self.indices)
        self.groups = list(by_source.values()) if balance_sources or source_weights else [self.indices]
        self.weights = source_draw_weights(by_source, source_weights) if source_weights else None

    def batch(self, step: int, rank: int = 0) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + step) * 1009 + rank) % 2**63)
        hazy, clear, index, box, airlight = [], [], [], [], []
        for _ in range(self.batch_size):
            group = self.groups[0]
            if self.weights is not None:
                group = self.groups[int(torch.multinomial(self.weights, 1, generator=gen))]
            elif len(self.groups) > 1:  # only then an extra draw: unbalanced runs keep their batches
                group = self.groups[int(torch.randint(len(self.groups), (1,), generator=gen))]
            i = group[int(torch.randint(len(group), (1,), generator=gen))]
            h, c, b, perm = self._crop(_to_float(self.bank.hazy[i]), _to_float(self.bank.clear[i]), gen)
            airlight.append(self.bank.airlights[i][perm])
            hazy.append(h)
            clear.append(c)
            # the box back in the source file's pixels: the crop's scale, then the max_side reduction
            (h0, w0), (hs, ws) = self.bank.sizes[i], b[4:]
            box.append([round(b[0] * h0 / hs), round(b[1] * w0 / ws), round(b[2] * h0 / hs), round(b[3] * w0 / ws)])
            index.append(i)
        return {"hazy": torch.cat(hazy), "clear": torch.cat(clear),
                "index": torch.tensor(index), "box": torch.tensor(box), "airlight": torch.stack(airlight)}

    def _crop(
        self, hazy: Tensor, clear: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, tuple[int, ...], Tensor]:
        """The crop pair, (top, left, crop, crop, H, W) in the scaled image of size H x W, and the
        order of its colour channels."""
        u = torch.rand(4, generator=gen).tolist()
        lo, hi = self.scale_range
        s = lo + (hi - lo) * u[0]
        h, w = hazy.shape[-2:]
        s = max(s, self.crop / min(h, w))  # enlarge images smaller than the crop
        if abs(s - 1.0) > 1e-6:
            size = (max(self.crop, math.ceil(h * s)), max(self.crop, math.ceil(w * s)))
            both = F.interpolate(
                torch.cat([hazy, clear]), size=size, mode="bilinear", align_corners=False,
                antialias=s < 1,
            ).clamp(0, 1)
            hazy, clear = both[:1], both[1:]
            h, w = size
        top = int(u[1] * (h - self.crop + 1))
        left = int(u[2] * (w - self.crop + 1))
        hazy = hazy[..., top : top + self.crop, left : left + self.crop]
        clear = clear[..., top : top + self.crop, left : left + self.crop]
        if self.flip and u[3] < 0.5:
            hazy, clear = hazy.flip(-1), clear.flip(-1)
        perm = torch.arange(3)
        if self.channel_shuffle:  # drawn only when enabled: other configs keep their batches
            perm = torch.randperm(3, generator=gen)
            hazy, clear = hazy[:, perm], clear[:, perm]
        return hazy, clear, (top, left, self.crop, self.crop, h, w), perm
