"""The strength control (issue #24): t' = t^S recomposed with the method's own A and t_min."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hazefree import Dehazer, cli
from hazefree import dehaze as api_dehaze
from hazefree.physics import add_haze
from hazefree.strength import StrengthError, check_strength, recompose

SAMPLES = Path(__file__).resolve().parents[1] / "hazefree" / "samples"


def _numpy_recompose(hazy, t, a, t_min, s):
    """(I - A) / max(max(t, t_min)^S, t_min) + A, clipped: an independent float64 NumPy reference."""
    hazy, t, a = (np.asarray(v, np.float64) for v in (hazy, t, a))
    t2 = np.maximum(np.power(np.maximum(t, t_min), s), t_min)
    return np.clip((hazy - a) / t2 + a, 0.0, 1.0)


def _hazy_scene(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """A textured scene with haze that thickens to the right, rendered by the scattering model."""
    g = torch.Generator().manual_seed(seed)
    clear = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
    clear = (clear + 0.15 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)
    t = torch.linspace(0.9, 0.2, w).view(1, 1, 1, w).expand(1, 1, h, w)
    return add_haze(clear, t, torch.tensor([0.85, 0.87, 0.9]))


def _png(path: Path, image: torch.Tensor) -> Path:
    pixels = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("s", [0.0, 0.3, 1.0, 1.7, 3.0])
def test_recompose_matches_numpy(s):
    rng = np.random.default_rng(int(s * 10))
    hazy = rng.random((2, 3, 17, 23))
    t = rng.random((2, 1, 17, 23))  # includes values below t_min
    a = rng.uniform(0.5, 1.0, (2, 3, 1, 1))
    got = recompose(*(torch.from_numpy(v) for v in (hazy, t, a)), 0.1, s).numpy()
    np.testing.assert_allclose(got, _numpy_recompose(hazy, t, a, 0.1, s), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dcp", "guided-pix2pix"])
def test_dehazer_strength_is_the_recomposition_of_its_own_t_and_a(method):
    hazy = _hazy_scene()
    own = Dehazer(method)(hazy)
    t_min = Dehazer(method).model.t_min
    for s in (0.5, 1.5):
        got = Dehazer(method, strength=s)(hazy).clear.numpy()
        want = _numpy_recompose(hazy.numpy(), own.transmission.numpy(), own.airlight.numpy(), t_min, s)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # S = 1 is the method's own result, bit for bit, and S > 1 removes more haze than S = 1
    assert torch.equal(Dehazer(method, strength=1.0)(hazy).clear, own.clear)
    assert api_dehaze(hazy, method, strength=1.5).clear.mean() < own.clear.mean()


def test_cli_strength_zero_returns_the_input_and_one_changes_nothing(capsys, tmp_path):
    source = _png(tmp_path / "scene.png", _hazy_scene())
    for method in ("dcp", "guided-pix2pix"):
        runs = {"zero": ["--strength", "0"], "one": ["--strength", "1"], "none": []}
        for name, extra in runs.items():
            code = cli.main(["dehaze", str(source), "-o", str(tmp_path / method / name), "--method", method, *extra])
            assert code == 0, capsys.readouterr().err
        out = {name: tmp_path / method / name / "scene.png" for name in runs}
        assert np.abs(_pixels(out["zero"]) - _pixels(source)).max() <= 1
        assert out["one"].read_bytes() == out["none"].read_bytes()
        assert np.abs(_pixels(out["none"]) - _pixels(source)).mean() > 5  # the method does dehaze


@pytest.mark.parametrize("method", ["dcp", "guided-pix2pix"])
def test_tiles_recompose_like_the_whole_image(capsys, tmp_path, method):
    source = _png(tmp_path / "scene.png", _hazy_scene(150, 200, seed=3))
    for tile in ("0", "64"):
        code = cli.main(["dehaze", str(source), "-o", str(tmp_path / tile), "--method", method,
                         "--strength", "1.8", "--tile", tile])
        assert code == 0, capsys.readouterr().err
    whole, tiled = _pixels(tmp_path / "0" / "scene.png"), _pixels(tmp_path / "64" / "scene.png")
    plain = Dehazer(method)(torch.from_numpy(_pixels(source)).permute(2, 0, 1)[None].float() / 255)
    assert np.abs(whole - tiled).max() <= 1
    assert np.abs(tiled / 255.0 - plain.clear[0].permute(1, 2, 0).numpy()).mean() > 0.01  # S took effect


def test_refusals(capsys, tmp_path):
    source = _png(tmp_path / "scene.png", _hazy_scene(32, 32))
    out = tmp_path / "out"
    code = cli.main(["dehaze", str(source), "-o", str(out), "--method", "aod-net", "--strength", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "method 'aod-net' cannot take a strength" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    for bad in ("-1", "nan", "inf", "strong"):
        code = cli.main(["dehaze", str(source), "-o", str(out), "--method", "dcp", f"--strength={bad}"])
        err = capsys.readouterr().err
        assert code == 2 and "--strength" in err and repr(bad) in err, err
    # aod-net at the default strength still works; the API refuses as the command line does
    assert cli.main(["dehaze", str(source), "-o", str(out), "--method", "aod-net"]) == 0
    with pytest.raises(ValueError, match="method 'aod-net' cannot take a strength"):
        Dehazer("aod-net", strength=2.0)
    for bad in (-0.5, math.nan, math.inf, "1", None, True):
        with pytest.raises(StrengthError, match="strength must be"):
            check_strength(bad)


def test_fade_falls_with_strength_on_the_sample_photos():
    """FADE (lower = clearer; hazefree.metrics.fade) falls from S = 0.5 through 1 to 1.5 for the
    default model on every photo in hazefree/samples."""
    from hazefree.io import read_image
    from hazefree.metrics.fade import fade

    photos = sorted(SAMPLES.glob("*.jpg"))
    assert photos
    for photo in photos:
        hazy = read_image(photo).rgb
        own = Dehazer()(hazy)
        t_min = Dehazer().model.t_min
        scores = [fade(recompose(hazy, own.transmission, own.airlight, t_min, s))[0].item() for s in (0.5, 1.0, 1.5)]
        assert scores[0] > scores[1] > scores[2], (photo.name, scores)
