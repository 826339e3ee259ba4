"""AOD-Net (Li, Peng, Wang, Xu & Feng, "AOD-Net: All-in-One Dehazing Network", ICCV 2017).

AOD-Net folds the transmission t and the airlight A of the scattering model into one per-pixel
variable K(x) (paper eq. 4) and recovers the clear image as ``J = K * I - K + b`` with the constant
bias b = 1 (eq. 3). K is estimated by a five-layer "K-estimation module" of three filters each,
whose multi-scale features are joined by concatenation:

=========  =====================  ===========  =========
layer      input                  kernel       params
=========  =====================  ===========  =========
conv1      I (3)                  1 x 1        12
conv2      conv1 (3)              3 x 3        84
conv3      [conv1, conv2] (6)     5 x 5        453
conv4      [conv2, conv3] (6)     7 x 7        885
conv5      [conv1..conv4] (12)    3 x 3        327
=========  =====================  ===========  =========

Every convolution is followed by a ReLU (so K >= 0) and the output by a ReLU, as in the released
Caffe model (repository Boyiliee/AOD-Net, ``test/test_template.prototxt``): 1,761 trainable
parameters in total.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .outputs import DehazeOutput

__all__ = ["AODNet", "aod_net"]


class AODNet(nn.Module):
    """AOD-Net dehazer (Li et al., ICCV 2017): 1,761 trainable parameters, the published count.

    The network works at full resolution with zero-padded "same" convolutions, so any H x W is
    accepted without padding or cropping. Input and output are RGB in [0, 1], the released model's
    convention (``caffe.io.load_image`` without normalisation).

    Deviations from the released Caffe model:

    * ``clear`` is clamped to [0, 1] in eval mode only; in training mode only the model's own final
      ReLU applies (as in the Caffe prototxt, which has no upper clip), so gradients stay intact.
    * The paper initialises weights from "Gaussian random variables" without giving a standard
      deviation; PyTorch's default convolution initialisation is kept.
    * The training recipe (MSE, SGD with momentum 0.9, weight decay 1e-4, lr 1e-3, batch 8,
      gradient norm clipped to 0.1, whole 480 x 640 images) lives in
      ``hazefree.training.MODEL_DEFAULTS["aod-net"]``; our square crops stand in for whole images.

    Args:
        b: the constant bias b of ``J = K * I - K + b`` (paper: 1); not trainable.

    Shape:
        N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` with ``clear`` N x 3 x H x W;
        ``transmission`` and ``airlight`` are None (K replaces both).

    Example:
        >>> net = AODNet().eval()
        >>> net(torch.rand(1, 3, 37, 29)).clear.shape
        torch.Size([1, 3, 37, 29])
    """

    def __init__(self, b: float = 1.0) -> None:
        super().__init__()
        self.b = float(b)
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 3, 5, padding=2)
        self.conv4 = nn.Conv2d(6, 3, 7, padding=3)
        self.conv5 = nn.Conv2d(12, 3, 3, padding=1)

    def estimate_k(self, hazy: Tensor) -> Tensor:
        """The K-estimation module: N x 3 x H x W hazy image -> N x 3 x H x W map K >= 0."""
        x1 = F.relu(self.conv1(hazy))
        x2 = F.relu(self.conv2(x1))
        x3 = F.relu(self.conv3(torch.cat([x1, x2], dim=1)))
        x4 = F.relu(self.conv4(torch.cat([x2, x3], dim=1)))
        return F.relu(self.conv5(torch.cat([x1, x2, x3, x4], dim=1)))

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        k = self.estimate_k(hazy)
        clear = F.relu(k * hazy - k + self.b)
        if not self.training:
            clear = clear.clamp(0.0, 1.0)
        return DehazeOutput(clear=clear)

    def extra_repr(self) -> str:
        return f"b={self.b}"


def aod_net(**kwargs) -> AODNet:
    return AODNet(**kwargs)
