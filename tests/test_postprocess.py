"""Tests for hazefree.postprocess: GP2P-Rescale and GP2P-Retinex (Ma et al. 2021, eqs. 47-50).

References: scipy's ``gaussian_filter`` in constant mode, normalised by the filtered ones (the
edge-renormalised Gaussian), and a direct float64 transcription of eqs. 47-50 written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from hazefree import Dehazer, cli, dehaze
from hazefree.io import read_image
from hazefree.postprocess import gaussian_blur, get_post, rescale, retinex


def _image(n: int = 1, h: int = 40, w: int = 56, seed: int = 0, lo: float = 0.0, hi: float = 1.0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth random image (a gradient plus noise) with values in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w) * torch.rand(n, 3, 1, 1, generator=g)
    x = x + 0.3 * torch.rand(n, 3, h, w, generator=g)
    lo_x, hi_x = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo_x) / (hi_x - lo_x)
    return (lo + (hi - lo) * x).to(dtype)


def _reference_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """C x H x W float64: scipy's Gaussian (truncated at 4 sigma) over the pixels inside the image."""
    ones = gaussian_filter(np.ones(x.shape[1:]), sigma, mode="constant", truncate=4.0)
    return np.stack([gaussian_filter(c, sigma, mode="constant", truncate=4.0) for c in x]) / ones


def _reference_retinex(x: np.ndarray, sigmas, weights, dynamic: float) -> np.ndarray:
    """Eqs. 47-50 in float64 for one C x H x W image."""
    eps = 1.0 / 255.0
    r = sum(w * (np.log(x + eps) - np.log(_reference_blur(x, s) + eps)) for s, w in zip(sigmas, weights))
    lo, hi = r.mean() - dynamic * r.std(), r.mean() + dynamic * r.std()
    return np.clip((r - lo) / (hi - lo), 0.0, 1.0)


class TestRescale:
    def test_stretches_to_full_range(self):
        x = _image(lo=0.2, hi=0.7)
        y = rescale(x)
        assert y.min().item() == 0.0 and y.max().item() == 1.0
        # linear: (x - 0.2) / 0.5, with one range for the three channels
        torch.testing.assert_close(y, (x - 0.2) / 0.5, atol=1e-6, rtol=0)

    def test_identity_on_full_range_image(self):
        x = _image(lo=0.0, hi=1.0)
        assert x.min().item() == 0.0 and x.max().item() == 1.0
        assert torch.equal(rescale(x), x)

    def test_constant_image_unchanged(self):
        x = torch.full((2, 3, 8, 9), 0.37)
        assert torch.equal(rescale(x), x)

    def test_per_image_in_a_batch(self):
        a, b = _image(seed=1, lo=0.1, hi=0.5), _image(seed=2, lo=0.4, hi=0.9)
        y = rescale(torch.cat([a, b]))
        torch.testing.assert_close(y, torch.cat([rescale(a), rescale(b)]))
        assert y.shape == (2, 3, 40, 56) and y.dtype == torch.float32

    def test_joint_range_keeps_colour_balance_per_channel_does_not(self):
        x = _image(lo=0.2, hi=0.6)
        x[:, 2] = x[:, 2] * 0.5 + 0.2  # blue spans less than the other channels
        joint, separate = rescale(x), rescale(x, per_channel=True)
        assert joint[:, 2].max() < 1.0
        assert torch.allclose(separate.amax(dim=(2, 3)), torch.ones(1, 3))
        assert torch.allclose(separate.amin(dim=(2, 3)), torch.zeros(1, 3))

    def test_unclipped_estimate_is_mapped_into_range(self):
        x = _image(lo=-0.3, hi=1.4, dtype=torch.float64)
        y = rescale(x)
        assert y.dtype == torch.float64 and y.min() == 0 and y.max() == 1

    @pytest.mark.parametrize("bad, message", [
        (torch.rand(3, 8, 8), "N x 3 x H x W"),
        (torch.rand(1, 1, 8, 8), "N x 3 x H x W"),
        (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    ])
    def test_errors(self, bad, message):
        with pytest.raises(ValueError, match=message):
            rescale(bad)


class TestGaussianBlur:
    @pytest.mark.parametrize("sigma", [0.8, 3.0, 15.0, 80.0, 250.0])
    def test_matches_edge_normalised_reference(self, sigma):
        # sigma 80 and 250 exceed this image: the truncation at the image size must be exact
        x = _image(h=37, w=61, dtype=torch.float64)
        ref = _reference_blur(x[0].numpy(), sigma)
        np.testing.assert_allclose(gaussian_blur(x, sigma)[0].numpy(), ref, rtol=0, atol=1e-12)

    def test_constant_stays_constant_float32(self):
        y = gaussian_blur(torch.full((1, 3, 300, 200), 0.25), 250.0)
        assert (y - 0.25).abs().max() < 1e-6  # float32 FFT rounding only

    def test_bad_sigma(self):
        with pytest.raises(ValueError, match="sigma"):
            gaussian_blur(torch.rand(1, 3, 8, 8), 0.0)


class TestRetinex:
    def test_matches_float64_transcription_of_eqs_47_to_50(self):
        x = _image(h=48, w=64, seed=3, dtype=torch.float64)
        ours = retinex(x, sigmas=(2.0, 8.0, 30.0), dynamic=1.5)[0].numpy()
        ref = _reference_retinex(x[0].numpy(), (2.0, 8.0, 30.0), (1 / 3, 1 / 3, 1 / 3), 1.5)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)

    def test_paper_defaults_range_shape_dtype(self):
        for dtype in (torch.float32, torch.float64):
            x = _image(n=2, h=33, w=47, dtype=dtype)
            y = retinex(x)
            assert y.shape == x.shape and y.dtype == dtype
            assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
            # eqs. 48-50 put the mean of r at 0.5 and +-d_r sigma at 0 and 1: both ends are reached
            assert (y == 0).any() and (y == 1).any()

    @pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
    def test_constant_image_is_finite_and_constant(self, value):
        y = retinex(torch.full((2, 3, 20, 30), value))
        assert torch.isfinite(y).all() and torch.equal(y, torch.full_like(y, 0.5))

    def test_smaller_dynamic_clips_more(self):
        x = _image(seed=4)
        outputs = [retinex(x, dynamic=d) for d in (0.8, 2.0)]
        clipped = [((y == 0) | (y == 1)).float().mean() for y in outputs]
        assert clipped[0] > clipped[1]

    def test_images_of_a_batch_are_independent(self):
        a, b = _image(seed=5), _image(seed=6, lo=0.2, hi=0.6)
        torch.testing.assert_close(retinex(torch.cat([a, b])), torch.cat([retinex(a), retinex(b)]))

    def test_custom_weights(self):
        x = _image(seed=7, dtype=torch.float64)
        one_scale = retinex(x, sigmas=(5.0,))
        weighted = retinex(x, sigmas=(5.0, 40.0), weights=(1.0, 0.0))
        torch.testing.assert_close(one_scale, weighted)

    @pytest.mark.parametrize("kwargs, message", [
        ({"weights": (0.5,)}, "1 weights for 3 sigmas"),
        ({"dynamic": 0.0}, "dynamic"),
        ({"sigmas": ()}, "sigmas"),
    ])
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            retinex(_image(), **kwargs)

    def test_values_outside_unit_range_refused(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            retinex(_image(lo=-0.1, hi=1.0))


class TestWiring:
    def test_dehazer_post_applies_after_the_method(self):
        x = _image(seed=8, lo=0.3, hi=0.9)
        plain = Dehazer("dcp")(x).clear
        torch.testing.assert_close(Dehazer("dcp", post="retinex")(x).clear, retinex(plain))
        torch.testing.assert_close(dehaze(x[0], method="dcp", post="rescale").clear, rescale(plain)[0])

    def test_unknown_post(self):
        with pytest.raises(ValueError, match="unknown post-processing 'gamma'"):
            Dehazer("dcp", post="gamma")
        assert get_post(None) is None and get_post("rescale") is rescale

    def test_cli_dehaze_post(self, tmp_path, capsys):
        pixels = (_image(seed=9, h=30, w=40, lo=0.35, hi=0.85)[0].permute(1, 2, 0).numpy() * 255).round()
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
        code = cli.main(["dehaze", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--method", "dcp",
                         "--post", "retinex"])
        assert code == 0 and "post-processing: retinex" in capsys.readouterr().out
        written = read_image(tmp_path / "out" / "a.png").rgb
        expected = retinex(Dehazer("dcp")(read_image(tmp_path / "a.png").rgb).clear)
        assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only

    def test_cli_rejects_unknown_post(self, tmp_path, capsys):
        code = cli.main(["dehaze", str(tmp_path), "-o", str(tmp_path / "o"), "--post", "sharpen"])
        assert code == 2 and "invalid choice" in capsys.readouterr().err
