"""FADE (hazefree.metrics.fade) against the published reference values and slow direct ports of
its pieces (MATLAB conv2 'same', entropy, nanvar, the per-patch distance)."""

from __future__ import annotations

import csv
import fnmatch
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import convolve2d
from skimage.measure import shannon_entropy

import hazefree.metrics.fade as fade_module
from hazefree.io import ImageReadError, write_image
from hazefree.metrics.fade import FADE_MIN_SIZE, fade, fade_file, fade_pixels
from hazefree.physics import add_haze

from helpers import SHARED_DATA, truncated_png

REPO = Path(__file__).resolve().parents[1]
REFERENCE = SHARED_DATA.parent / "fade" / "reference_values.tsv"
# The reference README: an implementation that follows FADE.m agrees to about 1e-3 relative (flat
# or clipped regions make the last digits depend on floating-point order); we hold 2e-3.
REFERENCE_RTOL = 2e-3


def _reference_rows() -> list[tuple[str, float]]:
    if not REFERENCE.is_file():
        return []
    with open(REFERENCE, encoding="utf-8", newline="") as f:
        return [(row["file"], float(row["fade"])) for row in csv.DictReader(f, delimiter="\t")]


def _scene(size: int = 128, seed: int = 0) -> torch.Tensor:
    """A 1 x 3 x size x size clear scene: smooth colours plus fine texture."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((12, 12, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    clear = np.clip(0.7 * base + 0.3 * rng.random((size, size, 1)), 0, 1)
    return torch.from_numpy(clear).permute(2, 0, 1)[None].float()


class TestReferenceValues:
    @pytest.mark.skipif(not REFERENCE.is_file(), reason=f"../shared is absent: no {REFERENCE}")
    def test_table_is_complete(self):
        rows = _reference_rows()
        assert len(rows) >= 30
        missing = [name for name, _ in rows if not (SHARED_DATA / name).is_file()]
        assert not missing, f"reference images missing from {SHARED_DATA}: {missing}"

    @pytest.mark.slow
    @pytest.mark.skipif(not REFERENCE.is_file(), reason=f"../shared is absent: no {REFERENCE}")
    @pytest.mark.parametrize("name,expected", _reference_rows() or [("none", 0.0)])
    def test_matches_reference(self, name, expected):
        value = fade_file(SHARED_DATA / name)
        assert value == pytest.approx(expected, rel=REFERENCE_RTOL), name


# --- slow direct ports of FADE.m / CE.m pieces -------------------------------------------------


def _matlab_conv2_same(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB conv2(a, k, 'same'): the full convolution from index floor(size(k) / 2) on."""
    full = convolve2d(a, k, mode="full")
    r0, c0 = k.shape[0] // 2, k.shape[1] // 2
    return full[r0 : r0 + a.shape[0], c0 : c0 + a.shape[1]]


def test_matlab_conv2_same_helper_matches_matlab_documentation():
    # MATLAB's conv documentation: conv([-1 2 3 -2 0 1 2], [2 4 -1 1], 'same') = [15 5 -9 7 6 7 -1]
    got = _matlab_conv2_same(np.array([[-1, 2, 3, -2, 0, 1, 2]], float), np.array([[2, 4, -1, 1]], float))
    np.testing.assert_array_equal(got[0], [15, 5, -9, 7, 6, 7, -1])


def _ce_reference(rgb: np.ndarray) -> np.ndarray:
    """CE.m line by line (border_in, conv2 'same', border_out), one channel at a time."""
    sigma = 3.25
    x = np.arange(-3 * sigma, 3 * sigma + 1e-9, 1.0)  # -9.75:1:9.75 -> 20 taps, last 9.25
    gauss = 1 / (np.sqrt(2 * np.pi) * sigma) * np.exp(x**2 / (-2 * sigma * sigma))
    gauss = gauss / gauss.sum()
    gx = (x**2 / sigma**4 - 1 / sigma**2) * gauss
    gx = gx - gx.sum() / x.size
    gx = gx / np.sum(0.5 * x * x * gx)
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    out = []
    for chan, t in (
        (0.299 * r + 0.587 * g + 0.114 * b, 9.225496406318721e-004 * 255),
        (0.5 * r + 0.5 * g - b, 8.969246659629488e-004 * 255),
        (r - g, 2.069284034165411e-004 * 255),
    ):
        grown = np.vstack([chan[:10], chan, chan[-10:]])  # border_in(., 20): uc = 10, dc = 9
        grown = np.hstack([grown[:, :10], grown, grown[:, -10:]])
        cx = _matlab_conv2_same(grown, gx[None, :])
        cy = _matlab_conv2_same(grown, gx[:, None])
        c = np.sqrt(cx**2 + cy**2)[10:-10, 10:-10]  # border_out
        resp = (c * c.max()) / (c + c.max() * 0.1) - t
        out.append(np.where(resp > 1e-7, resp, 0.0))
    return np.stack(out, axis=-1)


def test_contrast_energy_matches_ce_m():
    rgb = (_scene(48).squeeze(0).permute(1, 2, 0).double().numpy() * 255).round()
    rgb[:, 20:] = rgb[:, 20:][:, ::-1]  # an edge: the 20-tap LoG is asymmetric, so its centre tap must be right
    got = fade_module._contrast_energy(rgb)
    np.testing.assert_allclose(got, _ce_reference(rgb), rtol=1e-10, atol=1e-10)


def test_entropy_matches_shannon_entropy():
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, (50, 64), dtype=np.uint8)
    patches[:10] = rng.integers(100, 104, (10, 64))  # few distinct values
    patches[10] = 7  # a flat patch: entropy 0
    expected = [shannon_entropy(p, base=2) for p in patches]
    np.testing.assert_allclose(fade_module._entropy(patches), expected, rtol=1e-12, atol=1e-12)


def test_nanvar_follows_matlab():
    x = np.array([[1.0, 2.0, 4.0, np.nan], [3.0, np.nan, np.nan, np.nan], [np.nan] * 4])
    got = fade_module._nanvar(x)
    assert got[0] == pytest.approx(np.var([1.0, 2.0, 4.0], ddof=1))
    assert got[1] == 0.0  # one value: variance 0, not NaN
    assert np.isnan(got[2])  # no value


def test_distance_matches_direct_solve():
    rng = np.random.default_rng(2)
    feat = rng.random((40, 12))
    spread = np.var(feat, axis=1, ddof=1)
    for model in fade_module._models():
        got = fade_module._distances(feat, model, spread)
        for p in range(len(feat)):
            m = model.mu - feat[p]
            cov = (spread[p] * np.ones((12, 12)) + model.cov) / 2  # FADE.m's cov_matrix block
            assert got[p] == pytest.approx(np.sqrt(m @ np.linalg.solve(cov, m)), rel=1e-9)


def test_gray_coefficients_are_matlab_rgb2gray():
    ntsc = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    np.testing.assert_allclose(fade_module._GRAY, np.linalg.inv(ntsc)[0], rtol=1e-13)


def test_mscn_window_is_fspecial():
    x = np.arange(-3, 4)
    h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(fade_module._mscn_window(), h / h.sum(), rtol=1e-14)


# --- behaviour on self-made images ---------------------------------------------------------------


def test_more_haze_scores_higher():
    clear = _scene()
    ts = (1.0, 0.8, 0.6, 0.4, 0.2)
    hazy = torch.cat([add_haze(clear, torch.full((1, 1, 128, 128), t), 0.9) for t in ts])
    scores = fade(hazy)
    assert torch.all(scores[1:] > scores[:-1]), scores
    assert scores[-1] > 2 * scores[0]


def test_shape_dtype_and_batch_order():
    a, b = _scene(seed=3), add_haze(_scene(seed=4), torch.full((1, 1, 128, 128), 0.4), 0.8)
    both = fade(torch.cat([a, b]))
    assert both.shape == (2,) and both.dtype == torch.float64
    assert torch.isfinite(both).all() and (both > 0).all()
    assert both.tolist() == [fade(a).item(), fade(b).item()]


def test_scores_the_saved_file(tmp_path):
    """fade() quantises as the image writer does, so a saved PNG read back scores the same."""
    x = add_haze(_scene(96, seed=5), torch.full((1, 1, 96, 96), 0.5), 0.85)
    x = x + 0.5 / 255 * (torch.rand_like(x) - 0.5)  # values between levels: rounding matters
    path = tmp_path / "scene.png"
    write_image(path, x.clamp(0, 1))
    assert fade(x.clamp(0, 1)).item() == fade_file(path)


def test_crops_to_multiple_of_eight():
    rgb = (_scene(45).squeeze(0).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    res = fade_pixels(rgb)
    assert res.density_map.shape == (5, 5)
    assert res.density == fade_pixels(np.ascontiguousarray(rgb[:40, :40])).density
    assert res.density == pytest.approx(res.df / (res.dff + 1))


def test_black_patches_are_left_out():
    """0 / 0 coefficient of variation in a black region: those patches drop out (nanmean)."""
    rgb = (_scene(64).squeeze(0).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    rgb[:24] = 0
    res = fade_pixels(rgb)
    assert np.isfinite(res.density)
    assert np.isnan(res.density_map[:2]).all() and np.isfinite(res.density_map[4:]).all()


class TestBadInput:
    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="torch tensor"):
            fade(np.zeros((1, 3, 32, 32)))

    def test_wrong_channels(self):
        with pytest.raises(ValueError, match="N x 3 x H x W"):
            fade(torch.zeros(1, 1, 32, 32))

    def test_integer_tensor(self):
        with pytest.raises(TypeError, match="floating-point"):
            fade(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))

    def test_nan(self):
        x = torch.zeros(1, 3, 32, 32)
        x[0, 0, 3, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            fade(x)

    def test_too_small(self):
        with pytest.raises(ValueError, match=f"at least {FADE_MIN_SIZE}"):
            fade(torch.zeros(1, 3, 15, 64))

    def test_pixels_not_uint8(self):
        with pytest.raises(TypeError, match="uint8"):
            fade_pixels(np.zeros((32, 32, 3)))

    def test_truncated_file_named(self, tmp_path):
        path = tmp_path / "cut.png"
        path.write_bytes(truncated_png())
        with pytest.raises(ImageReadError, match="cut.png"):
            fade_file(path)

    def test_small_file_named(self, tmp_path):
        path = tmp_path / "tiny.png"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
        with pytest.raises(ImageReadError, match="tiny.png.*at least 16"):
            fade_file(path)


def test_model_files_ship_with_copyright_and_load_lazily():
    data = REPO / "hazefree" / "metrics" / "fade_data"
    names = ["natural_fogfree_image_features_ps8.mat", "natural_foggy_image_features_ps8.mat", "COPYRIGHT.txt"]
    for name in names:
        assert (data / name).is_file(), name
    assert "University of Texas at Austin" in (data / "COPYRIGHT.txt").read_text(encoding="utf-8")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"
    ]["hazefree"]
    for name in names:
        assert any(fnmatch.fnmatch(f"metrics/fade_data/{name}", g) for g in globs), f"{name} not in package-data"
    code = (
        "import sys, hazefree.metrics, hazefree.metrics.fade as f; "
        "print(f._models.cache_info().currsize, 'scipy.io' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["0", "False"]  # nothing read at import
