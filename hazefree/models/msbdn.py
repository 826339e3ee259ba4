"""MSBDN-DFF (Dong et al., "Multi-Scale Boosted Dehazing Network with Dense Feature Fusion", CVPR 2020).

A U-Net-like hazy-to-clear network with four stride-2 scales (widths 16, 32, 64, 128, 256):

* **Encoder**: reflection-padded convolutions and residual groups (three residual blocks each);
  after every down-sampling a *dense feature fusion* (DFF) module refines the new feature with
  back-projection against every earlier, higher-resolution encoder feature (paper eq. 9-10).
* **Bottleneck**: 18 residual blocks at 1/16 resolution, applied to twice the feature and with
  the feature subtracted again (``R(2f) + f``), as in the official code.
* **Boosted decoder**: at every scale a Strengthen-Operate-Subtract (SOS) module,
  ``j = G(i + up(j_prev)) - up(j_prev)`` (paper eq. 5), followed by a decoder DFF module fusing all
  earlier, lower-resolution decoder features.

The layer shapes follow the official ``Net`` (repository BookerDeWitt/MSBDN-DFF, networks
``MSBDN-DFF-v1-1.py`` and ``base_networks.py``, DFF mode ``iter2``); attribute names mirror it, so
its state dict keys match ours. Trainable parameters: 31,353,061.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from .outputs import DehazeOutput

__all__ = ["MSBDN", "msbdn"]


class _ReflectConv(nn.Module):
    """Reflection padding of ``kernel // 2`` followed by a convolution (official ``ConvLayer``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(F.pad(x, (self.pad,) * 4, mode="reflect"))


class _UpConv(nn.Module):
    """3 x 3 stride-2 transposed convolution without padding (official ``UpsampleConvLayer``).

    Maps H to 2H + 1; the caller resizes to the skip feature's size.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(c_in, c_out, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(x)


class _ResidualBlock(nn.Module):
    """conv 3x3 -> PReLU (one shared slope) -> conv 3x3, scaled by 0.1, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ReflectConv(channels, channels, 3)
        self.conv2 = _ReflectConv(channels, channels, 3)
        self.relu = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.1 * self.conv2(self.relu(self.conv1(x)))


def _residual_group(channels: int, blocks: int = 3) -> nn.Sequential:
    return nn.Sequential(*[_ResidualBlock(channels) for _ in range(blocks)])


class _Down(nn.Module):
    """4 x 4 stride-2 convolution + PReLU: halves H and W exactly (official ``ConvBlock``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 4, 2, 1)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class _Up(nn.Module):
    """4 x 4 stride-2 transposed convolution + PReLU: doubles H and W (official ``DeconvBlock``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.deconv(x))


class _BackProjection(nn.Module):
    """Shared step of the DFF modules: for the earlier feature ``k`` levels away,
    ``f = f + back^k(to^k(f) - earlier)``, where ``to`` carries a feature one level towards the
    earlier ones and ``back`` returns it (back-projection of the error, Dong et al. 2020, DFF module)."""

    levels: int

    def paths(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        """(``to``, ``back``) module lists, one module per level."""
        raise NotImplementedError

    def forward(self, ft: Tensor, earlier: list[Tensor]) -> Tensor:
        if len(earlier) != self.levels:
            raise ValueError(f"expected {self.levels} earlier features, got {len(earlier)}")
        to, back = self.paths()
        fused = ft
        for i, feature in enumerate(earlier):
            depth = self.levels - i
            err = fused
            for j in range(depth):
                err = to[j](err)
            err = err - feature
            for j in reversed(range(depth)):
                err = back[j](err)
            fused = fused + err
        return fused


class _EncoderFusion(_BackProjection):
    """Encoder DFF module (official ``Encoder_MDCBlock1``, mode ``iter2``).

    Refines a new low-resolution feature ``f`` (``channels`` wide) with the ``levels`` earlier,
    higher-resolution encoder features, oldest (highest resolution) first. For the earlier feature
    ``k`` levels up: ``f = f + down^k(up^k(f) - earlier)``, where ``up`` halves the width and
    doubles the size per level and ``down`` undoes it (back-projection of the error).
    """

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.up_convs = nn.ModuleList(_Up(channels >> i, channels >> (i + 1)) for i in range(levels))
        self.down_convs = nn.ModuleList(_Down(channels >> (i + 1), channels >> i) for i in range(levels))

    def paths(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        return self.up_convs, self.down_convs


class _DecoderFusion(_BackProjection):
    """Decoder DFF module (official ``Decoder_MDCBlock1``, mode ``iter2``).

    The mirror image of :class:`_EncoderFusion`: refines a new high-resolution decoder feature with
    the earlier, lower-resolution decoder features, oldest (lowest resolution) first, projecting
    down with strided convolutions and back up with transposed ones.
    """

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.down_convs = nn.ModuleList(_Down(channels << i, channels << (i + 1)) for i in range(levels))
        self.up_convs = nn.ModuleList(_Up(channels << (i + 1), channels << i) for i in range(levels))

    def paths(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        return self.down_convs, self.up_convs


class MSBDN(nn.Module):
    """MSBDN-DFF dehazer (Dong et al., CVPR 2020), the official ``Net`` with 31,353,061 parameters.

    Maps a hazy image in [0, 1] directly to the clear image in [0, 1] (the official data pipeline
    feeds [0, 1] RGB without normalisation and regresses the clear image with an MSE loss), so no
    input or output conversion is needed.

    Deviations from the official code:

    * Any H x W: the input is padded at the bottom/right to a multiple of 16 and at least 32
      (reflect, or replicate when the image is too small to reflect) and the output cropped back;
      the official model needs sides that are multiples of 16 for its DFF modules and at least 32
      for the reflection padding at 1/16 resolution, and raises otherwise.
    * ``clear`` is clamped to [0, 1] in eval mode only (the official test script clamps too);
      training sees the raw output so every pixel keeps its gradient.
    * ``F.interpolate(..., align_corners=False)`` replaces the deprecated ``F.upsample`` (the same
      operation in PyTorch >= 0.4).

    Args:
        res_blocks: residual blocks in the 1/16-resolution bottleneck (paper: 18).

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` with ``clear`` N x 3 x H x W;
        ``transmission`` and ``airlight`` are None.

    Example:
        >>> net = MSBDN().eval()
        >>> net(torch.rand(1, 3, 37, 29)).clear.shape
        torch.Size([1, 3, 37, 29])
    """

    multiple = 16
    min_size = 32

    def __init__(self, res_blocks: int = 18) -> None:
        super().__init__()
        if res_blocks < 1:
            raise ValueError(f"res_blocks must be >= 1, got {res_blocks}")
        self.conv_input = _ReflectConv(3, 16, 11)
        self.dense0 = _residual_group(16)
        # encoder: stride-2 conv, DFF with all earlier encoder features, residual group
        self.conv2x = _ReflectConv(16, 32, 3, stride=2)
        self.fusion1 = _EncoderFusion(32, 1)
        self.dense1 = _residual_group(32)
        self.conv4x = _ReflectConv(32, 64, 3, stride=2)
        self.fusion2 = _EncoderFusion(64, 2)
        self.dense2 = _residual_group(64)
        self.conv8x = _ReflectConv(64, 128, 3, stride=2)
        self.fusion3 = _EncoderFusion(128, 3)
        self.dense3 = _residual_group(128)
        self.conv16x = _ReflectConv(128, 256, 3, stride=2)
        self.fusion4 = _EncoderFusion(256, 4)
        self.dehaze = nn.Sequential(OrderedDict((f"res{i}", _ResidualBlock(256)) for i in range(res_blocks)))
        # boosted decoder: upsample, SOS residual group, DFF with all earlier decoder features
        self.convd16x = _UpConv(256, 128)
        self.dense_4 = _residual_group(128)
        self.fusion_4 = _DecoderFusion(128, 1)
        self.convd8x = _UpConv(128, 64)
        self.dense_3 = _residual_group(64)
        self.fusion_3 = _DecoderFusion(64, 2)
        self.convd4x = _UpConv(64, 32)
        self.dense_2 = _residual_group(32)
        self.fusion_2 = _DecoderFusion(32, 3)
        self.convd2x = _UpConv(32, 16)
        self.dense_1 = _residual_group(16)
        self.fusion_1 = _DecoderFusion(16, 4)
        self.conv_output = _ReflectConv(16, 3, 3)

    @staticmethod
    def _sos(up: nn.Module, group: nn.Module, coarse: Tensor, skip: Tensor) -> Tensor:
        """Strengthen-Operate-Subtract: ``G(skip + up(coarse)) - up(coarse)`` with G = group + identity."""
        prev = F.interpolate(up(coarse), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        strengthened = skip + prev
        return group(strengthened) + strengthened - prev

    def _net(self, x: Tensor) -> Tensor:
        res1x = self.conv_input(x)
        enc = [res1x]
        x1 = self.dense0(res1x) + res1x

        res2x = self.fusion1(self.conv2x(x1), enc)
        enc.append(res2x)
        res2x = self.dense1(res2x) + res2x

        res4x = self.fusion2(self.conv4x(res2x), enc)
        enc.append(res4x)
        res4x = self.dense2(res4x) + res4x

        res8x = self.fusion3(self.conv8x(res4x), enc)
        enc.append(res8x)
        res8x = self.dense3(res8x) + res8x

        res16x = self.fusion4(self.conv16x(res8x), enc)
        res16x = self.dehaze(2 * res16x) + res16x  # R(2f) + 2f - f

        dec = [res16x]
        d8 = self.fusion_4(self._sos(self.convd16x, self.dense_4, res16x, res8x), dec)
        dec.append(d8)
        d4 = self.fusion_3(self._sos(self.convd8x, self.dense_3, d8, res4x), dec)
        dec.append(d4)
        d2 = self.fusion_2(self._sos(self.convd4x, self.dense_2, d4, res2x), dec)
        dec.append(d2)
        d1 = self.fusion_1(self._sos(self.convd2x, self.dense_1, d2, x1), dec)
        return self.conv_output(d1)

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        h, w = hazy.shape[-2:]
        ph = max(self.min_size, -(-h // self.multiple) * self.multiple) - h
        pw = max(self.min_size, -(-w // self.multiple) * self.multiple) - w
        x = hazy
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        clear = self._net(x)[..., :h, :w]
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear)

    def extra_repr(self) -> str:
        return f"res_blocks={len(self.dehaze)}"


def msbdn(**kwargs) -> MSBDN:
    return MSBDN(**kwargs)
