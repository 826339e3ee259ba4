"""Structured model outputs shared by every dehazer."""

from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


class DehazeOutput(NamedTuple):
    """What a dehazing model returns.

    Attributes:
        clear: N x 3 x H x W restored image (clipped to [0, 1] in eval mode).
        transmission: N x 1 x H x W refined transmission t, or None for models that map hazy to
            clear directly (they have no explicit t).
        airlight: N x 3 x 1 x 1 atmospheric light A, or None when the model does not estimate it.
        coarse_transmission: N x 1 x H' x W' transmission before refinement (Guided-Pix2Pix: the
            U-Net's t0 at the working resolution), or None.
    """

    clear: Tensor
    transmission: Optional[Tensor] = None
    airlight: Optional[Tensor] = None
    coarse_transmission: Optional[Tensor] = None
