"""DehazeNet (Cai, Xu, Jia, Qing & Tao, "DehazeNet: An End-to-End System for Single Image Haze
Removal", IEEE TIP 25(11), 2016).

DehazeNet regresses the medium transmission t of a 16 x 16 hazy patch with four operations
(paper Sec. III-A, Table I):

==========================  ============================================  ========
operation                   layer                                         params
==========================  ============================================  ========
feature extraction          conv 5 x 5, 3 -> 16, valid (16 -> 12 px)     1,216
                            Maxout, 4 groups of 4 maps -> 4 maps          0
multi-scale mapping         conv 3 x 3 / 5 x 5 / 7 x 7, 4 -> 16 each,    5,360
                            "same", concatenated to 48 maps
local extremum              max pooling 7 x 7, stride 1 (12 -> 6 px)      0
non-linear regression       conv 6 x 6, 48 -> 1 (6 -> 1 px)               1,729
                            BReLU: min(max(x, 0), 1)                      0
==========================  ============================================  ========

8,305 trainable parameters, the count of the paper's architecture. The paper's network has no
other non-linearity: the multi-scale mapping is linear (eq. 5) and feeds the max pooling directly.

The dehazer wraps it as the paper and its MATLAB release (``run_cnn.m``) do: the patch network runs
fully convolutionally over the image to give a transmission map at image size, the map is refined
by the guided filter with the gray image as guide, the airlight A is estimated, and
``J = (I - A) / t + A``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import guided_filter, rgb_to_gray
from ..physics import estimate_airlight, remove_haze
from .outputs import DehazeOutput

__all__ = ["DehazeNet", "DehazeNetTransmission", "brelu", "dehazenet"]

PATCH = 16  # the patch size DehazeNet regresses one transmission value for
_PAD_BEFORE, _PAD_AFTER = 7, 8  # PATCH - 1 = 15 pixels lost by the valid layers, split 7 / 8


def brelu(x: Tensor, t_min: float = 0.0, t_max: float = 1.0) -> Tensor:
    """Bilateral ReLU (paper eq. 8): ``min(t_max, max(t_min, x))``; gradient 1 inside, 0 outside."""
    return x.clamp(t_min, t_max)


def _symmetric_pad(x: Tensor, before: int, after: int) -> Tensor:
    """Pad H and W by mirroring with the border pixel repeated (MATLAB/NumPy ``symmetric``).

    This is the padding of DehazeNet's releases (MATLAB ``imfilter(..., 'symmetric')``, the Caffe
    re-implementation's ``np.pad(..., 'symmetric')``). Inputs smaller than the padding fall back
    to replicate padding.
    """
    h, w = x.shape[-2:]
    if max(before, after) > min(h, w):
        return F.pad(x, (before, after, before, after), mode="replicate")
    for dim, n in ((-2, h), (-1, w)):
        head = x.narrow(dim, 0, before).flip(dim)
        tail = x.narrow(dim, n - after, after).flip(dim)
        x = torch.cat([head, x, tail], dim=dim)
    return x


class DehazeNetTransmission(nn.Module):
    """The DehazeNet CNN (paper Table I): hazy patches -> transmission in [0, 1].

    Applied to an h x w input it is the patch network slid over every 16 x 16 window: the output
    is (h - 15) x (w - 15), one t per window; a 16 x 16 patch gives a single value. The
    multi-scale convolutions zero-pad (they keep 12 x 12 on a patch, as in the paper).

    Args:
        input_shift: subtracted from the [0, 1] input before the first convolution (the MATLAB
            release feeds ``I - 0.5``).

    Shape:
        N x 3 x h x w (h, w >= 16) -> N x 1 x (h - 15) x (w - 15).
    """

    def __init__(self, input_shift: float = 0.5) -> None:
        super().__init__()
        self.input_shift = float(input_shift)
        self.conv1 = nn.Conv2d(3, 16, 5)  # feature extraction
        self.maxout_groups = 4
        self.conv3x3 = nn.Conv2d(4, 16, 3, padding=1)  # multi-scale mapping
        self.conv5x5 = nn.Conv2d(4, 16, 5, padding=2)
        self.conv7x7 = nn.Conv2d(4, 16, 7, padding=3)
        self.pool = nn.MaxPool2d(7, stride=1)  # local extremum
        self.regress = nn.Conv2d(48, 1, 6)  # non-linear regression (followed by BReLU)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 0.001) and zero biases (paper, Caffe fillers); regression bias 0.5.

        The paper regresses t directly with an MSE loss, where t ~ 0 at the start is harmless.
        Trained end to end through ``J = (I - A) / max(t, t_min) + A``, a start at t ~ 0 would sit
        below t_min (and on BReLU's flat side) with zero gradient everywhere, so the regression
        bias starts at 0.5, the middle of BReLU's linear range.
        """
        if self.regress.weight.is_meta:
            return  # nothing to initialise (parameter counting); normal_ costs seconds on first meta use
        for conv in (self.conv1, self.conv3x3, self.conv5x5, self.conv7x7, self.regress):
            nn.init.normal_(conv.weight, mean=0.0, std=0.001)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.regress.bias, 0.5)

    def maxout(self, x: Tensor) -> Tensor:
        """Maxout over groups of consecutive maps (16 -> 4; maps 4i..4i+3 -> map i, as released)."""
        n, c, h, w = x.shape
        return x.view(n, self.maxout_groups, c // self.maxout_groups, h, w).amax(dim=2)

    def forward(self, patches: Tensor) -> Tensor:
        if patches.dim() != 4 or patches.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(patches.shape)}")
        if min(patches.shape[-2:]) < PATCH:
            raise ValueError(f"DehazeNet needs inputs of at least {PATCH} x {PATCH}, got {tuple(patches.shape)}")
        f1 = self.maxout(self.conv1(patches - self.input_shift))
        f2 = torch.cat([self.conv3x3(f1), self.conv5x5(f1), self.conv7x7(f1)], dim=1)
        f3 = self.pool(f2)
        return brelu(self.regress(f3))

    def extra_repr(self) -> str:
        return f"input_shift={self.input_shift}, maxout_groups={self.maxout_groups}"


class DehazeNet(nn.Module):
    """DehazeNet dehazer (Cai et al., TIP 2016): 8,305 trainable parameters, the paper's count.

    Pipeline (paper Sec. III and the MATLAB release ``run_cnn.m``):

    1. The image is padded by 7 / 8 pixels (symmetric mirror, as in the releases) and the patch
       network :class:`DehazeNetTransmission` runs fully convolutionally: pixel (y, x) receives the
       transmission of the 16 x 16 window around it, giving a coarse map at image size.
    2. The map is refined by the guided filter (:func:`hazefree.ops.guided_filter`) with the gray
       image as guide, r = 50, eps = 1e-3 (the MATLAB release's values), and clipped to [0, 1].
    3. A is estimated by the dark channel prior (:func:`hazefree.physics.estimate_airlight`,
       ``"dark_channel"``), without gradient (a statistic of the input).
    4. ``J = (I - A) / max(t, t_min) + A`` (:func:`hazefree.physics.remove_haze`), clamped to
       [0, 1] in eval mode only.

    Why 8,305 and not the 8,561 of the released Caffe prototxt: that model (repository
    zlinker/DehazeNet, ``DehazeNet.prototxt`` + ``DehazeNet.caffemodel``; its readme calls it a
    re-implementation) differs from the paper's Table I in four layers:

    * conv1 has 20 filters with Maxout over groups of 5 (1,520 params instead of 1,216), with a
      ReLU before the Maxout;
    * the multi-scale mapping has a fourth, 1 x 1 branch (+80 params, 64 maps instead of 48),
      followed by a ReLU;
    * the local extremum pools 8 x 8 (12 -> 5 px) instead of 7 x 7 (12 -> 6 px);
    * the regression is an inner product over 64 x 5 x 5 (1,601 params) instead of a 6 x 6
      convolution over 48 maps (1,729), followed by a plain ReLU instead of BReLU.

    1,520 + 80 + 592 + 1,616 + 3,152 + 1,601 = 8,561. The paper is the authors' specification of
    the method, BReLU included, and the authors' MATLAB release (``run_cnn.m`` with ``dehaze.mat``)
    runs the paper's layers too: Maxout over 4 groups of 4 conv1 maps, three multi-scale branches of
    16 maps, a 7 x 7 max filter, BReLU. We therefore build the paper's network; the prototxt is a
    re-implementation, and its weights do not fit this module.

    Deviations from the paper / MATLAB release, all deliberate:

    * Full-image application is fully convolutional with valid layers on a padded image (like the
      Caffe re-implementation); the MATLAB release instead pads every layer symmetrically to "same"
      size. Interior pixels differ from a literal patch-by-patch evaluation only in that the
      multi-scale convolutions see neighbouring features instead of a 16 x 16 patch's zero padding.
    * Airlight: the DCP estimate (He et al.) of this library; the MATLAB release takes the
      brightest (gray) pixel among the 1 % of lowest transmission.
    * ``t_min = 0.1`` bounds 1 / t (as the Caffe re-implementation does); the MATLAB release
      divides by the refined t unbounded.
    * Input convention: [0, 1] RGB, shifted by -0.5 inside (``input_shift``), as the MATLAB
      release feeds its network; the Caffe re-implementation feeds BGR - 0.2.
    * Training: the paper fits t on synthetic 16 x 16 patches (constant t, A = 1) with an MSE on t.
      Our trainer is supervised on clear images, so the loss (MSE) is on J, back-propagated through
      the scattering model and the guided filter; ``MODEL_DEFAULTS["dehazenet"]`` keeps the paper's
      SGD, lr 0.005 halved every 100k iterations, batch 128 and 16 x 16 crops. This is also why the
      regression bias starts at 0.5 (see :meth:`DehazeNetTransmission.reset_parameters`).

    Args:
        radius: guided-filter radius in pixels (MATLAB release: 50).
        eps: guided-filter regularisation (MATLAB release: 1e-3).
        t_min: lower bound of t in the recovery.
        airlight: ``"dark_channel"`` (default) or ``"max_luma"``.
        input_shift: subtracted from the [0, 1] input before the network (0.5).

    Shape:
        N x 3 x H x W in [0, 1] (any H, W >= 1) -> :class:`DehazeOutput` with ``clear``
        N x 3 x H x W, ``transmission`` (refined, N x 1 x H x W in [0, 1]), ``airlight``
        (N x 3 x 1 x 1) and ``coarse_transmission`` (the BReLU output, N x 1 x H x W in [0, 1]).

    Example:
        >>> net = DehazeNet().eval()
        >>> out = net(torch.rand(1, 3, 37, 29))
        >>> out.clear.shape, out.transmission.shape
        (torch.Size([1, 3, 37, 29]), torch.Size([1, 1, 37, 29]))
    """

    def __init__(
        self,
        radius: int = 50,
        eps: float = 1e-3,
        t_min: float = 0.1,
        airlight: str = "dark_channel",
        input_shift: float = 0.5,
    ) -> None:
        super().__init__()
        self.net = DehazeNetTransmission(input_shift=input_shift)
        self.radius, self.eps, self.t_min, self.airlight = radius, eps, t_min, airlight

    def coarse_transmission(self, hazy: Tensor) -> Tensor:
        """BReLU transmission of the 16 x 16 window around every pixel: N x 1 x H x W in [0, 1]."""
        return self.net(_symmetric_pad(hazy, _PAD_BEFORE, _PAD_AFTER))

    def forward(self, hazy: Tensor) -> DehazeOutput:
        if hazy.dim() != 4 or hazy.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(hazy.shape)}")
        with torch.no_grad():  # A is a statistic of the input; no parameter influences it
            a = estimate_airlight(hazy, self.airlight)
        coarse = self.coarse_transmission(hazy)
        t = guided_filter(rgb_to_gray(hazy), coarse, self.radius, self.eps).clamp(0.0, 1.0)
        clear = remove_haze(hazy, t, a, t_min=self.t_min, clamp=not self.training)
        return DehazeOutput(clear=clear, transmission=t, airlight=a, coarse_transmission=coarse)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}, t_min={self.t_min}, airlight={self.airlight!r}"


def dehazenet(**kwargs) -> DehazeNet:
    return DehazeNet(**kwargs)
