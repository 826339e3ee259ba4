"""Guided-Pix2Pix (Ma et al., "Guided-Pix2Pix", IEEE JSTARS 2021).

A Pix2Pix U-Net G0 predicts a coarse transmission t0 = sigmoid(G0(I)) (eq. 39), the parameter-free
guided filter layer refines it with the hazy image's gray version as guide, t = f_guided(I, t0)
(eq. 41), A is the brightest-luma colour, and J = (I - A) / t + A (eq. 42). Trained with L1 plus a
conditional PatchGAN loss (eqs. 43-44); see :mod:`hazefree.training`.

Beyond the paper, the U-Net can run at a working resolution (``work_size``, the longer side): a
larger input is resized down for the U-Net, and the fast guided filter computes the refinement's
coefficients there and applies them at full resolution, so a 4K photo costs about as much as its
working-size version while the transmission keeps full-resolution edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import fast_guided_filter, guided_filter, rgb_to_gray
from ..physics import estimate_airlight
from .outputs import DehazeOutput


def _norm(channels: int) -> nn.Module:
    # InstanceNorm (the paper's choice) keeps no running statistics: the model has no hidden state,
    # so functional_call / per-sample training see exactly what inference sees.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net (Isola et al. 2017, "unet_256" with ``num_downs=8``).

    Encoder blocks: conv 4x4 stride 2 -> InstanceNorm -> LeakyReLU(0.2) (no norm on the first and
    the innermost block). Decoder blocks: ReLU -> transposed conv 4x4 stride 2 -> InstanceNorm ->
    Dropout (the three innermost decoder blocks) with skip connections by concatenation.
    Channel widths: ngf * (1, 2, 4, 8, 8, ...).

    Input sizes are padded (reflect) to a multiple of 2**num_downs and the output cropped back, so
    any H x W works.

    Shape:
        N x in_channels x H x W -> N x out_channels x H x W (raw, no output activation).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        ngf: int = 64,
        num_downs: int = 8,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        self.num_downs = num_downs
        self.down = nn.ModuleList()
        c_in = in_channels
        for i, c in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c, 4, stride=2, padding=1)]
            if 0 < i < num_downs - 1:
                layers.append(_norm(c))
            layers.append(nn.LeakyReLU(0.2))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for j, i in enumerate(range(num_downs - 1, 0, -1)):  # innermost first
            c_skip_in = widths[i] if j == 0 else 2 * widths[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_skip_in, widths[i - 1], 4, stride=2, padding=1)]
            layers.append(_norm(widths[i - 1]))
            if j < 3 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.head = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect padding needs pad < size; replicate covers tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the innermost output is x itself
        for block in self.up:
            x = block(x)
            x = torch.cat([x, skips.pop()], dim=1)
        return self.head(x)[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (Isola et al. 2017; 70 x 70 receptive field with ``n_layers=3``).

    Sees the hazy image concatenated with a clear (real or generated) image and returns one logit
    per patch. Blocks: conv 4x4 -> InstanceNorm -> LeakyReLU(0.2) (Ma et al. Sec. III-E).

    Shape:
        (N x 3 x H x W, N x 3 x H x W) -> N x 1 x H' x W' logits.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_next = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1), _norm(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, hazy: Tensor, clear: Tensor) -> Tensor:
        return self.net(torch.cat([hazy, clear], dim=1))


class GuidedPix2Pix(nn.Module):
    """Guided-Pix2Pix generator G: U-Net -> guided filter layer -> scattering equation.

    Args:
        ngf: base width of the U-Net.
        num_downs: number of U-Net down-sampling blocks.
        dropout: dropout in the three innermost decoder blocks (training only).
        radius: guided-filter radius, in pixels of the working resolution (paper: 60 at 512 x 512).
        eps: guided-filter epsilon (paper: 1e-8).
        t_min: lower bound of the refined transmission; J is clipped to [0, 1] in eval mode only,
            so training keeps gradients for every pixel.
        airlight: airlight estimator, ``"max_luma"`` (paper) or ``"dark_channel"``.
        work_size: longer side at which the U-Net runs; larger inputs are resized down and the fast
            guided filter carries t back to full resolution. ``None`` runs at full resolution.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` (clear, transmission, airlight,
        coarse_transmission).
    """

    def __init__(
        self,
        ngf: int = 64,
        num_downs: int = 8,
        dropout: float = 0.5,
        radius: int = 60,
        eps: float = 1e-8,
        t_min: float = 0.05,
        airlight: str = "max_luma",
        work_size: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = UNetGenerator(3, 1, ngf=ngf, num_downs=num_downs, dropout=dropout)
        self.radius, self.eps, self.t_min = radius, eps, t_min
        self.airlight, self.work_size = airlight, work_size

    def forward(self, hazy: Tensor) -> DehazeOutput:
        h, w = hazy.shape[-2:]
        with torch.no_grad():  # A is a statistic of the input; no parameter influences it
            a = estimate_airlight(hazy, self.airlight)
        low = hazy
        if self.work_size is not None and max(h, w) > self.work_size:
            s = self.work_size / max(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            low = F.interpolate(hazy, size=size, mode="bilinear", align_corners=False, antialias=True)
        t0 = torch.sigmoid(self.backbone(low))
        guide_low = rgb_to_gray(low)
        if low is hazy:
            t = guided_filter(guide_low, t0, self.radius, self.eps)
        else:
            t = fast_guided_filter(rgb_to_gray(hazy), guide_low, t0, self.radius, self.eps)
        t = t.clamp(self.t_min, 1.0)
        clear = (hazy - a) / t + a
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear, transmission=t, airlight=a, coarse_transmission=t0)

    def extra_repr(self) -> str:
        return (
            f"radius={self.radius}, eps={self.eps}, t_min={self.t_min}, "
            f"airlight={self.airlight!r}, work_size={self.work_size}"
        )


def guided_pix2pix(**kwargs) -> GuidedPix2Pix:
    return GuidedPix2Pix(**kwargs)


__all__ = [
    "UNetGenerator",
    "PatchDiscriminator",
    "GuidedPix2Pix",
    "guided_pix2pix",
]
