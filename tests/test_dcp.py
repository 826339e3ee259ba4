"""Dark Channel Prior dehazer: gains on real SOTS pairs and on generated haze, degenerate inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA as SHARED
from PIL import Image

from hazefree.metrics import psnr, ssim
from hazefree.models.dcp import DarkChannelPrior
from hazefree.physics import add_haze

SOTS = SHARED / "sots_indoor"
needs_shared = pytest.mark.skipif(not SOTS.is_dir(), reason="../shared/data/sots_indoor not available")


def _read(path: Path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


@pytest.fixture(scope="module")
def sots_results() -> dict[str, torch.Tensor]:
    """DCP (default settings) on all 10 SOTS-indoor pairs: per-pair PSNR/SSIM of hazy and of DCP."""
    if not SOTS.is_dir():
        pytest.skip("../shared/data/sots_indoor not available")
    model = DarkChannelPrior().eval()
    rows = []
    for path in sorted((SOTS / "hazy").glob("*.png")):
        hazy, clear = _read(path), _read(SOTS / "clear" / path.name)
        with torch.no_grad():
            out = model(hazy).clear
        assert out.shape == hazy.shape and torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
        rows.append([psnr(hazy, clear).item(), psnr(out, clear).item(), ssim(hazy, clear).item(), ssim(out, clear).item()])
    r = torch.tensor(rows, dtype=torch.float64)
    return {"psnr_hazy": r[:, 0], "psnr_dcp": r[:, 1], "ssim_hazy": r[:, 2], "ssim_dcp": r[:, 3]}


def _generated_scene(seed: int, h: int = 96, w: int = 128) -> torch.Tensor:
    """Blocky colour scene that obeys the dark channel prior (one channel near 0 in every block)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g)
    coarse = coarse - 0.95 * coarse.amin(dim=1, keepdim=True)
    return F.interpolate(coarse, size=(h, w), mode="nearest")


class TestDarkChannelPrior:
    @needs_shared
    def test_improves_psnr_on_sots(self, sots_results):
        # Measured (default settings, 10 pairs): gain +3.76 dB (1401_2) to +13.41 dB, mean +8.0 dB.
        gain = sots_results["psnr_dcp"] - sots_results["psnr_hazy"]
        assert gain.numel() == 10
        assert (gain > 3.0).all()
        assert gain.mean() > 7.0

    @needs_shared
    def test_improves_ssim_on_sots(self, sots_results):
        # Measured: +0.079 to +0.277 on every pair.
        assert (sots_results["ssim_dcp"] - sots_results["ssim_hazy"] > 0.05).all()

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_generated_haze(self, seed):
        # Depth grows towards the top, where t -> 0.05 shows the airlight, as in a sky region.
        clear = _generated_scene(seed)
        t = torch.linspace(0.05, 0.9, 96).view(1, 1, 96, 1).expand(1, 1, 96, 128)
        airlight = torch.tensor([0.85, 0.87, 0.9])
        hazy = add_haze(clear, t, airlight)
        with torch.no_grad():
            out = DarkChannelPrior(radius=20).eval()(hazy)
        # Measured over seeds 0-5: PSNR gain +4.8 to +5.4 dB, airlight error <= 0.045 per channel,
        # mean |t - t_true| 0.069-0.074 (omega = 0.95 keeps 5 % haze; t_min clips the top rows).
        assert psnr(out.clear, clear).item() - psnr(hazy, clear).item() > 4.0
        assert (out.airlight.flatten() - airlight).abs().max() < 0.06
        assert (out.transmission - t).abs().mean() < 0.1

    def test_output_fields(self):
        hazy = add_haze(_generated_scene(3, 40, 48), torch.full((1, 1, 40, 48), 0.6), 0.9)
        out = DarkChannelPrior(radius=8).eval()(torch.cat([hazy, hazy.flip(-1)]))
        assert out.clear.shape == (2, 3, 40, 48)
        assert out.transmission.shape == (2, 1, 40, 48) and out.coarse_transmission.shape == (2, 1, 40, 48)
        assert out.airlight.shape == (2, 3, 1, 1)
        assert out.transmission.min() >= 0 and out.transmission.max() <= 1

    @pytest.mark.parametrize(
        "image",
        [
            torch.rand(1, 3, 1, 1),
            torch.rand(1, 3, 2, 3),
            torch.rand(1, 3, 5, 1),
            torch.full((1, 3, 16, 16), 0.5),
            torch.zeros(1, 3, 16, 16),
            torch.ones(1, 3, 16, 16),
            torch.cat([torch.zeros(1, 3, 16, 8), torch.ones(1, 3, 16, 8)], dim=-1),
        ],
        ids=["1x1", "2x3", "5x1", "flat", "black", "white", "black_white"],
    )
    def test_degenerate_inputs_finite(self, image):
        with torch.no_grad():
            out = DarkChannelPrior().eval()(image)
        for t in (out.clear, out.transmission, out.airlight):
            assert torch.isfinite(t).all()
        assert out.clear.shape == image.shape
        assert out.clear.min() >= 0 and out.clear.max() <= 1

    @pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
    def test_flat_image_unchanged(self, value):
        # Grey or white: A = I, dark(I / A) = 1, t = 0.05 -> t_min 0.1, J = (I - A) / 0.1 + A = I.
        # Black: A is clamped to 1e-3, dark(I / A) = 0, t = 1, J = (0 - A) / 1 + A = 0.
        image = torch.full((1, 3, 12, 12), value)
        with torch.no_grad():
            out = DarkChannelPrior().eval()(image)
        assert (out.clear - value).abs().max() < 1e-6


def test_inference_path_equals_autograd_path():
    # Without a gradient DCP runs with fewer temporaries (dark channel by cv2.erode, in-place
    # steps, the guided filter's CPU kernels); with one, the plain torch expressions: same result.
    hazy = add_haze(_generated_scene(4, 64, 80), torch.linspace(0.2, 0.9, 80).expand(1, 1, 64, 80), 0.9)
    model = DarkChannelPrior(radius=12).eval()
    with torch.no_grad():
        fast = model(hazy)
    slow = model(hazy.clone().requires_grad_(True))
    for name in ("clear", "transmission", "airlight", "coarse_transmission"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name).detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_steps_equal_torch_ops(dtype, monkeypatch):
    # DCP's CPU inference runs its elementwise steps as kernel passes: the same operations
    from hazefree.ops import _cpu_kernels
    from hazefree.physics import remove_haze

    monkeypatch.setattr(_cpu_kernels(), "_MIN_PIXELS_PER_THREAD", 256)  # several bands of rows

    g = torch.Generator().manual_seed(0)
    hazy = torch.rand(2, 3, 33, 47, generator=g, dtype=dtype)
    t = torch.rand(2, 1, 33, 47, generator=g, dtype=dtype)
    a = torch.rand(2, 3, 1, 1, generator=g, dtype=dtype) * 0.5 + 0.5
    got = _cpu_kernels().recover(hazy.numpy(), t.numpy(), a.reshape(2, 3).numpy(), 0.1, threads=3)
    assert torch.equal(torch.from_numpy(got), remove_haze(hazy, t, a, t_min=0.1))
    # and the guide and the min over channels of I / A, as rgb_to_gray and (I / A).amin(1) give them
    luma = np.array([0.299, 0.587, 0.114], dtype=hazy.numpy().dtype)
    gray, scaled_min = _cpu_kernels().gray_and_scaled_min(hazy.numpy(), luma, a.reshape(2, 3).numpy(), threads=3)
    assert torch.equal(torch.from_numpy(gray), (hazy * torch.from_numpy(luma).view(1, 3, 1, 1)).sum(1, keepdim=True))
    assert torch.equal(torch.from_numpy(scaled_min), (hazy / a).amin(dim=1, keepdim=True))
