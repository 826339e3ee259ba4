"""GridDehazeNet (Liu, Ma, Shi & Chen, "GridDehazeNet: Attention-Based Multi-Scale Network for Image
Dehazing", ICCV 2019).

A hazy-to-clear network in three modules:

* **Pre-processing**: a 3 x 3 convolution (3 -> 16 maps) and a residual dense block (RDB).
* **Backbone**: a grid of 3 rows (scales 1, 1/2, 1/4 with 16, 32, 64 maps) x 6 columns. Along a
  row, features pass through RDBs (4 dense layers of growth 16, a 1 x 1 fusion and a residual);
  the first half of the columns also sends them down a row (stride-2 conv + conv doubling the
  maps), the second half up a row (stride-2 transposed conv + conv halving the maps). Where a
  horizontal and a vertical stream meet, they are fused by channel-wise attention: two trainable
  weights per channel, ``a * horizontal + b * vertical`` (paper eq. 1).
* **Post-processing**: an RDB and a 3 x 3 convolution back to RGB, followed by a ReLU.

The layer shapes follow the official ``GridDehazeNet(height=3, width=6, num_dense_layer=4,
growth_rate=16)`` (repository proteus1991/GridDehazeNet, ``model.py`` and
``residual_dense_block.py``; the class is called ``GateHazeNet`` there). Attribute names mirror
it, so its state dict keys match ours (strip the ``module.`` prefix of its DataParallel
checkpoints). Trainable parameters: 958,051 (the official ``train.py`` prints the same total); it
includes the whole 3 x 6 x 2 x 64 attention tensor, of which only the entries of fused nodes and
each row's channels are used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .outputs import DehazeOutput

__all__ = ["GridDehazeNet", "griddehazenet"]


class _DenseLayer(nn.Module):
    """3 x 3 conv -> ReLU, concatenated to its input (official ``MakeDense``)."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, F.relu(self.conv(x))], dim=1)


class _RDB(nn.Module):
    """Residual dense block: dense layers, 1 x 1 fusion back to ``channels``, residual."""

    def __init__(self, channels: int, layers: int, growth: int) -> None:
        super().__init__()
        self.residual_dense_layers = nn.Sequential(
            *[_DenseLayer(channels + i * growth, growth) for i in range(layers)]
        )
        self.conv_1x1 = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_1x1(self.residual_dense_layers(x)) + x


class _Down(nn.Module):
    """3 x 3 stride-s conv -> ReLU -> 3 x 3 conv to s x the maps -> ReLU (official ``DownSample``)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(channels, stride * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class _Up(nn.Module):
    """3 x 3 stride-s transposed conv -> ReLU -> 3 x 3 conv to 1/s of the maps -> ReLU (``UpSample``)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, 3, stride=stride, padding=1)
        self.conv = nn.Conv2d(channels, channels // stride, 3, padding=1)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        return F.relu(self.conv(F.relu(self.deconv(x, output_size=size))))


class GridDehazeNet(nn.Module):
    """GridDehazeNet dehazer (Liu et al., ICCV 2019), official default: 958,051 trainable parameters.

    The official data loaders feed the hazy image normalised to [-1, 1] (``Normalize(0.5, 0.5)``)
    and the network regresses the clear image in [0, 1] directly (final ReLU, no global residual).
    This module takes [0, 1] input and does the normalisation itself, so weights trained with the
    official code work unchanged.

    Deviations from the official code:

    * The input normalisation lives inside the model instead of the data loader.
    * Any H x W: the input is padded at the bottom/right (reflect; replicate when the image is
      smaller than the padding) to a multiple of ``stride ** (height - 1)`` (4) and the output is
      cropped back, so every scale is exactly half the one above. The official forward also runs on
      other sizes (its transposed convolutions take the target size), but then the coarse rows see
      ceil-rounded grids; with ``pad_multiple=1`` this module reproduces that behaviour exactly.
    * ``clear`` is clamped to [0, 1] in eval mode only (the official test script saves the raw,
      ReLU-only output, which ``save_image`` clips).
    * Loss: the paper and the official ``train.py`` use smooth L1 + 0.04 x a VGG16 perceptual loss
      (relu1_2, relu2_2, relu3_3 features, ImageNet weights). Pretrained VGG16 weights cannot be
      downloaded here, so ``MODEL_DEFAULTS["griddehazenet"]`` trains with smooth L1 alone.
    * Training crops: the official loader crops 240 x 240 without flips or rescaling; our sampler
      also flips horizontally.

    Args:
        height: rows of the grid (scales); official 3.
        width: columns of the grid; official 6.
        depth_rate: maps of the first row (doubled per row by ``stride``); official 16.
        stride: down-sampling factor between rows; official 2.
        num_dense_layer: dense layers per RDB; official 4.
        growth_rate: maps added per dense layer; official 16.
        attention: train the channel-wise fusion weights (official default True; with False they
            stay 1, the paper's "without attention" ablation, and are not counted as trainable).
        normalize: map the [0, 1] input to [-1, 1] inside the model (as the official loader does).
        pad_multiple: pad H and W to a multiple of this; ``None`` uses ``stride ** (height - 1)``.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` with ``clear`` N x 3 x H x W;
        ``transmission`` and ``airlight`` are None.

    Example:
        >>> net = GridDehazeNet().eval()
        >>> net(torch.rand(1, 3, 37, 29)).clear.shape
        torch.Size([1, 3, 37, 29])
    """

    def __init__(
        self,
        height: int = 3,
        width: int = 6,
        depth_rate: int = 16,
        stride: int = 2,
        num_dense_layer: int = 4,
        growth_rate: int = 16,
        attention: bool = True,
        normalize: bool = True,
        pad_multiple: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("height", height, 1), ("width", width, 2), ("depth_rate", depth_rate, 1), ("stride", stride, 2),
            ("num_dense_layer", num_dense_layer, 1), ("growth_rate", growth_rate, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if pad_multiple is not None and (not isinstance(pad_multiple, int) or pad_multiple < 1):
            raise ValueError(f"pad_multiple must be a positive int or None, got {pad_multiple!r}")
        self.height, self.width, self.stride, self.depth_rate = height, width, stride, depth_rate
        self.normalize = normalize
        self.pad_multiple = stride ** (height - 1) if pad_multiple is None else pad_multiple
        widest = depth_rate * stride ** (height - 1)
        # a (horizontal) and b (vertical) fusion weight per node and channel, all ones at the start
        self.coefficient = nn.Parameter(torch.ones(height, width, 2, widest), requires_grad=attention)
        self.conv_in = nn.Conv2d(3, depth_rate, 3, padding=1)
        self.conv_out = nn.Conv2d(depth_rate, 3, 3, padding=1)
        self.rdb_in = _RDB(depth_rate, num_dense_layer, growth_rate)
        self.rdb_out = _RDB(depth_rate, num_dense_layer, growth_rate)
        half = width // 2
        self.rdb_module = nn.ModuleDict()
        self.downsample_module = nn.ModuleDict()
        self.upsample_module = nn.ModuleDict()
        for i in range(height):
            channels = self._channels(i)
            for j in range(width - 1):
                self.rdb_module[f"{i}_{j}"] = _RDB(channels, num_dense_layer, growth_rate)
            if i < height - 1:
                for j in range(half):
                    self.downsample_module[f"{i}_{j}"] = _Down(channels, stride)
                for j in range(half, width):  # up from row i + 1 into row i
                    self.upsample_module[f"{i}_{j}"] = _Up(self._channels(i + 1), stride)

    def _channels(self, row: int) -> int:
        return self.depth_rate * self.stride**row

    def _fuse(self, i: int, j: int, horizontal: Tensor, vertical: Tensor) -> Tensor:
        c = self._channels(i)
        a = self.coefficient[i, j, 0, :c].view(1, c, 1, 1)
        b = self.coefficient[i, j, 1, :c].view(1, c, 1, 1)
        return a * horizontal + b * vertical

    def _grid(self, x: Tensor) -> Tensor:
        rows, cols, half = self.height, self.width, self.width // 2
        rdb, down, up = self.rdb_module, self.downsample_module, self.upsample_module
        node: list[list[Tensor | None]] = [[None] * cols for _ in range(rows)]
        node[0][0] = self.rdb_in(self.conv_in(x))
        # left half: rightwards along each row, downwards between rows
        for j in range(1, half):
            node[0][j] = rdb[f"0_{j - 1}"](node[0][j - 1])
        for i in range(1, rows):
            node[i][0] = down[f"{i - 1}_0"](node[i - 1][0])
            for j in range(1, half):
                horizontal = rdb[f"{i}_{j - 1}"](node[i][j - 1])
                node[i][j] = self._fuse(i, j, horizontal, down[f"{i - 1}_{j}"](node[i - 1][j]))
        # right half: the coarsest row continues alone, the others fuse with the row below
        for j in range(half, cols):
            node[rows - 1][j] = rdb[f"{rows - 1}_{j - 1}"](node[rows - 1][j - 1])
        for i in range(rows - 2, -1, -1):
            for j in range(half, cols):
                left = node[i][j - 1]
                upward = up[f"{i}_{j}"](node[i + 1][j], left.shape[-2:])
                node[i][j] = self._fuse(i, j, rdb[f"{i}_{j - 1}"](left), upward)
        return F.relu(self.conv_out(self.rdb_out(node[0][cols - 1])))

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        h, w = hazy.shape[-2:]
        x = hazy * 2.0 - 1.0 if self.normalize else hazy
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect padding needs pad < size; replicate covers tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        clear = self._grid(x)[..., :h, :w]
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear)

    def extra_repr(self) -> str:
        return (
            f"height={self.height}, width={self.width}, depth_rate={self.depth_rate}, stride={self.stride}, "
            f"normalize={self.normalize}, pad_multiple={self.pad_multiple}"
        )


def griddehazenet(**kwargs) -> GridDehazeNet:
    return GridDehazeNet(**kwargs)
