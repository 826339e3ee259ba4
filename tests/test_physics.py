"""hazefree.physics: haze model round trips, dark channel, airlight estimators, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hazefree.physics import (
    AIRLIGHT_METHODS,
    MIN_AIRLIGHT,
    add_haze,
    airlight_dark_channel,
    airlight_floor,
    airlight_max_luma,
    check_image,
    dark_channel,
    estimate_airlight,
    estimate_airlights,
    fit_haze_model,
    transmission_of,
    remove_haze,
    transmission_from_depth,
)


def _rand(*shape: int, seed: int = 0, lo: float = 0.0, hi: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)


def _direct_dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """N x C x H x W -> N x 1 x H x W: min over channels and over the clipped patch window."""
    n, _, h, w = image.shape
    r = patch // 2
    m = image.min(axis=1)
    out = np.empty((n, 1, h, w))
    for i in range(h):
        for j in range(w):
            out[:, 0, i, j] = m[:, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].min(axis=(1, 2))
    return out


def _scene(h: int = 100, w: int = 100) -> torch.Tensor:
    """Dim, textured scene (RGB in [0.15, 0.45]) with no bright region."""
    return _rand(1, 3, h, w, seed=1, lo=0.15, hi=0.45)


class TestHazeModel:
    @pytest.mark.parametrize("tc", [1, 3])
    def test_round_trip(self, tc):
        clear = _rand(2, 3, 16, 12, seed=0)
        t = _rand(2, tc, 16, 12, seed=1, lo=0.2, hi=1.0)
        a = torch.tensor([[0.9, 0.85, 0.8], [0.7, 0.75, 0.8]], dtype=torch.float64)
        hazy = add_haze(clear, t, a)
        # t >= 0.2 amplifies rounding by at most 5x: float64 round trip to 1e-12.
        torch.testing.assert_close(remove_haze(hazy, t, a, t_min=0), clear, rtol=0, atol=1e-12)

    def test_round_trip_float32(self):
        clear, t = _rand(1, 3, 8, 8, dtype=torch.float32), _rand(1, 1, 8, 8, seed=2, lo=0.2, dtype=torch.float32)
        hazy = add_haze(clear, t, 0.8)
        # float32 rounding of I (~6e-8) times 1/t <= 5, plus the last operations.
        assert (remove_haze(hazy, t, 0.8, t_min=0) - clear).abs().max() < 1e-6

    def test_model_values(self):
        # I = J t + A (1 - t) at a few hand-checked pixels.
        clear = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
        hazy = add_haze(clear, torch.full((1, 1, 1, 1), 0.25, dtype=torch.float64), (0.8, 0.8, 0.8))
        torch.testing.assert_close(hazy.flatten(), torch.tensor([0.6, 0.725, 0.85], dtype=torch.float64))

    @pytest.mark.parametrize(
        "airlight",
        [0.8, (0.8, 0.8, 0.8), torch.full((2, 3), 0.8), torch.full((2, 3, 1, 1), 0.8), torch.tensor([0.8, 0.8, 0.8])],
    )
    def test_airlight_forms(self, airlight):
        clear, t = _rand(2, 3, 5, 5, dtype=torch.float32), _rand(2, 1, 5, 5, seed=3, dtype=torch.float32)
        want = clear * t + 0.8 * (1 - t)
        torch.testing.assert_close(add_haze(clear, t, airlight), want)

    def test_bad_airlight_shape(self):
        with pytest.raises(ValueError, match="airlight must be"):
            add_haze(_rand(1, 3, 4, 4), _rand(1, 1, 4, 4), torch.full((1, 3, 2, 2), 0.8))

    def test_t_min_bounds_amplification(self):
        hazy = torch.full((1, 3, 2, 2), 0.9, dtype=torch.float64)
        t = torch.full((1, 1, 2, 2), 1e-3, dtype=torch.float64)
        out = remove_haze(hazy, t, 0.8, t_min=0.1, clamp=False)
        torch.testing.assert_close(out, torch.full_like(hazy, (0.9 - 0.8) / 0.1 + 0.8))
        assert remove_haze(hazy, t, 0.8, t_min=0.1).max() == 1.0  # clamp=True clips to [0, 1]

    def test_remove_haze_gradient(self):
        t = _rand(1, 1, 4, 4, seed=4, lo=0.3).requires_grad_()
        remove_haze(_rand(1, 3, 4, 4, seed=5), t, 0.9, t_min=0.1, clamp=False).sum().backward()
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0

    def test_remove_haze_in_place_path_equals_autograd_path(self):
        hazy, t = _rand(2, 3, 9, 11, seed=5).float(), _rand(2, 1, 9, 11, seed=6).float()
        a = torch.tensor([0.8, 0.85, 0.9])
        before = hazy.clone()
        fast = remove_haze(hazy, t, a, t_min=0.1)
        slow = remove_haze(hazy.clone().requires_grad_(True), t, a, t_min=0.1)
        assert torch.equal(fast, slow.detach()) and torch.equal(hazy, before)  # input untouched

    def test_add_haze_from_depth(self):
        clear, depth = _rand(1, 3, 6, 6), _rand(1, 1, 6, 6, seed=6, hi=5.0)
        want = add_haze(clear, torch.exp(-0.7 * depth), 0.9)
        torch.testing.assert_close(add_haze(clear, depth, 0.9, beta=0.7), want)

    def test_add_haze_rejects_out_of_range_t(self):
        with pytest.raises(ValueError, match="transmission must lie in"):
            add_haze(_rand(1, 3, 4, 4), torch.full((1, 1, 4, 4), 2.0), 0.8)


class TestTransmissionFromDepth:
    def test_values(self):
        depth = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64).view(1, 1, 1, 3)
        want = torch.tensor([1.0, math.exp(-0.8), math.exp(-2.0)], dtype=torch.float64).view(1, 1, 1, 3)
        torch.testing.assert_close(transmission_from_depth(depth, 0.8), want)

    def test_per_image_beta(self):
        depth = _rand(2, 1, 3, 3, hi=4.0)
        t = transmission_from_depth(depth, torch.tensor([0.5, 2.0], dtype=torch.float64))
        torch.testing.assert_close(t[0], torch.exp(-0.5 * depth[0]))
        torch.testing.assert_close(t[1], torch.exp(-2.0 * depth[1]))

    @pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
    def test_rejects_bad_depth(self, bad):
        depth = torch.ones(1, 1, 2, 2)
        depth[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="finite and non-negative"):
            transmission_from_depth(depth, 1.0)


class TestDarkChannel:
    @pytest.mark.parametrize("patch", [1, 3, 7, 15, 41])
    def test_direct_min_filter(self, patch):
        # 13 x 17: patch 15 reaches the borders from every pixel, 41 exceeds the image.
        img = _rand(2, 3, 13, 17, seed=patch)
        want = torch.from_numpy(_direct_dark_channel(img.numpy(), patch))
        out = dark_channel(img, patch)
        assert out.shape == (2, 1, 13, 17)
        assert torch.equal(out, want)  # a min picks an input value: exact

    def test_single_dark_pixel_spreads_over_patch(self):
        img = torch.ones(1, 3, 20, 20)
        img[0, 1, 10, 10] = 0.0
        out = dark_channel(img, 5)[0, 0]
        assert (out[8:13, 8:13] == 0).all() and out.sum() == 400 - 25

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("patch", [3, 15, 41])
    def test_opencv_path_equals_torch_path(self, dtype, patch):
        # CPU inference runs cv2.erode; with a gradient the torch min filter runs: same values.
        img = _rand(2, 3, 29, 23, seed=patch).to(dtype).transpose(-1, -2)  # non-contiguous too
        fast = dark_channel(img, patch)
        slow = dark_channel(img.clone().requires_grad_(True), patch)
        assert slow.grad_fn is not None and fast.dtype == dtype
        assert torch.equal(fast, slow.detach())

    @pytest.mark.parametrize("patch", [0, 4, -3])
    def test_bad_patch(self, patch):
        with pytest.raises(ValueError, match="positive odd"):
            dark_channel(torch.rand(1, 3, 8, 8), patch)


class TestAirlight:
    @pytest.mark.parametrize("method", ["max_luma", "dark_channel"])
    def test_bright_patch_gives_its_colour(self, method):
        img = _scene()
        colour = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
        img[0, :, 40:60, 30:50] = colour.view(3, 1, 1)  # 20 x 20 > the 15 x 15 dark-channel patch
        a = estimate_airlight(img, method)
        assert a.shape == (1, 3, 1, 1)
        torch.testing.assert_close(a.flatten(), colour)

    def test_hot_pixel_does_not_dominate_max_luma(self):
        # Haze region at 0.8 over a third of the image; one white hot pixel in the dim part.
        img = _scene()
        img[:, :, :33] = 0.8
        img[0, :, 70, 70] = 1.0
        a = airlight_max_luma(img)
        # Top 0.1 % = 10 pixels: the hot pixel moves A by (1 - 0.8) / 10 at most.
        assert (a - 0.8).abs().max() <= 0.02 + 1e-12
        # The paper's single brightest pixel (top_fraction=0) would return the hot pixel.
        assert (airlight_max_luma(img, top_fraction=0.0) == 1.0).all()

    def test_hot_pixel_ignored_by_dark_channel(self):
        img = _scene()
        img[:, :, :33] = 0.8
        img[0, :, 70, 70] = 1.0
        torch.testing.assert_close(airlight_dark_channel(img).flatten(), torch.full((3,), 0.8, dtype=torch.float64))

    def test_dark_channel_prefers_haze_over_small_white_object(self):
        # Haze (bluish grey, luma ~0.80) fills the top rows; a 7 x 7 white object (luma 1), smaller
        # than the 15 x 15 patch, sits in the dim foreground. Max-luma picks the object; the dark
        # channel of the object is that of its dim surroundings, so the prior picks the haze.
        haze = torch.tensor([0.75, 0.8, 0.85], dtype=torch.float64)
        img = _scene()
        img[0, :, :30] = haze.view(3, 1, 1)
        img[0, :, 70:77, 60:67] = 1.0
        torch.testing.assert_close(airlight_dark_channel(img).flatten(), haze)
        torch.testing.assert_close(airlight_max_luma(img).flatten(), torch.ones(3, dtype=torch.float64))

    def test_brightest_candidate_keeps_the_haze_level(self):
        # Opaque haze whose brightness varies over rows and columns (0.70 .. 0.95): the mean of the
        # brightest 10 % of the 40 candidates is below the brightest one, He et al.'s single pick.
        img = _scene(200, 200)
        rows = torch.linspace(0.0, 0.05, 30, dtype=torch.float64).view(30, 1)
        cols = torch.linspace(0.70, 0.90, 200, dtype=torch.float64).view(1, 200)
        img[0, :, :30] = (rows + cols).unsqueeze(0)
        single = estimate_airlight(img, "dark_channel_brightest").flatten()
        mean = estimate_airlight(img, "dark_channel").flatten()
        assert (mean < single).all()
        torch.testing.assert_close(single, airlight_dark_channel(img, brightest_fraction=0.0).flatten())

    @pytest.mark.parametrize("method", ["max_luma", "dark_channel", "dark_channel_brightest"])
    def test_per_image_in_batch(self, method):
        a_img, b_img = _scene(), _scene() * 0.5
        a_img[0, :, :20] = torch.tensor([0.9, 0.9, 0.95], dtype=torch.float64).view(3, 1, 1)
        b_img[0, :, 50:] = torch.tensor([0.6, 0.65, 0.7], dtype=torch.float64).view(3, 1, 1)
        batch = estimate_airlight(torch.cat([a_img, b_img]), method)
        assert batch.shape == (2, 3, 1, 1)
        torch.testing.assert_close(batch[0:1], estimate_airlight(a_img, method))
        torch.testing.assert_close(batch[1:2], estimate_airlight(b_img, method))
        assert not torch.allclose(batch[0], batch[1])

    def test_several_estimates_at_once(self):
        img = _scene()
        img[0, :, :25] = torch.tensor([0.8, 0.85, 0.9], dtype=torch.float64).view(3, 1, 1)
        img[0, :, 70:77, 60:67] = 1.0
        every = estimate_airlights(img)
        assert list(every) == list(AIRLIGHT_METHODS)
        for method, a in every.items():
            torch.testing.assert_close(a, estimate_airlight(img, method), rtol=0, atol=0)
        assert list(estimate_airlights(img, ("dark_channel", "max_luma", "dark_channel"))) == ["dark_channel", "max_luma"]
        with pytest.raises(ValueError, match="unknown airlight method 'sky'"):
            estimate_airlights(img, ("max_luma", "sky"))

    @pytest.mark.parametrize(
        "methods, expected_calls",
        [(("max_luma",), 0), (("dark_channel",), 1), (AIRLIGHT_METHODS, 1)],
    )
    def test_dark_channel_computed_only_when_needed_and_once(self, monkeypatch, methods, expected_calls):
        import hazefree.physics as physics

        calls = []
        real = physics.dark_channel
        monkeypatch.setattr(physics, "dark_channel", lambda *a, **k: calls.append(1) or real(*a, **k))
        estimate_airlights(_scene(), methods)
        assert len(calls) == expected_calls

    @pytest.mark.parametrize("method", ["max_luma", "dark_channel"])
    def test_black_image_clamped(self, method):
        a = estimate_airlight(torch.zeros(1, 3, 9, 9), method)
        assert (a == MIN_AIRLIGHT).all()

    def test_tiny_image(self):
        img = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
        for method in ("max_luma", "dark_channel"):
            torch.testing.assert_close(estimate_airlight(img, method), img)

    def test_unknown_method(self):
        with pytest.raises(ValueError, match="unknown airlight method 'brightest'"):
            estimate_airlight(torch.rand(1, 3, 4, 4), "brightest")


class TestAirlightFloor:
    """A >= (I - t) / (1 - t) keeps J = (I - A) / t + A at most 1 (eq. 1 solved for A)."""

    @staticmethod
    def _light_haze(airlight: float, white: bool, seed: int = 0):
        clear = _rand(1, 3, 64, 80, seed=seed, hi=0.8)
        t = _rand(1, 1, 64, 80, seed=seed + 1, lo=0.4, hi=0.9)  # nothing opaque
        if white:
            clear[..., 10:26, 10:26] = 1.0  # a white wall: 5 % of the pixels
        return add_haze(clear, t, airlight), t

    def test_white_surfaces_give_the_airlight(self):
        hazy, t = self._light_haze(0.9, white=True)  # the wall reads 0.94-0.99: not saturated
        torch.testing.assert_close(airlight_floor(hazy, t).flatten(), torch.full((3,), 0.9, dtype=hazy.dtype))

    def test_floor_lies_below_a_right_airlight(self):
        hazy, t = self._light_haze(0.9, white=False)
        floor = airlight_floor(hazy, t)
        assert floor.shape == (1, 3, 1, 1) and (floor < 0.9).all()
        # with the floor as the airlight, each channel exceeds 1 on at most 1 % of the pixels
        over = remove_haze(hazy, t, floor, t_min=0, clamp=False) > 1 + 1e-9
        assert (over.double().mean(dim=(0, 2, 3)) <= 0.01).all() and over.any()

    def test_saturated_pixels_are_left_out(self):
        hazy, t = self._light_haze(0.9, white=False)
        hazy[..., :16, :20] = 1.0  # clipped highlights: J > 1 there for any A < 1
        assert (airlight_floor(hazy, t) < 0.9).all()
        assert airlight_floor(torch.ones(1, 3, 8, 8), torch.full((1, 1, 8, 8), 0.5)).isneginf().all()


class TestCheckImage:
    def test_valid_passes(self):
        check_image(torch.rand(2, 3, 4, 5))
        check_image(torch.rand(1, 1, 4, 5), channels=1)
        check_image(torch.rand(1, 7, 4, 5), channels=None)

    @pytest.mark.parametrize(
        "image, kwargs, match",
        [
            (torch.full((1, 3, 2, 2), float("nan")), {}, "NaN or Inf"),
            (torch.full((1, 3, 2, 2), float("inf")), {}, "NaN or Inf"),
            (torch.full((1, 3, 2, 2), 1.5), {}, r"must lie in \[0, 1\]"),
            (torch.full((1, 3, 2, 2), -0.01), {}, r"must lie in \[0, 1\]"),
            (torch.rand(3, 2, 2), {}, "N x C x H x W"),
            (torch.rand(1, 1, 3, 2, 2), {}, "N x C x H x W"),
            (torch.rand(1, 1, 2, 2), {}, "must have 3 channels, got 1"),
            (torch.zeros(1, 3, 2, 2, dtype=torch.uint8), {}, "floating-point"),
            (torch.rand(1, 3, 0, 2), {}, "empty"),
        ],
    )
    def test_errors(self, image, kwargs, match):
        with pytest.raises(ValueError, match=match):
            check_image(image, **kwargs)

    def test_name_in_message_and_type_error(self):
        with pytest.raises(ValueError, match="hazy contains NaN"):
            check_image(torch.full((1, 3, 2, 2), float("nan")), "hazy")
        with pytest.raises(TypeError, match="must be a torch.Tensor"):
            check_image(np.zeros((1, 3, 2, 2)))

    def test_add_haze_checks_clear(self):
        with pytest.raises(ValueError, match="clear contains NaN"):
            add_haze(torch.full((1, 3, 2, 2), float("nan")), torch.ones(1, 1, 2, 2), 0.8)


class TestFitHazeModel:
    """Recovering A and t from a pair rendered with the scattering model (re-rendered training haze)."""

    def _render(self, a: float = 0.85, n: int = 2, size: int = 32):
        gen = torch.Generator().manual_seed(0)
        clear = torch.rand(n, 3, size, size, generator=gen) * 0.6  # clear colours well away from A
        t = 0.2 + 0.8 * torch.rand(n, 1, size, size, generator=gen)
        return add_haze(clear, t, a), clear, t

    def test_recovers_airlight_and_transmission(self):
        hazy, clear, t = self._render(a=0.85)
        a, t_hat, fit_db = fit_haze_model(hazy, clear)
        assert a.shape == (2, 3, 1, 1) and t_hat.shape == (2, 1, 32, 32)
        assert torch.allclose(a, torch.full_like(a, 0.85), atol=1e-4)
        assert (t_hat - t).abs().max().item() < 1e-3
        assert (fit_db > 80).all()

    def test_candidate_grid(self):
        hazy, clear, _ = self._render(a=0.95)
        a, _, _ = fit_haze_model(hazy, clear, airlights=torch.tensor([0.7, 0.95]))
        assert torch.allclose(a, torch.full_like(a, 0.95))

    def test_pair_outside_the_model_fits_poorly(self):
        # a hue shift cannot be written as J t + A (1 - t) with a grey A
        hazy, clear, _ = self._render()
        fit_db = fit_haze_model(hazy[:, [1, 2, 0]], clear)[2]
        assert (fit_db < 30).all()

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="differ in shape"):
            fit_haze_model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))

    def test_transmission_under_a_tinted_airlight(self):
        # I = J t + A (1 - t) rendered in NumPy with a yellow A: t recovered where J is away from A,
        # and the contrast is sum_c (J_c - A_c)^2
        rng = np.random.default_rng(4)
        clear = rng.uniform(0, 0.6, (2, 3, 16, 16))
        t = rng.uniform(0.1, 1.0, (2, 1, 16, 16))
        a = np.array([0.9, 0.8, 0.5]).reshape(1, 3, 1, 1)
        hazy = clear * t + a * (1 - t)
        t_hat, contrast = transmission_of(*(torch.from_numpy(v) for v in (hazy, clear, a)))
        np.testing.assert_allclose(contrast.numpy(), ((clear - a) ** 2).sum(1, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(t_hat.numpy(), t, atol=1e-6)
