"""Box filter and the differentiable guided filter.

The guided filter (He et al., "Guided Image Filtering", TPAMI 2013) is the refinement layer of
Guided-Pix2Pix (Ma et al., JSTARS 2021, Sec. III-C/D). This module is its single implementation:
``guided_filter`` is the functional op, ``GuidedFilter`` / ``FastGuidedFilter`` only hold settings.

Conventions:
    * Tensors are N x C x H x W. The guide has 1 channel (gray guide, the paper's) or 3 channels
      (colour guide, He et al. Sec. 3.5, with a 3 x 3 covariance per window); ``src`` may have any
      number of channels, each filtered with the same guide.
    * Windows are (2r+1) x (2r+1) squares clipped at the image border, and every mean is normalised
      by the true number of pixels in the clipped window, so any radius works, also r >= H or W.
    * Box sums use cumulative sums (torch) or running sums (CPU kernels), so the cost per pixel
      does not depend on r.

Implementations: on CPU tensors the filter and its Alg. 2 backward run on fused kernels
(:mod:`hazefree._guided_filter_cpu`, numba, compiled on first use and cached on disk), which read
float32 or float64 as given and keep every window statistic in float64; elsewhere (CUDA, MPS), and
when the guide needs a gradient, the torch code below runs. The two agree to ~1e-15 (tests).

Precision: with eps as small as the paper's 1e-8, ``var_I = mean(I*I) - mean(I)^2`` must be exact
to far better than eps. In float32 the cancellation leaves errors of ~1e-7 on bright plateaus,
larger than eps, and ``a = cov / (var + eps)`` turns them into noise, negative variances and
Inf/NaN. All window statistics are therefore computed in float64 (cumulative sums included, which
also keeps long sums exact on 4K images); the result is returned in the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "box_filter",
    "guided_filter",
    "fast_guided_filter",
    "guided_filter_coefficients",
    "GuidedFilter",
    "FastGuidedFilter",
    "rgb_to_gray",
]

_LUMA = (0.299, 0.587, 0.114)


def rgb_to_gray(image: Tensor) -> Tensor:
    """ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B of an N x 3 x H x W tensor (N x 1 x H x W)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"rgb_to_gray expects N x 3 x H x W, got shape {tuple(image.shape)}")
    w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    if torch.is_grad_enabled() and image.requires_grad:
        return (image * w).sum(dim=1, keepdim=True)
    # the same sum, (R w_R + G w_G) + B w_B, accumulated in place: two planes instead of three
    y = image[:, :1] * w[:, :1]
    term = torch.empty_like(y)
    for c in (1, 2):
        y += torch.mul(image[:, c : c + 1], w[:, c : c + 1], out=term)
    return y


def _window_bounds(n: int, r: int, device: torch.device) -> tuple[Tensor, Tensor]:
    idx = torch.arange(n, device=device)
    return (idx - r).clamp(min=0), (idx + r + 1).clamp(max=n)


def _window_sum_1d(x: Tensor, r: int, dim: int) -> Tensor:
    n = x.shape[dim]
    r = min(r, n)  # a window wider than the axis covers all of it
    csum = torch.cumsum(x, dim=dim)
    # p = [0] * (r + 1) + csum + [csum[-1]] * r, so that the clipped window sum at i is
    # p[i + 2r + 1] - p[i]: two shifted slices, no gather (a gather dominated the filter's time)
    head, tail = list(x.shape), list(x.shape)
    head[dim], tail[dim] = r + 1, r
    p = torch.cat([x.new_zeros(head), csum, csum.narrow(dim, n - 1, 1).expand(tail)], dim)
    return p.narrow(dim, 2 * r + 1, n) - p.narrow(dim, 0, n)


def _window_count(h: int, w: int, r: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Number of pixels in each clipped (2r+1)^2 window, H x W."""
    lo_h, hi_h = _window_bounds(h, r, device)
    lo_w, hi_w = _window_bounds(w, r, device)
    return torch.outer((hi_h - lo_h).to(dtype), (hi_w - lo_w).to(dtype))


def _box_sum(x: Tensor, r: int) -> Tensor:
    return _window_sum_1d(_window_sum_1d(x, r, -2), r, -1)


def box_filter(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r+1) x (2r+1) windows clipped at the border, in O(1) per pixel.

    Args:
        x: N x C x H x W tensor.
        radius: window radius r >= 0; any size, also larger than the image.

    Returns:
        Tensor of the same shape and dtype: each pixel is the mean of the pixels of its clipped
        window (normalised by their true count, so a constant image stays constant).

    Example:
        >>> box_filter(torch.ones(1, 1, 4, 5), radius=10).unique()
        tensor([1.])
    """
    _check_radius(radius)
    if x.dim() != 4:
        raise ValueError(f"box_filter expects N x C x H x W, got shape {tuple(x.shape)}")
    count = _window_count(x.shape[-2], x.shape[-1], radius, x.dtype, x.device)
    return _box_sum(x, radius) / count


def _box_mean_adjoint(g: Tensor, radius: int, count: Tensor) -> Tensor:
    """Adjoint of the clipped box mean: (f^T g)_j = sum over windows i containing j of g_i / |w_i|.

    With constant |w| this is the mean filter itself (the paper's eq. 22); at clipped borders the
    window sizes differ, and this form keeps the backward pass exact there.
    """
    return _box_sum(g / count, radius)


def _check_radius(radius: int) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")


def _check_inputs(guide: Tensor, src: Tensor, radius: int, eps: float) -> None:
    _check_radius(radius)
    if not isinstance(guide, Tensor) or not isinstance(src, Tensor):
        raise TypeError("guide and src must be torch tensors")
    if guide.dim() != 4 or src.dim() != 4:
        raise ValueError(
            f"guide and src must be N x C x H x W, got {tuple(guide.shape)} and {tuple(src.shape)}"
        )
    if guide.shape[1] not in (1, 3):
        raise ValueError(f"guide must have 1 (gray) or 3 (colour) channels, got {guide.shape[1]}")
    if guide.shape[0] != src.shape[0] or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(
            f"guide {tuple(guide.shape)} and src {tuple(src.shape)} differ in batch or spatial size"
        )
    if not (guide.is_floating_point() and src.is_floating_point()):
        raise TypeError("guide and src must be floating-point tensors")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")


class _GrayStats(NamedTuple):
    mean_i: Tensor
    inv_var: Tensor  # 1 / (var_I + eps), N x 1 x H x W


class _ColourStats(NamedTuple):
    mean_i: Tensor  # N x 3 x H x W
    inv_sigma: Tensor  # (Sigma + eps U)^-1 as N x 3 x 3 x H x W (symmetric)


def _gray_stats(guide: Tensor, radius: int, eps: float, count: Tensor) -> _GrayStats:
    mean_i = _box_sum(guide, radius) / count
    var_i = (_box_sum(guide * guide, radius) / count - mean_i * mean_i).clamp(min=0.0)
    return _GrayStats(mean_i, 1.0 / (var_i + eps))


def _inverse_sym3(s: Tensor) -> Tensor:
    """Inverse of symmetric 3 x 3 matrices stored as N x 3 x 3 x H x W, by the adjugate."""
    a, b, c = s[:, 0, 0], s[:, 0, 1], s[:, 0, 2]
    d, e, f = s[:, 1, 1], s[:, 1, 2], s[:, 2, 2]
    c00, c01, c02 = d * f - e * e, c * e - b * f, b * e - c * d
    c11, c12, c22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * c00 + b * c01 + c * c02
    rows = [[c00, c01, c02], [c01, c11, c12], [c02, c12, c22]]
    return torch.stack([torch.stack(r, dim=1) for r in rows], dim=1) / det.unsqueeze(1).unsqueeze(1)


def _colour_stats(guide: Tensor, radius: int, eps: float, count: Tensor) -> _ColourStats:
    mean_i = _box_sum(guide, radius) / count
    sigma = torch.empty(
        guide.shape[0], 3, 3, *guide.shape[-2:], dtype=guide.dtype, device=guide.device
    )
    for p in range(3):
        for q in range(p, 3):
            cov = _box_sum(guide[:, p] * guide[:, q], radius) / count - mean_i[:, p] * mean_i[:, q]
            if p == q:
                cov = cov.clamp(min=0.0) + eps
            sigma[:, p, q] = cov
            sigma[:, q, p] = cov
    return _ColourStats(mean_i, _inverse_sym3(sigma))


def _coefficients(guide: Tensor, src: Tensor, radius: int, eps: float) -> tuple[Tensor, Tensor]:
    """Window-mean coefficients (mean_a, mean_b) of Alg. 1, lines 1-10, so that y = mean_a . I + mean_b.

    Shapes: gray guide -> mean_a N x C x H x W; colour guide -> mean_a N x C x 3 x H x W.
    Works in the dtype it is given and is differentiable by autograd (used when the guide itself
    needs a gradient, and by the fast guided filter).
    """
    count = _window_count(src.shape[-2], src.shape[-1], radius, src.dtype, src.device)
    mean_x = _box_sum(src, radius) / count
    if guide.shape[1] == 1:
        st = _gray_stats(guide, radius, eps, count)
        cov_ix = _box_sum(guide * src, radius) / count - st.mean_i * mean_x
        a = cov_ix * st.inv_var
        b = mean_x - a * st.mean_i
    else:
        st = _colour_stats(guide, radius, eps, count)
        # cov_ix[n, c, p] = mean(I_p x_c) - mean(I_p) mean(x_c)
        cov_ix = torch.stack(
            [
                _box_sum(guide[:, p : p + 1] * src, radius) / count - st.mean_i[:, p : p + 1] * mean_x
                for p in range(3)
            ],
            dim=2,
        )
        a = torch.einsum("npqhw,ncqhw->ncphw", st.inv_sigma, cov_ix)
        b = mean_x - (a * st.mean_i.unsqueeze(1)).sum(dim=2)
    return _box_sum(a, radius) / count, _box_sum(b, radius) / count


def _apply(guide: Tensor, mean_a: Tensor, mean_b: Tensor) -> Tensor:
    """Alg. 1, line 11: y = mean_a * I + mean_b (a dot product over guide channels for colour)."""
    if mean_a.dim() == 4:
        return mean_a * guide + mean_b
    return (mean_a * guide.unsqueeze(1)).sum(dim=2) + mean_b


def _cpu_kernels():
    """The fused CPU kernels (:mod:`hazefree._guided_filter_cpu`), or None without numba.

    Imported on first use: numba compiles each kernel the first time it runs (then loads it from
    its on-disk cache), so importing hazefree compiles nothing.
    """
    global _KERNELS
    if _KERNELS is None:
        try:
            from . import _guided_filter_cpu as kernels
        except ImportError:  # numba missing: the torch path computes the same values, slower
            kernels = False
        _KERNELS = kernels
    return _KERNELS or None


_KERNELS = None
USE_CPU_KERNELS = True  # False forces the torch path on the CPU too (tests compare the two)


def plain_cpu(*tensors: Tensor) -> bool:
    """Whether every tensor is a plain CPU tensor outside tracing, whose memory NumPy, OpenCV and
    the kernels can read (not a fake or functional tensor of torch.export / torch.compile)."""
    return not torch.compiler.is_compiling() and all(type(t) is Tensor and t.device.type == "cpu" for t in tensors)


def _on_kernels(*tensors: Tensor) -> bool:
    return USE_CPU_KERNELS and plain_cpu(*tensors) and _cpu_kernels() is not None


def _kernel_dtype(*tensors: Tensor) -> torch.dtype:
    # inputs are read as they are (float32 or float64); every sum inside is float64
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _as_array(t: Tensor, dtype: torch.dtype):
    return t.detach().to(dtype).contiguous().numpy()


def _kernel_filter(guide: Tensor, src: Tensor, radius: int, eps: float, backward: bool) -> Tensor:
    """Guided filter on the CPU kernels; ``backward`` computes Alg. 2's grad_x for grad_y = ``src``."""
    k = _cpu_kernels()
    dtype = _kernel_dtype(guide, src)
    g, x = _as_array(guide, dtype), _as_array(src, dtype)
    threads = torch.get_num_threads()
    if backward:
        y = k.guided_filter(g, x, radius, eps, k.X_IS_SRC_OVER_COUNT, k.APPLY_SUM, threads, x.dtype)
    else:
        y = k.guided_filter(g, x, radius, eps, k.X_IS_SRC, k.APPLY_MEAN, threads, x.dtype)
    return torch.from_numpy(y)


class _GuidedFilterFunction(torch.autograd.Function):
    """Guided filter with the explicit backward of Ma et al., Algorithm 2 (gradient w.r.t. src).

    Algorithm 2 is written for a gray guide and a constant window size; here the mean filter's
    adjoint is used instead of the mean filter (they coincide away from the border), and the colour
    guide follows the same derivation with (Sigma + eps U)^-1 in place of 1 / (var + eps).
    The guide is treated as a constant; ``guided_filter`` routes to autograd when it needs a gradient.
    On the CPU both directions run on the fused kernels (the backward as the forward kernels
    applied to grad_y / |w|, an exact rewriting of Alg. 2 derived in
    :mod:`hazefree._guided_filter_cpu`); elsewhere on the torch code below.
    """

    @staticmethod
    def forward(ctx, guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(guide)
        ctx.radius, ctx.eps, ctx.src_dtype = radius, eps, src.dtype
        if _on_kernels(guide, src):
            return _kernel_filter(guide, src, radius, eps, backward=False).to(src.dtype)
        mean_a, mean_b = _coefficients(guide, src, radius, eps)
        return _apply(guide, mean_a, mean_b)

    @staticmethod
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        (guide,) = ctx.saved_tensors
        r, eps = ctx.radius, ctx.eps
        # Grad mode is on here only for a double backward (create_graph=True, e.g. BILD's virtual
        # step): the kernels are not differentiable, so the torch code below runs instead.
        if _on_kernels(guide, grad_y) and not torch.is_grad_enabled():
            return None, _kernel_filter(guide, grad_y, r, eps, backward=True).to(ctx.src_dtype), None, None
        guide = guide.to(_compute_dtype(guide, grad_y))
        count = _window_count(guide.shape[-2], guide.shape[-1], r, guide.dtype, guide.device)
        grad_y = grad_y.to(guide.dtype)
        grad_b = _box_mean_adjoint(grad_y, r, count)  # Alg. 2 line 4
        if guide.shape[1] == 1:
            st = _gray_stats(guide, r, eps, count)  # lines 1-3
            grad_a = _box_mean_adjoint(grad_y * guide, r, count) - grad_b * st.mean_i  # line 5
            grad_cov = grad_a * st.inv_var
            # line 6
            grad_x = _box_mean_adjoint(grad_cov, r, count) * guide + _box_mean_adjoint(
                grad_b - grad_cov * st.mean_i, r, count
            )
        else:
            st = _colour_stats(guide, r, eps, count)
            grad_a = torch.stack(
                [
                    _box_mean_adjoint(grad_y * guide[:, p : p + 1], r, count)
                    - grad_b * st.mean_i[:, p : p + 1]
                    for p in range(3)
                ],
                dim=2,
            )
            grad_cov = torch.einsum("npqhw,ncqhw->ncphw", st.inv_sigma, grad_a)
            grad_x = _box_mean_adjoint(
                grad_b - (grad_cov * st.mean_i.unsqueeze(1)).sum(dim=2), r, count
            )
            for p in range(3):
                grad_x = grad_x + _box_mean_adjoint(grad_cov[:, :, p], r, count) * guide[:, p : p + 1]
        return None, grad_x.to(ctx.src_dtype), None, None


class _KernelCoefficients(torch.autograd.Function):
    """(mean_a, mean_b) of Alg. 1 on the CPU kernels, float64, with the gradient w.r.t. src.

    The guide is a constant. Backward: for the gradients G_a, G_b of mean_a, mean_b, the kernel's
    stage 1 on x = G_b / |w| with I x replaced by G_a / |w|, then stage 2 without the division by
    |w| (derivation in :mod:`hazefree._guided_filter_cpu`).
    """

    @staticmethod
    def forward(ctx, guide: Tensor, src: Tensor, radius: int, eps: float):  # type: ignore[override]
        k = _cpu_kernels()
        dtype = _kernel_dtype(guide, src)
        g, x = _as_array(guide, dtype), _as_array(src, dtype)
        threads = torch.get_num_threads()
        mean_a, mean_b = k.guided_filter(g, x, radius, eps, k.X_IS_SRC, k.MEANS_ONLY, threads)
        ctx.save_for_backward(guide)
        ctx.radius, ctx.eps, ctx.src_dtype = radius, eps, src.dtype
        mean_a = torch.from_numpy(mean_a)
        return mean_a.squeeze(2) if guide.shape[1] == 1 else mean_a, torch.from_numpy(mean_b)

    @staticmethod
    def backward(ctx, grad_mean_a: Tensor, grad_mean_b: Tensor):  # type: ignore[override]
        (guide,) = ctx.saved_tensors
        k = _cpu_kernels()
        g = _as_array(guide, torch.float64)
        n, c = grad_mean_b.shape[:2]
        ga = _as_array(grad_mean_a.reshape(n, c, guide.shape[1], *guide.shape[-2:]), torch.float64)
        gb = _as_array(grad_mean_b, torch.float64)
        threads = torch.get_num_threads()
        grad_x = k.guided_filter(g, gb, ctx.radius, ctx.eps, k.X_AND_Q_GIVEN, k.APPLY_SUM, threads, extra=ga)
        return None, torch.from_numpy(grad_x).to(ctx.src_dtype), None, None


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    # float64 for every window statistic: see the module docstring (eps down to 1e-8).
    return torch.float64 if all(t.device.type != "mps" for t in tensors) else torch.float32


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """Guided filter of ``src`` with ``guide`` (Ma et al. 2021, Alg. 1 forward, Alg. 2 backward).

    Args:
        guide: N x 1 x H x W (gray guide) or N x 3 x H x W (colour guide), floating point.
        src: N x C x H x W input to filter (for Guided-Pix2Pix, the coarse transmission).
        radius: window radius r; windows are clipped at the border and normalised by their size.
        eps: regularisation epsilon > 0 (the paper uses 1e-8 with r = 60 on 512 x 512 images).

    Returns:
        N x C x H x W filtered output in the dtype of ``src``.

    Differentiable: the gradient w.r.t. ``src`` uses the explicit backward of Algorithm 2; if
    ``guide`` requires a gradient too, the same computation runs under autograd instead.

    Example:
        >>> g = torch.rand(1, 1, 32, 32); x = torch.rand(1, 1, 32, 32)
        >>> guided_filter(g, x, radius=4, eps=1e-2).shape
        torch.Size([1, 1, 32, 32])
    """
    _check_inputs(guide, src, radius, eps)
    if _on_kernels(guide, src) and not (guide.requires_grad and torch.is_grad_enabled()):
        return _GuidedFilterFunction.apply(guide, src, radius, eps)  # read as is, summed in float64
    dtype = _compute_dtype(guide, src)
    g, x = guide.to(dtype), src.to(dtype)
    if guide.requires_grad and torch.is_grad_enabled():
        y = _apply(g, *_coefficients(g, x, radius, eps))
    else:
        y = _GuidedFilterFunction.apply(g, x, radius, eps)
    return y.to(src.dtype)


def fast_guided_filter(
    guide_hr: Tensor, guide_lr: Tensor, src_lr: Tensor, radius: int, eps: float
) -> Tensor:
    """Fast guided filter (He & Sun 2015; the DGF form of Wu et al. 2018).

    The coefficients (mean_a, mean_b) are computed at low resolution from ``guide_lr`` and
    ``src_lr`` with radius ``radius`` (in low-resolution pixels), upsampled bilinearly to the size of
    ``guide_hr`` and applied there, so the output has full resolution at low-resolution cost.

    Args:
        guide_hr: N x G x H x W full-resolution guide (G = 1 or 3).
        guide_lr: N x G x h x w guide at the working resolution (e.g. ``guide_hr`` resized).
        src_lr: N x C x h x w input at the working resolution.
        radius: window radius at the working resolution.
        eps: regularisation epsilon > 0.

    Returns:
        N x C x H x W tensor in the dtype of ``src_lr``; differentiable by autograd.
    """
    _check_inputs(guide_lr, src_lr, radius, eps)
    if guide_hr.dim() != 4 or guide_hr.shape[:2] != guide_lr.shape[:2]:
        raise ValueError(
            f"guide_hr {tuple(guide_hr.shape)} must match guide_lr {tuple(guide_lr.shape)} in N and C"
        )
    if _on_kernels(guide_lr, src_lr) and not (guide_lr.requires_grad and torch.is_grad_enabled()):
        mean_a, mean_b = _KernelCoefficients.apply(guide_lr, src_lr, radius, eps)
    else:
        dtype = _compute_dtype(guide_lr, src_lr)
        mean_a, mean_b = _coefficients(guide_lr.to(dtype), src_lr.to(dtype), radius, eps)
    size = guide_hr.shape[-2:]
    n, c = src_lr.shape[:2]
    # Upsampling runs in the input dtype: a and b are smooth, and float64 here would double the cost
    # at full resolution for no measurable gain.
    up_a = F.interpolate(
        mean_a.to(src_lr.dtype).reshape(n, -1, *mean_a.shape[-2:]),
        size=size, mode="bilinear", align_corners=False,
    )
    up_b = F.interpolate(mean_b.to(src_lr.dtype), size=size, mode="bilinear", align_corners=False)
    if mean_a.dim() == 5:
        up_a = up_a.reshape(n, c, 3, *size)
    guide = guide_hr.to(src_lr.dtype)
    if mean_a.dim() == 4 and not (torch.is_grad_enabled() and any(t.requires_grad for t in (up_a, up_b, guide))):
        return up_a.mul_(guide).add_(up_b)  # _apply in place: two full-size planes fewer
    return _apply(guide, up_a, up_b)


class GuidedFilter(torch.nn.Module):
    """Parameter-free guided filter layer (Ma et al. 2021, Sec. III-C); see :func:`guided_filter`."""

    def __init__(self, radius: int, eps: float) -> None:
        super().__init__()
        _check_radius(radius)
        self.radius, self.eps = radius, eps

    def forward(self, guide: Tensor, src: Tensor) -> Tensor:
        return guided_filter(guide, src, self.radius, self.eps)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}"


class FastGuidedFilter(torch.nn.Module):
    """Parameter-free fast guided filter layer; see :func:`fast_guided_filter`."""

    def __init__(self, radius: int, eps: float) -> None:
        super().__init__()
        _check_radius(radius)
        self.radius, self.eps = radius, eps

    def forward(self, guide_hr: Tensor, guide_lr: Tensor, src_lr: Tensor) -> Tensor:
        return fast_guided_filter(guide_hr, guide_lr, src_lr, self.radius, self.eps)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}"


def guided_filter_coefficients(guide: Tensor, src: Tensor, radius: int, eps: float) -> tuple[Tensor, Tensor]:
    """The window-mean coefficients (mean_a, mean_b) of the guided filter, so that
    ``guided_filter(guide, src, radius, eps) == mean_a * guide + mean_b`` (gray guide).

    For callers that apply the filter piece by piece: the coefficients are smooth, so those of a
    working-size image can be resized to any window of the full image (He & Sun 2015). Computed in
    float64 (see the module docstring) and returned in the dtype of ``src``.
    """
    _check_inputs(guide, src, radius, eps)
    dtype = _compute_dtype(guide, src)
    mean_a, mean_b = _coefficients(guide.to(dtype), src.to(dtype), radius, eps)
    return mean_a.to(src.dtype), mean_b.to(src.dtype)
