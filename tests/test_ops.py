"""hazefree.ops: box filter, guided filter (Alg. 1 / Alg. 2), fast guided filter.

References: a direct float64 evaluation written here (one ridge regression per window, Ma et al.
2021 eq. 10, then the window means of eqs. 16-18), OpenCV's ``cv2.ximgproc.guidedFilter`` away from the border,
torch autograd, and finite differences (gradcheck).

Tolerances (float64 unless stated; each measured on the images used here):
    direct per-window reference       1e-6   measured <= 7e-14 (normal-equation solves vs cumsums)
    OpenCV, gray guide, interior      1e-4   measured <= 1.6e-5 (OpenCV works in float32)
    OpenCV, colour guide, eps 1e-2    1e-4   measured <= 2.1e-7
    float32 vs float64 at eps 1e-8    1e-6   measured <= 1.2e-7 (only the output is rounded)
    explicit vs autograd backward     1e-10  relative; both float64
    fast GF at 1/4 vs full GF         mean |d| < 0.01, 99th percentile < 0.05 (measured <= 0.0043
                                      and <= 0.030 on SOTS 1400_1 / 1405_6, r = 60 -> 15)
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA as SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hazefree import ops
from hazefree.ops import (
    FastGuidedFilter,
    GuidedFilter,
    box_filter,
    fast_guided_filter,
    guided_filter,
)

SOTS_HAZY = SHARED / "sots_indoor" / "hazy"

_LUMA = np.array([0.299, 0.587, 0.114])
_EXPLICIT_BACKWARD = "_GuidedFilterFunctionBackward"


# --------------------------------------------------------------------------------------------
# Fixtures: real SOTS images (skipped if absent) and generated ones.
# --------------------------------------------------------------------------------------------


def _dark_channel_np(rgb: np.ndarray, patch: int = 15) -> np.ndarray:
    """Per-pixel min over RGB, then a patch x patch min filter: a src that is not linear in the guide."""
    # cv2.erode pads with +inf-like values, i.e. the window is clipped at the border.
    return cv2.erode(rgb.min(axis=2), np.ones((patch, patch), np.uint8))


def _real(name: str) -> dict[str, np.ndarray]:
    rgb = np.asarray(Image.open(SOTS_HAZY / name).convert("RGB"), dtype=np.float64) / 255.0
    return {"rgb": rgb, "gray": rgb @ _LUMA, "dark": _dark_channel_np(rgb)}


def _generated(h: int = 120, w: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    """Smooth random colour texture with a few hard edges, and its dark channel."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, 6, 8)))
    rgb = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    rgb[h // 3 : h // 2, w // 4 : w // 2] = [0.95, 0.9, 0.85]  # a flat bright object with hard edges
    rgb = np.clip(rgb, 0.0, 1.0)
    return {"rgb": rgb, "gray": rgb @ _LUMA, "dark": _dark_channel_np(rgb)}


@pytest.fixture(scope="module")
def real_1400() -> dict[str, np.ndarray]:
    if not SOTS_HAZY.is_dir():
        pytest.skip("../shared/data/sots_indoor not available")
    return _real("1400_1.png")


@pytest.fixture(scope="module")
def real_1405() -> dict[str, np.ndarray]:
    if not SOTS_HAZY.is_dir():
        pytest.skip("../shared/data/sots_indoor not available")
    return _real("1405_6.png")


def _t(a: np.ndarray) -> torch.Tensor:
    """H x W or H x W x C numpy -> 1 x C x H x W float64 tensor."""
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def _guide(img: dict[str, np.ndarray], kind: str) -> np.ndarray:
    return img["gray"] if kind == "gray" else img["rgb"]


# --------------------------------------------------------------------------------------------
# Direct float64 references.
# --------------------------------------------------------------------------------------------


def _window(i: int, n: int, r: int) -> slice:
    return slice(max(0, i - r), min(n, i + r + 1))


def _direct_box_mean(x: np.ndarray, r: int) -> np.ndarray:
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            out[..., i, j] = x[..., _window(i, h, r), _window(j, w, r)].mean(axis=(-2, -1))
    return out


def _direct_guided_filter(
    guide: np.ndarray, src: np.ndarray, r: int, eps: float, region: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Guided filter by definition: per window k, the ridge regression of eq. 10,
    min_{a,b} sum_i (a . I_i + b - x_i)^2 + eps |a|^2, solved from its normal equations; then
    y_i = mean over windows k containing i of (a_k . I_i + b_k) (eqs. 16-18).

    guide: H x W or H x W x 3; src: H x W. ``region`` = (i0, i1, j0, j1) limits the output pixels
    (the coefficients are computed on the region grown by r).
    """
    g = guide[..., None] if guide.ndim == 2 else guide
    h, w, c = g.shape
    i0, i1, j0, j1 = region or (0, h, 0, w)
    ki0, ki1, kj0, kj1 = max(0, i0 - r), min(h, i1 + r), max(0, j0 - r), min(w, j1 + r)
    coef = np.zeros((h, w, c + 1))
    for i in range(ki0, ki1):
        for j in range(kj0, kj1):
            wi, wj = _window(i, h, r), _window(j, w, r)
            design = np.concatenate([g[wi, wj].reshape(-1, c), np.ones((g[wi, wj].size // c, 1))], axis=1)
            n = design.shape[0]
            reg = np.diag([n * eps] * c + [0.0])  # eps a^2 summed over the n pixels; b is not penalised
            coef[i, j] = np.linalg.solve(design.T @ design + reg, design.T @ src[wi, wj].reshape(-1))
    out = np.zeros((i1 - i0, j1 - j0))
    for i in range(i0, i1):
        for j in range(j0, j1):
            m = coef[_window(i, h, r), _window(j, w, r)].reshape(-1, c + 1).mean(axis=0)
            out[i - i0, j - j0] = m[:c] @ g[i, j] + m[c]
    return out


# --------------------------------------------------------------------------------------------
# box_filter
# --------------------------------------------------------------------------------------------


class TestBoxFilter:
    @pytest.mark.parametrize("r", [0, 1, 2, 4, 12])
    def test_direct_window_mean(self, r):
        # 7 x 9 image: r = 4 reaches every border, r = 12 exceeds the image (global mean everywhere).
        x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
        want = torch.from_numpy(_direct_box_mean(x.numpy(), r))
        torch.testing.assert_close(box_filter(x, r), want, rtol=0, atol=1e-12)

    def test_radius_larger_than_image_is_global_mean(self):
        x = torch.rand(1, 1, 5, 6, dtype=torch.float64)
        torch.testing.assert_close(box_filter(x, 10), x.mean().expand_as(x), rtol=0, atol=1e-12)

    def test_shape_dtype_and_constant(self):
        for dtype in (torch.float32, torch.float64):
            out = box_filter(torch.full((2, 3, 11, 4), 0.37, dtype=dtype), 3)
            assert out.shape == (2, 3, 11, 4) and out.dtype == dtype
            assert (out - 0.37).abs().max() < 1e-6

    def test_non_contiguous(self):
        x = torch.rand(1, 2, 9, 13, dtype=torch.float64)
        xt = x.transpose(-1, -2)
        assert not xt.is_contiguous()
        torch.testing.assert_close(box_filter(xt, 2), box_filter(xt.contiguous(), 2), rtol=0, atol=1e-12)

    @pytest.mark.parametrize("radius", [-1, 1.5, True, "2"])
    def test_bad_radius(self, radius):
        with pytest.raises(ValueError, match="radius must be a non-negative int"):
            box_filter(torch.rand(1, 1, 4, 4), radius)

    def test_bad_dims(self):
        with pytest.raises(ValueError, match="N x C x H x W"):
            box_filter(torch.rand(4, 4), 1)


# --------------------------------------------------------------------------------------------
# guided_filter
# --------------------------------------------------------------------------------------------


class TestGuidedFilter:
    @pytest.mark.parametrize("gc, sc", [(1, 1), (1, 3), (3, 1), (3, 2), (3, 3)])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_shape_and_dtype(self, gc, sc, dtype):
        out = guided_filter(torch.rand(2, gc, 10, 7, dtype=dtype), torch.rand(2, sc, 10, 7, dtype=dtype), 2, 1e-3)
        assert out.shape == (2, sc, 10, 7) and out.dtype == dtype

    def test_batch_is_independent(self):
        g, x = torch.rand(3, 3, 12, 9, dtype=torch.float64), torch.rand(3, 2, 12, 9, dtype=torch.float64)
        loop = torch.cat([guided_filter(g[i : i + 1], x[i : i + 1], 3, 1e-3) for i in range(3)])
        torch.testing.assert_close(guided_filter(g, x, 3, 1e-3), loop, rtol=0, atol=1e-12)

    @pytest.mark.parametrize(
        "guide, src, radius, eps, exc, match",
        [
            ((1, 1, 8, 8), (1, 1, 8, 8), -1, 1e-2, ValueError, "radius must be a non-negative int"),
            ((1, 1, 8, 8), (1, 1, 8, 8), 2.0, 1e-2, ValueError, "radius must be a non-negative int"),
            ((1, 1, 8, 8), (1, 1, 8, 8), True, 1e-2, ValueError, "radius must be a non-negative int"),
            ((1, 2, 8, 8), (1, 1, 8, 8), 2, 1e-2, ValueError, r"1 \(gray\) or 3 \(colour\) channels, got 2"),
            ((1, 1, 8, 8), (1, 1, 8, 9), 2, 1e-2, ValueError, "differ in batch or spatial size"),
            ((2, 1, 8, 8), (1, 1, 8, 8), 2, 1e-2, ValueError, "differ in batch or spatial size"),
            ((1, 8, 8), (1, 8, 8), 2, 1e-2, ValueError, "must be N x C x H x W"),
            ((1, 1, 8, 8), (1, 1, 8, 8), 2, 0.0, ValueError, "eps must be > 0"),
            ((1, 1, 8, 8), (1, 1, 8, 8), 2, -1e-3, ValueError, "eps must be > 0"),
        ],
    )
    def test_errors(self, guide, src, radius, eps, exc, match):
        with pytest.raises(exc, match=match):
            guided_filter(torch.rand(guide), torch.rand(src), radius, eps)

    def test_type_errors(self):
        with pytest.raises(TypeError, match="floating-point"):
            guided_filter(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.rand(1, 1, 4, 4), 1, 1e-2)
        with pytest.raises(TypeError, match="torch tensors"):
            guided_filter(np.zeros((1, 1, 4, 4)), torch.rand(1, 1, 4, 4), 1, 1e-2)

    def test_non_contiguous(self):
        g = torch.rand(1, 3, 9, 13, dtype=torch.float64).transpose(-1, -2)
        x = torch.rand(1, 2, 18, 13, dtype=torch.float64)[..., ::2, :].transpose(-1, -2)
        assert not g.is_contiguous() and not x.is_contiguous()
        want = guided_filter(g.contiguous(), x.contiguous(), 3, 1e-3)
        torch.testing.assert_close(guided_filter(g, x, 3, 1e-3), want, rtol=0, atol=1e-12)
        gl = g.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(guided_filter(gl, x, 3, 1e-3), want, rtol=0, atol=1e-12)

    def test_module_equals_function(self):
        g, x = torch.rand(2, 3, 10, 11), torch.rand(2, 1, 10, 11)
        module = GuidedFilter(radius=3, eps=1e-3)
        assert torch.equal(module(g, x), guided_filter(g, x, 3, 1e-3))
        assert list(module.parameters()) == [] and "radius=3" in repr(module)
        with pytest.raises(ValueError, match="radius"):
            GuidedFilter(radius=-2, eps=1e-3)

    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("r", [1, 4, 30])
    def test_constant_src_stays_constant(self, gc, r):
        g = torch.rand(1, gc, 12, 15, dtype=torch.float64)
        out = guided_filter(g, torch.full((1, 2, 12, 15), 0.42, dtype=torch.float64), r, 1e-4)
        assert (out - 0.42).abs().max() < 1e-12
        out32 = guided_filter(g.float(), torch.full((1, 1, 12, 15), 0.42), r, 1e-8)
        assert (out32 - 0.42).abs().max() < 1e-6

    def test_constant_guide_is_double_box_filter(self):
        # var_I = 0 and cov = 0 give a = 0, b = mean(x): y = mean(mean(x)).
        x = torch.rand(1, 2, 11, 8, dtype=torch.float64)
        out = guided_filter(torch.full((1, 1, 11, 8), 0.6, dtype=torch.float64), x, 2, 1e-3)
        torch.testing.assert_close(out, box_filter(box_filter(x, 2), 2), rtol=0, atol=1e-12)

    # ---- gradients --------------------------------------------------------------------------

    # gradcheck costs two forward passes per input element: small images, where r = 2 already
    # clips most windows and r = 10 exceeds the image.
    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("r", [1, 2, 10])
    def test_gradcheck_src_explicit_backward(self, gc, r):
        g = torch.rand(1, gc, 4, 5, dtype=torch.float64)
        x = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        assert type(guided_filter(g, x, r, 1e-2).grad_fn).__name__ == _EXPLICIT_BACKWARD
        assert torch.autograd.gradcheck(lambda s: guided_filter(g, s, r, 1e-2), (x,))

    @pytest.mark.parametrize("gc", [1, 3])
    def test_gradgradcheck_src(self, gc):
        """A double backward (create_graph, as in BILD's virtual step) runs the torch backward,
        which is differentiable, also where the first backward would use the CPU kernels."""
        g = torch.rand(1, gc, 4, 5, dtype=torch.float64)
        x = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(lambda s: guided_filter(g, s, 2, 1e-2), (x,))

    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("r", [1, 3])
    def test_gradcheck_guide_autograd_path(self, gc, r):
        g = torch.rand(1, gc, 4, 5, dtype=torch.float64, requires_grad=True)
        x = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
        assert type(guided_filter(g, x, r, 1e-1).grad_fn).__name__ != _EXPLICIT_BACKWARD
        assert torch.autograd.gradcheck(lambda a, b: guided_filter(a, b, r, 1e-1), (g, x))

    @staticmethod
    def _grads(g: torch.Tensor, x: torch.Tensor, r: int, eps: float, up: torch.Tensor, explicit: bool):
        g = g.clone().requires_grad_(not explicit)
        x = x.clone().requires_grad_(True)
        y = guided_filter(g, x, r, eps)
        assert (type(y.grad_fn).__name__ == _EXPLICIT_BACKWARD) == explicit
        (y * up).sum().backward()
        return x.grad

    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("r, eps", [(2, 1e-2), (5, 1e-4), (40, 1e-3)])
    def test_explicit_backward_equals_autograd(self, gc, r, eps):
        gen = torch.Generator().manual_seed(r)
        g = torch.rand(2, gc, 17, 23, dtype=torch.float64, generator=gen)
        x = torch.rand(2, 3, 17, 23, dtype=torch.float64, generator=gen)
        up = torch.randn(2, 3, 17, 23, dtype=torch.float64, generator=gen)
        explicit = self._grads(g, x, r, eps, up, explicit=True)
        composite = self._grads(g, x, r, eps, up, explicit=False)
        torch.testing.assert_close(explicit, composite, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("kind", ["gray", "colour"])
    def test_explicit_backward_equals_autograd_real(self, real_1400, kind):
        g = _t(_guide(real_1400, kind))[..., 100:164, 200:280]
        x = _t(real_1400["dark"])[..., 100:164, 200:280]
        up = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        explicit = self._grads(g, x, 8, 1e-4, up, explicit=True)
        composite = self._grads(g, x, 8, 1e-4, up, explicit=False)
        torch.testing.assert_close(explicit, composite, rtol=1e-10, atol=1e-10)

    def test_float32_src_gradient(self):
        # Internals run in float64; the gradient comes back in the dtype of src.
        x = torch.rand(1, 1, 9, 9, requires_grad=True)
        guided_filter(torch.rand(1, 3, 9, 9), x, 2, 1e-3).sum().backward()
        assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()

    # ---- references on real and generated images ----------------------------------------------

    @staticmethod
    def _vs_opencv(img: dict[str, np.ndarray], kind: str, r: int, eps: float) -> float:
        guide, src = _guide(img, kind), img["dark"]
        ours = guided_filter(_t(guide), _t(src), r, eps)[0, 0].numpy()
        ref = cv2.ximgproc.guidedFilter(guide.astype(np.float32), src.astype(np.float32), r, eps)
        # OpenCV's box filter reflects at the border (BORDER_REFLECT_101) where ours clips the
        # window; a and b differ within r px of the border and their window means within 2r px.
        m = 2 * r + 1
        return float(np.abs(ours - ref)[m:-m, m:-m].max())

    @pytest.mark.parametrize("r", [4, 16, 60])
    @pytest.mark.parametrize("eps", [1e-2, 1e-4])
    @pytest.mark.parametrize("image", ["real_1400", "real_1405"])
    def test_gray_vs_opencv_real(self, request, image, r, eps):
        assert self._vs_opencv(request.getfixturevalue(image), "gray", r, eps) < 1e-4

    @pytest.mark.parametrize("r", [4, 16, 60])
    @pytest.mark.parametrize("image", ["real_1400", "real_1405"])
    def test_colour_vs_opencv_real(self, request, image, r):
        # eps = 1e-2 only: OpenCV's colour path inverts the 3 x 3 covariance in float32, and below
        # eps ~ 1e-3 its rounding (~1e-7 on each variance) is amplified by (Sigma + eps U)^-1. At
        # eps = 1e-4 it differs from ours by up to 0.16 (r = 4) and 0.23 (r = 60) on 1400_1, while
        # ours equals the direct float64 evaluation at the worst pixel
        # (test_colour_small_eps_where_opencv_differs).
        assert self._vs_opencv(request.getfixturevalue(image), "colour", r, 1e-2) < 1e-4

    @pytest.mark.parametrize("kind, eps", [("gray", 1e-2), ("gray", 1e-4), ("colour", 1e-2)])
    def test_vs_opencv_generated(self, kind, eps):
        assert self._vs_opencv(_generated(), kind, 8, eps) < 1e-4

    def test_colour_small_eps_where_opencv_differs(self, real_1400):
        r, eps = 4, 1e-4
        guide, src = real_1400["rgb"], real_1400["dark"]
        ours = guided_filter(_t(guide), _t(src), r, eps)[0, 0].numpy()
        ref = cv2.ximgproc.guidedFilter(guide.astype(np.float32), src.astype(np.float32), r, eps)
        m = 2 * r + 1
        diff = np.abs(ours - ref)[m:-m, m:-m]
        i, j = (int(v) + m for v in np.unravel_index(diff.argmax(), diff.shape))
        direct = _direct_guided_filter(guide, src, r, eps, region=(i, i + 1, j, j + 1))[0, 0]
        assert abs(ours[i, j] - direct) < 1e-6

    @pytest.mark.parametrize("kind", ["gray", "colour"])
    @pytest.mark.parametrize("eps", [1e-2, 1e-4])
    @pytest.mark.parametrize("r", [1, 4, 9, 30])
    @pytest.mark.parametrize("source", ["real", "generated"])
    def test_direct_reference_with_borders(self, request, source, kind, eps, r):
        # 24 x 20 crops: every pixel, borders included; r = 30 exceeds the crop.
        img = request.getfixturevalue("real_1400") if source == "real" else _generated(seed=1)
        i0, j0 = (200, 300) if source == "real" else (30, 60)
        guide = _guide(img, kind)[i0 : i0 + 24, j0 : j0 + 20]
        src = img["dark"][i0 : i0 + 24, j0 : j0 + 20]
        assert src.std() > 0.01  # the crop has structure in src
        ours = guided_filter(_t(guide), _t(src), r, eps)[0, 0].numpy()
        assert np.abs(ours - _direct_guided_filter(guide, src, r, eps)).max() < 1e-6

    # ---- float32 at the paper's eps = 1e-8 ----------------------------------------------------

    @pytest.mark.parametrize("kind", ["gray", "colour"])
    def test_float32_tiny_eps_real(self, real_1405, kind):
        guide, src = _t(_guide(real_1405, kind)), _t(real_1405["dark"])
        out32 = guided_filter(guide.float(), src.float(), 60, 1e-8)
        assert out32.dtype == torch.float32 and torch.isfinite(out32).all()
        # vs float64 on the same (float32-rounded) values, and vs the exact 8-bit values / 255.
        same = guided_filter(guide.float().double(), src.float().double(), 60, 1e-8)
        exact = guided_filter(guide, src, 60, 1e-8)
        assert (out32.double() - same).abs().max() < 1e-6
        assert (out32.double() - exact).abs().max() < 1e-6

    @pytest.mark.parametrize("kind", ["gray", "colour"])
    def test_float32_tiny_eps_plateaus(self, kind):
        # Saturated (all 1.0) and flat regions: var_I is exactly 0 there, where a float32
        # mean(I^2) - mean(I)^2 is off by ~1e-7 >> eps and turns a = cov / (var + eps) into noise.
        h, w = 64, 80
        rgb = np.full((h, w, 3), 0.5)
        rgb[:, : w // 2] = 1.0
        rgb[h // 2 :, w // 4 : w // 2] = [1.0, 0.98, 0.9]
        rgb[h // 2 :, w // 2 :] = np.linspace(0.2, 0.8, w // 2)[None, :, None]
        rgb = np.round(rgb * 255) / 255
        img = {"rgb": rgb, "gray": rgb @ _LUMA, "dark": _dark_channel_np(rgb, 7)}
        guide, src = _t(_guide(img, kind)), _t(img["dark"])
        out32 = guided_filter(guide.float(), src.float(), 6, 1e-8)
        out64 = guided_filter(guide.float().double(), src.float().double(), 6, 1e-8)
        assert torch.isfinite(out32).all()
        assert (out32.double() - out64).abs().max() < 1e-6

    # ---- property test ------------------------------------------------------------------------

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        h=st.integers(1, 40),
        w=st.integers(1, 40),
        r=st.integers(0, 50),
        eps=st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2, 1.0]),
        gc=st.sampled_from([1, 3]),
        content=st.sampled_from(["uniform", "constant", "binary", "8bit", "near_constant", "saturated"]),
        dtype=st.sampled_from([torch.float32, torch.float64]),
        seed=st.integers(0, 2**16),
    )
    def test_property_finite_and_bounded(self, h, w, r, eps, gc, content, dtype, seed):
        rng = np.random.default_rng(seed)

        def make(c: int) -> torch.Tensor:
            shape = (1, c, h, w)
            if content == "uniform":
                a = rng.random(shape)
            elif content == "constant":
                a = np.full(shape, rng.random())
            elif content == "binary":
                a = (rng.random(shape) > 0.5).astype(float)
            elif content == "8bit":
                a = rng.integers(0, 256, shape) / 255.0
            elif content == "near_constant":
                a = 0.5 + 1e-7 * rng.standard_normal(shape)
            else:
                a = np.where(rng.random(shape) > 0.2, 1.0, rng.random(shape))
            return torch.from_numpy(a).to(dtype)

        guide, src = make(gc), make(2)
        out = guided_filter(guide, src, r, eps)
        assert out.shape == src.shape and out.dtype == dtype
        assert torch.isfinite(out).all()
        # With guide == src (gray), y_i = mean_k (a_k I_i + (1 - a_k) mu_k) with a_k in [0, 1):
        # a convex combination of values in [0, 1].
        x = make(1).clamp(0, 1)
        y = guided_filter(x, x, r, eps)
        assert torch.isfinite(y).all()
        assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6


# --------------------------------------------------------------------------------------------
# fast_guided_filter
# --------------------------------------------------------------------------------------------


class TestFastGuidedFilter:
    @pytest.mark.parametrize("gc", [1, 3])
    def test_scale_one_equals_guided_filter(self, gc):
        g, x = torch.rand(2, gc, 15, 12, dtype=torch.float64), torch.rand(2, 2, 15, 12, dtype=torch.float64)
        torch.testing.assert_close(fast_guided_filter(g, g, x, 3, 1e-3), guided_filter(g, x, 3, 1e-3), rtol=0, atol=1e-12)
        # float32: a and b are rounded to float32 before being applied (documented in ops).
        g32, x32 = g.float(), x.float()
        out = fast_guided_filter(g32, g32, x32, 3, 1e-3)
        assert out.dtype == torch.float32
        assert (out - guided_filter(g32, x32, 3, 1e-3)).abs().max() < 1e-5

    def test_shape_and_module(self):
        ghr, glr, xlr = torch.rand(2, 3, 40, 36), torch.rand(2, 3, 10, 9), torch.rand(2, 1, 10, 9)
        out = fast_guided_filter(ghr, glr, xlr, 2, 1e-2)
        assert out.shape == (2, 1, 40, 36)
        assert torch.equal(FastGuidedFilter(2, 1e-2)(ghr, glr, xlr), out)

    def test_errors(self):
        with pytest.raises(ValueError, match="must match guide_lr"):
            fast_guided_filter(torch.rand(1, 1, 40, 40), torch.rand(1, 3, 10, 10), torch.rand(1, 1, 10, 10), 2, 1e-2)
        with pytest.raises(ValueError, match="differ in batch or spatial size"):
            fast_guided_filter(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 10, 10), torch.rand(1, 1, 10, 11), 2, 1e-2)

    @pytest.mark.parametrize("kind, eps", [("gray", 1e-4), ("colour", 1e-2), ("colour", 1e-4)])
    @pytest.mark.parametrize("image", ["real_1400", "real_1405"])
    def test_quarter_scale_approximates_full(self, request, image, kind, eps):
        img = request.getfixturevalue(image)
        guide, src = _t(_guide(img, kind)), _t(img["dark"])  # 460 x 620, divisible by 4
        full = guided_filter(guide, src, 60, eps)
        fast = fast_guided_filter(guide, F.avg_pool2d(guide, 4), F.avg_pool2d(src, 4), 15, eps)
        err = (fast - full).abs().flatten()
        assert err.mean() < 0.01 and err.quantile(0.99) < 0.05
        # Applying a, b at full resolution beats upsampling the low-resolution output.
        low = guided_filter(F.avg_pool2d(guide, 4), F.avg_pool2d(src, 4), 15, eps)
        naive = F.interpolate(low, size=full.shape[-2:], mode="bilinear", align_corners=False)
        assert err.mean() < (naive - full).abs().mean()

    @pytest.mark.parametrize("gc", [1, 3])
    def test_gradcheck(self, gc):
        ghr = torch.rand(1, gc, 8, 6, dtype=torch.float64, requires_grad=True)
        glr = F.avg_pool2d(ghr.detach(), 2).requires_grad_()
        xlr = torch.rand(1, 1, 4, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c: fast_guided_filter(a, b, c, 1, 1e-1), (ghr, glr, xlr))


# --------------------------------------------------------------------------------------------
# CPU kernels (hazefree._guided_filter_cpu) against the torch implementation
# --------------------------------------------------------------------------------------------


@pytest.fixture
def torch_path(monkeypatch):
    """Run a callable with the CPU kernels switched off (the torch code the GPU runs)."""

    def run(fn):
        monkeypatch.setattr(ops, "USE_CPU_KERNELS", False)
        try:
            return fn()
        finally:
            monkeypatch.setattr(ops, "USE_CPU_KERNELS", True)

    return run


def _filter_and_grad(fn, x: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (y * up).sum().backward()
    return y.detach(), x.grad


class TestCpuKernels:
    # sizes: 1 x 1, windows past every border (r >= H, W), r = 0, and images with several bands
    CASES = [(1, 1, 3), (5, 7, 2), (17, 23, 40), (64, 80, 6), (130, 70, 0), (300, 90, 30)]

    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("h, w, r", CASES)
    def test_forward_and_backward_equal_torch_path(self, torch_path, gc, h, w, r):
        gen = torch.Generator().manual_seed(h + r)
        g = torch.rand(2, gc, h, w, dtype=torch.float64, generator=gen)
        x = torch.rand(2, 2, h, w, dtype=torch.float64, generator=gen)
        up = torch.randn(2, 2, h, w, dtype=torch.float64, generator=gen)
        fn = lambda s: guided_filter(g, s, r, 1e-3)  # noqa: E731
        y, grad = _filter_and_grad(fn, x, up)
        y_ref, grad_ref = torch_path(lambda: _filter_and_grad(fn, x, up))
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("gc", [1, 3])
    @pytest.mark.parametrize("h, w, r", [(5, 7, 2), (40, 36, 3), (130, 70, 9)])
    def test_fast_guided_filter_equals_torch_path(self, torch_path, gc, h, w, r):
        gen = torch.Generator().manual_seed(r)
        g_hr = torch.rand(2, gc, 2 * h, 2 * w, dtype=torch.float64, generator=gen)
        g_lr = F.avg_pool2d(g_hr, 2)
        x = torch.rand(2, 2, h, w, dtype=torch.float64, generator=gen)
        up = torch.randn(2, 2, 2 * h, 2 * w, dtype=torch.float64, generator=gen)
        fn = lambda s: fast_guided_filter(g_hr, g_lr, s, r, 1e-3)  # noqa: E731
        y, grad = _filter_and_grad(fn, x, up)
        y_ref, grad_ref = torch_path(lambda: _filter_and_grad(fn, x, up))
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("gc", [1, 3])
    def test_fast_guided_filter_gradcheck_constant_guide(self, gc):
        # guide_lr without a gradient: the coefficients run on the kernels (explicit backward)
        ghr = torch.rand(1, gc, 8, 10, dtype=torch.float64, requires_grad=True)
        glr = F.avg_pool2d(ghr.detach(), 2)
        xlr = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, c: fast_guided_filter(a, glr, c, 1, 1e-1), (ghr, xlr))

    @pytest.mark.parametrize("gc", [1, 3])
    def test_bands_on_threads_equal_one_band(self, gc, monkeypatch):
        # the tests run torch (and so the kernels) on one thread, and small images stay on one
        # band: force several bands of rows
        k = ops._cpu_kernels()
        monkeypatch.setattr(k, "_MIN_PIXELS_PER_THREAD", 1024)
        gen = np.random.default_rng(gc)
        g, x = gen.random((2, gc, 403, 50)), gen.random((2, 1, 403, 50)).astype(np.float32)
        args = (g, x, 12, 1e-4, k.X_IS_SRC, k.APPLY_MEAN)
        assert len(k._bands(403, 50, 12, 3)) == 3
        one, three = k.guided_filter(*args, 1, np.float32), k.guided_filter(*args, 3, np.float32)
        assert one.dtype == np.float32
        np.testing.assert_allclose(three, one, rtol=0, atol=1e-6)

    def test_concurrent_calls_from_threads(self):
        # the kernels keep no shared state: callers on several threads (e.g. a folder of images)
        from concurrent.futures import ThreadPoolExecutor

        inputs = [(torch.rand(1, 3, 70, 60), torch.rand(1, 1, 70, 60)) for _ in range(4)]
        want = [guided_filter(g, x, 5, 1e-3) for g, x in inputs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda gx: guided_filter(*gx, 5, 1e-3), inputs * 2))
        for i, y in enumerate(got):
            assert torch.equal(y, want[i % 4])

    def test_half_precision_inputs(self):
        g, x = torch.rand(1, 1, 20, 20).half(), torch.rand(1, 1, 20, 20).half()
        out = guided_filter(g, x, 3, 1e-3)
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.float(), guided_filter(g.double(), x.double(), 3, 1e-3).float(),
                                   rtol=0, atol=1e-3)

    def test_import_compiles_nothing(self):
        # numba (and with it any compilation) is loaded on the first CPU filter call only
        code = "import sys, hazefree, hazefree.ops, hazefree.models; print('numba' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"
