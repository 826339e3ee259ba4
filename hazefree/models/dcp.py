"""Dark Channel Prior dehazing (He, Sun & Tang, CVPR 2009 / TPAMI 2011), with guided-filter refinement.

The classical baseline of both papers. No trainable parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..ops import _LUMA, _cpu_kernels, guided_filter, plain_cpu, rgb_to_gray
from ..physics import dark_channel, estimate_airlight, remove_haze
from .outputs import DehazeOutput


class DarkChannelPrior(nn.Module):
    """DCP: t = 1 - omega * dark(I / A) (He et al. eq. 12), refined by the guided filter, then eq. 22.

    Args:
        patch_size: dark-channel window (15 x 15 in He et al.).
        omega: fraction of haze removed (0.95) so that distant objects keep a trace of haze.
        t_min: lower bound of t in the recovery (0.1).
        radius: guided-filter radius for the refinement (He et al. 2013 use r = 60 with a gray guide
            in place of soft matting).
        eps: guided-filter regularisation (1e-4 as in He et al. 2013, Sec. 4.2 / Fig. 12).
        airlight: ``"dark_channel"`` (He et al.) or ``"max_luma"``.

    Shape:
        input N x 3 x H x W in [0, 1] -> :class:`DehazeOutput` with clear, transmission, airlight.
    """

    def __init__(
        self,
        patch_size: int = 15,
        omega: float = 0.95,
        t_min: float = 0.1,
        radius: int = 60,
        eps: float = 1e-4,
        airlight: str = "dark_channel",
    ) -> None:
        super().__init__()
        self.patch_size, self.omega, self.t_min = patch_size, omega, t_min
        self.radius, self.eps, self.airlight = radius, eps, airlight

    def forward(self, hazy: Tensor) -> DehazeOutput:
        a = estimate_airlight(hazy, self.airlight)
        if torch.is_grad_enabled() and hazy.requires_grad:
            coarse, t = self.transmission(hazy, a)
            return DehazeOutput(remove_haze(hazy, t, a, t_min=self.t_min), t, a, coarse)
        # Inference: the same operations in the same order (so the same values), with fewer
        # image-sized temporaries, which cost as much as the arithmetic in page faults; on the CPU
        # the elementwise steps run as single passes on the guided filter's kernels.
        kernels = _cpu_kernels() if plain_cpu(hazy, a) and hazy.dtype == a.dtype else None
        threads = torch.get_num_threads()
        if kernels is not None:
            image, a_rows = hazy.contiguous().numpy(), a.reshape(a.shape[0], -1).contiguous().numpy()
            luma = np.asarray(_LUMA, dtype=image.dtype)
            gray, scaled_min = (torch.from_numpy(v) for v in kernels.gray_and_scaled_min(image, luma, a_rows, threads))
        else:
            gray, scaled_min = rgb_to_gray(hazy), _scaled_min(hazy, a)
        coarse = dark_channel(scaled_min, self.patch_size).mul_(-self.omega).add_(1.0)
        t = guided_filter(gray, coarse, self.radius, self.eps).clamp_(0.0, 1.0)
        if kernels is not None:
            clear = torch.from_numpy(kernels.recover(image, t.numpy(), a_rows, self.t_min, threads))
        else:
            clear = remove_haze(hazy, t, a, t_min=self.t_min)
        return DehazeOutput(clear=clear, transmission=t, airlight=a, coarse_transmission=coarse)

    def transmission(self, hazy: Tensor, airlight: Tensor) -> tuple[Tensor, Tensor]:
        """Coarse (eq. 12) and refined transmission of ``hazy`` for a given airlight."""
        coarse = 1.0 - self.omega * dark_channel(hazy / airlight, self.patch_size)
        return coarse, guided_filter(rgb_to_gray(hazy), coarse, self.radius, self.eps).clamp(0.0, 1.0)

    @property
    def reach(self) -> int:
        """How far (in pixels) an output pixel depends on the input: the guided filter's two
        windows (2 r) plus the dark channel's patch, so a tile grown by this much is exact."""
        return 2 * self.radius + self.patch_size // 2

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, omega={self.omega}, t_min={self.t_min}, "
            f"radius={self.radius}, eps={self.eps}, airlight={self.airlight!r}"
        )


def _scaled_min(image: Tensor, a: Tensor) -> Tensor:
    """min over channels of image / a (N x 1 x H x W), one channel at a time: ``(image / a).amin(1)``
    without its N x 3 x H x W quotient."""
    out = image[:, :1] / a[:, :1]
    quotient = torch.empty_like(out)
    for c in range(1, image.shape[1]):
        torch.minimum(out, torch.div(image[:, c : c + 1], a[:, c : c + 1], out=quotient), out=out)
    return out


def dcp(**kwargs) -> DarkChannelPrior:
    return DarkChannelPrior(**kwargs)


__all__ = ["DarkChannelPrior", "dcp"]
