"""FFA-Net (Qin et al., "FFA-Net: Feature Fusion Attention Network for Single Image Dehazing", AAAI 2020).

A full-resolution hazy-to-clear network of 64 channels: a 3 x 3 pre-convolution, three groups of
19 basic blocks, feature attention over the concatenated group outputs, a 2-convolution tail and a
global residual connection. Each basic block is ``conv -> ReLU -> (+ input) -> conv -> channel
attention -> pixel attention -> (+ input)``; each group ends with a convolution and a group-level
residual. Channel attention squeezes by 8 (1 x 1 convs after global average pooling), pixel
attention predicts one sigmoid weight per pixel.

The layer shapes follow the official ``FFA(gps=3, blocks=19)`` (repository zhilin007/FFA-Net,
``net/models/FFA.py``); attribute names mirror it, so its state dict keys match ours (strip the
``module.`` prefix of its DataParallel checkpoints). Trainable parameters: 4,455,913.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .outputs import DehazeOutput

__all__ = ["FFANet", "ffa_net"]

# The official data loader normalises the hazy input with these statistics (not the clear target).
HAZY_MEAN = (0.64, 0.6, 0.58)
HAZY_STD = (0.14, 0.15, 0.152)


def _conv(c_in: int, c_out: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


class _PixelAttention(nn.Module):
    """x * sigmoid(conv1x1(ReLU(conv1x1(x)))) with one weight per pixel (C -> C/8 -> 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pa = nn.Sequential(
            nn.Conv2d(channels, channels // 8, 1), nn.ReLU(), nn.Conv2d(channels // 8, 1, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.pa(x)


class _ChannelAttention(nn.Module):
    """x * sigmoid(conv1x1(ReLU(conv1x1(avgpool(x))))) with one weight per channel (C -> C/8 -> C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.ca = nn.Sequential(
            nn.Conv2d(channels, channels // 8, 1), nn.ReLU(), nn.Conv2d(channels // 8, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.ca(self.avg_pool(x))


class _Block(nn.Module):
    """Basic block: local residual after the first conv, CA and PA after the second, residual."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = _conv(dim, dim, kernel)
        self.act1 = nn.ReLU()
        self.conv2 = _conv(dim, dim, kernel)
        self.calayer = _ChannelAttention(dim)
        self.palayer = _PixelAttention(dim)

    def forward(self, x: Tensor) -> Tensor:
        res = self.act1(self.conv1(x)) + x
        res = self.palayer(self.calayer(self.conv2(res)))
        return res + x


class _Group(nn.Module):
    """``blocks`` basic blocks and a conv, with a residual around the group."""

    def __init__(self, dim: int, blocks: int, kernel: int = 3) -> None:
        super().__init__()
        self.gp = nn.Sequential(*[_Block(dim, kernel) for _ in range(blocks)], _conv(dim, dim, kernel))

    def forward(self, x: Tensor) -> Tensor:
        return self.gp(x) + x


class FFANet(nn.Module):
    """FFA-Net dehazer (Qin et al., AAAI 2020), the official ``FFA(gps=3, blocks=19)``: 4,455,913 parameters.

    The official pipeline feeds the hazy image normalised with mean (0.64, 0.6, 0.58) and std
    (0.14, 0.15, 0.152), adds that *normalised* input back as the global residual and regresses the
    clear image in [0, 1] with an L1 loss. This module takes [0, 1] input and performs the
    normalisation itself (``normalize=True``), so weights trained with the official code work
    unchanged; the output is already in [0, 1] space.

    Deviations from the official code:

    * The input normalisation lives inside the model instead of the data loader.
    * ``clear`` is clamped to [0, 1] in eval mode only (the official test script clamps too).
    * Out-of-place additions and ReLUs instead of in-place ones (same values; safe for
      ``torch.func`` and autograd).
    * Only ``groups=3`` is supported, as in the official code; any H x W works without padding
      (all convolutions are stride 1 with zero padding, attention pools globally).

    Args:
        blocks: basic blocks per group (paper: 19).
        dim: feature width (paper: 64; must be a multiple of 16 for the fusion attention).
        normalize: apply the official input normalisation inside the model.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` with ``clear`` N x 3 x H x W;
        ``transmission`` and ``airlight`` are None.

    Example:
        >>> net = FFANet().eval()
        >>> net(torch.rand(1, 3, 37, 29)).clear.shape
        torch.Size([1, 3, 37, 29])
    """

    gps = 3

    def __init__(self, blocks: int = 19, dim: int = 64, normalize: bool = True) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if dim < 16 or dim % 16:
            raise ValueError(f"dim must be a positive multiple of 16, got {dim}")
        self.dim, self.blocks, self.normalize = dim, blocks, normalize
        self.pre = nn.Sequential(_conv(3, dim))
        self.g1 = _Group(dim, blocks)
        self.g2 = _Group(dim, blocks)
        self.g3 = _Group(dim, blocks)
        # feature attention: channel weights for the 3 * dim concatenated group outputs
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim * self.gps, dim // 16, 1),
            nn.ReLU(),
            nn.Conv2d(dim // 16, dim * self.gps, 1),
            nn.Sigmoid(),
        )
        self.palayer = _PixelAttention(dim)
        self.post = nn.Sequential(_conv(dim, dim), _conv(dim, 3))

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        x1 = hazy
        if self.normalize:
            mean = hazy.new_tensor(HAZY_MEAN).view(1, 3, 1, 1)
            std = hazy.new_tensor(HAZY_STD).view(1, 3, 1, 1)
            x1 = (hazy - mean) / std
        x = self.pre(x1)
        res1 = self.g1(x)
        res2 = self.g2(res1)
        res3 = self.g3(res2)
        w = self.ca(torch.cat([res1, res2, res3], dim=1)).view(-1, self.gps, self.dim, 1, 1)
        out = w[:, 0] * res1 + w[:, 1] * res2 + w[:, 2] * res3
        clear = self.post(self.palayer(out)) + x1
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear)

    def extra_repr(self) -> str:
        return f"gps={self.gps}, blocks={self.blocks}, dim={self.dim}, normalize={self.normalize}"


def ffa_net(**kwargs) -> FFANet:
    return FFANet(**kwargs)
