"""The scoring protocol (:class:`Protocol`) and one scored (image, method) record (:class:`Row`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..metrics import SSIM_VARIANTS


@dataclass(frozen=True)
class Protocol:
    """How outputs are scored.

    Attributes:
        y_channel: score BT.601 luma (MATLAB ``rgb2ycbcr``) instead of RGB.
        ssim_variant: ``"skimage"``, ``"gaussian11"`` or ``"uniform7"`` (see :mod:`hazefree.metrics`).
        crop: border pixels removed from every side of output and reference before scoring.
        quantize: round to 8 bits as a saved PNG would (``floor(255 x + 0.5)``), after clipping.
    """

    y_channel: bool = False
    ssim_variant: str = "skimage"
    crop: int = 0
    quantize: bool = True

    def __post_init__(self) -> None:
        if self.ssim_variant not in SSIM_VARIANTS:
            raise ValueError(f"unknown SSIM variant {self.ssim_variant!r}; choose one of {SSIM_VARIANTS}")
        if not isinstance(self.crop, int) or self.crop < 0:
            raise ValueError(f"crop must be a whole number >= 0, got {self.crop!r}")

    def describe(self) -> str:
        """The protocol as one line, printed with every table."""
        space = "Y (BT.601, MATLAB rgb2ycbcr)" if self.y_channel else "RGB"
        quant = "8-bit quantised (round half up, as saved)" if self.quantize else "not quantised"
        return (f"protocol: {space}, SSIM={self.ssim_variant}, border crop={self.crop} px, "
                f"output clipped to [0,1], {quant}, full resolution; mean ± population std over images")

    def prepare(self, x: Tensor) -> Tensor:
        """Clip, quantise and crop an N x C x H x W image as the protocol says."""
        # float32 with the same operations as hazefree.io's writer, so that scoring an output in
        # memory and scoring its saved PNG give identical numbers.
        x = x.float().clamp(0.0, 1.0)
        if self.quantize:
            x = torch.floor(x * 255.0 + 0.5) / 255.0
        c = self.crop
        if c:
            if 2 * c >= min(x.shape[-2:]):
                h, w = x.shape[-2:]
                raise ValueError(f"a border crop of {c} px leaves no pixels of a {h} x {w} image")
            x = x[..., c:-c, c:-c]
        return x


@dataclass(frozen=True)
class Row:
    """One scored (image, method): full-reference scores (None without ground truth), the method's
    run time (None for saved outputs) and the no-reference measures of the input and of the output:
    haze density, FADE (None for an image under 16 x 16 px) and the clipped-pixel share."""

    dataset: str
    image: str
    method: str
    psnr: float | None
    ssim: float | None
    seconds: float | None
    haze_input: float | None = None
    haze_output: float | None = None
    fade_input: float | None = None
    fade_output: float | None = None
    clipped_input: float | None = None
    clipped_output: float | None = None
