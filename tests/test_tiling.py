"""Tiled dehazing (hazefree.tiling, the tiled routes of hazefree.pipeline) and --workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hazefree import cli, models
from hazefree.api import Dehazer
from hazefree.io import read_image, write_image
from hazefree.pipeline import FileOptions, Job, dehaze_file, run_jobs
from hazefree.tiling import (
    UNTILED_MAX_PIXELS,
    TiledDehazer,
    Window,
    auto_tile,
    block_mean_preview,
    plan_tiles,
    resize_window,
    run_tiles,
)


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A hazy-looking uint8 RGB scene with edges (so that the guided filter has work to do)."""
    rng = np.random.default_rng(seed)
    small = rng.random((6, 8, 3))
    base = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.NEAREST)) / 255.0
    depth = np.linspace(0.2, 0.9, w)[None, :, None]
    hazy = base * (1 - depth) + 0.85 * depth + rng.normal(0, 0.01, (h, w, 3))
    return np.clip(hazy * 255 + 0.5, 0, 255).astype(np.uint8)


def test_resize_window_matches_interpolate():
    x = torch.rand(1, 2, 13, 17)
    full = F.interpolate(x, size=(50, 61), mode="bilinear", align_corners=False)
    for window in (Window(0, 0, 50, 61), Window(7, 11, 20, 33), Window(49, 60, 1, 1)):
        part = resize_window(x, (50, 61), window)
        rows, cols = window.within(Window(0, 0, 50, 61))
        torch.testing.assert_close(part, full[..., rows, cols], atol=1e-6, rtol=0)


def test_plan_tiles_cover_once_and_auto_tile():
    cover = np.zeros((70, 45), int)
    for w in plan_tiles(70, 45, 32):
        cover[w.top : w.top + w.height, w.left : w.left + w.width] += 1
    assert (cover == 1).all()
    assert auto_tile(4000, 3000) == 0 and auto_tile(20000, 20000) % 256 == 0
    assert auto_tile(20000, 20000) <= 2048 + 255 and auto_tile(5000, 5000) > 0
    assert UNTILED_MAX_PIXELS >= 4000 * 3000


def test_block_mean_preview_matches_area_mean():
    x = np.random.default_rng(0).random((37, 50, 3)).astype(np.float32)
    read = lambda w: x[w.top : w.top + w.height, w.left : w.left + w.width]
    p = block_mean_preview(read, 37, 50, 4)
    assert p.shape == (1, 3, 10, 13)
    np.testing.assert_allclose(p[0, :, 2, 3].numpy(), x[8:12, 12:16].mean(axis=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(p[0, :, 9, 12].numpy(), x[36:, 48:].mean(axis=(0, 1)), atol=1e-6)


@pytest.mark.parametrize("method", ["dcp", "guided-pix2pix", "aod-net"])
def test_tiles_agree_with_whole(method):
    """Tile by tile (a small tile, so that there are many seams) gives the whole-image result."""
    hazy = torch.from_numpy(_scene(150, 190)).permute(2, 0, 1)[None].float() / 255
    dehazer = Dehazer(method)
    whole = dehazer(hazy).clear
    tiler = TiledDehazer(dehazer.model, (150, 190), hazy)
    out = torch.zeros_like(whole)

    def write(w, result):
        out[..., w.top : w.top + w.height, w.left : w.left + w.width] = result.clear

    def read(w):
        return hazy[..., w.top : w.top + w.height, w.left : w.left + w.width]

    run_tiles(tiler, read, write, 64)
    diff = (out - whole).abs()
    if method == "aod-net":  # a model without a tiled form: blended tiles, close but not exact
        assert diff.mean() < 1 / 255 and tiler.blend
    else:
        assert diff.max() < 1e-4 and not tiler.blend


@pytest.mark.parametrize("floor", [None, 0.01])
def test_guided_pix2pix_working_size_is_global(floor):
    """Above the working size the U-Net sees the whole image once; tiles apply its coefficients
    (and its airlight, raised to the floor of the working-size image if set)."""
    model = models.load("guided-pix2pix", work_size=64, airlight_floor=floor)
    hazy = torch.from_numpy(_scene(120, 160, seed=3)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = model(hazy)
    tiler = TiledDehazer(model, (120, 160), hazy)
    grown = core = Window(40, 50, 30, 70)
    part = tiler(hazy[..., 40:70, 50:120], grown, core)
    torch.testing.assert_close(part.clear, whole.clear[..., 40:70, 50:120], atol=1e-5, rtol=0)
    torch.testing.assert_close(part.transmission, whole.transmission[..., 40:70, 50:120], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("method", ["dcp", "guided-pix2pix"])
def test_cli_tile_option_agrees_within_one_level(tmp_path, capsys, ext, method):
    src = tmp_path / f"x{ext}"
    Image.fromarray(_scene(140, 200, seed=1)).save(src, **({"quality": 95} if ext == ".jpg" else {}))
    results = {}
    for tile in ("0", "64"):
        out = tmp_path / f"out{tile}"
        code = cli.main(["dehaze", str(src), "-o", str(out), "--method", method, "--tile", tile,
                         "--save-transmission"])
        assert code == 0, capsys.readouterr().err
        results[tile] = read_image(out / src.name).rgb
        assert (out / "x_transmission.png").is_file()
    diff = (results["0"] - results["64"]).abs()
    # a one-level difference before encoding can come out of JPEG's block transform as two or three
    worst = 3.5 if ext == ".jpg" else 1.5
    assert diff.mean() < 0.05 / 255 and diff.max() <= worst / 255


def test_tiled_keeps_16_bit_gray_and_alpha(tmp_path):
    rng = np.random.default_rng(0)
    gray = torch.from_numpy(_scene(90, 120)[:, :, :1].copy()).permute(2, 0, 1)[None].float() / 255
    alpha = torch.from_numpy(rng.integers(0, 65536, (1, 1, 90, 120)).astype(np.float32) / 65535)
    src = write_image(tmp_path / "g.png", gray, alpha=alpha, bit_depth=16, gray=True)
    for tile in (0, 32):
        job = Job(src, tmp_path / f"out{tile}" / "g.png")
        assert dehaze_file(Dehazer("dcp"), job, FileOptions(tile=tile)).tile == tile
        out = read_image(job.output)
        assert out.bit_depth == 16 and out.gray and torch.equal(out.alpha, alpha)
    a, b = (read_image(tmp_path / f"out{t}" / "g.png").rgb for t in (0, 32))
    assert (a - b).abs().max() <= 2 / 65535


def test_post_refused_for_tiles(tmp_path):
    src = tmp_path / "x.png"
    Image.fromarray(_scene(60, 80)).save(src)
    with pytest.raises(ValueError, match="--tile 0"):
        dehaze_file(Dehazer("dcp", post="rescale"), Job(src, tmp_path / "o.png"), FileOptions(tile=32))
    assert not (tmp_path / "o.png").exists()


def test_workers_give_identical_results_and_keep_error_handling(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(5):
        Image.fromarray(_scene(40 + 3 * i, 60, seed=i)).save(root / f"{i}.png")
    (root / "3.png").write_text("not a png")  # one bad file in the middle
    outputs = {}
    for workers in ("1", "3"):
        out = tmp_path / f"out{workers}"
        code = cli.main(["dehaze", str(root), "-o", str(out), "--method", "dcp", "--workers", workers])
        captured = capsys.readouterr()
        assert code == 1 and "4 dehazed, 1 failed, 0 skipped" in captured.out
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(root / "3.png") in errors[0] and "Traceback" not in captured.err
        outputs[workers] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(outputs["1"]) == ["0.png", "1.png", "2.png", "4.png"]
    assert outputs["1"] == outputs["3"]


def test_run_jobs_yields_in_order():
    jobs = [Job(Path(f"/nonexistent/{i}.png"), Path(f"/nonexistent/out/{i}.png")) for i in range(4)]
    seen = [(job, type(outcome).__name__) for job, outcome in run_jobs(Dehazer("dcp"), jobs, workers=2)]
    assert seen == [(job, "ImageReadError") for job in jobs]


def test_workers_usage_error(capsys, tmp_path):
    assert cli.main(["dehaze", str(tmp_path), "-o", str(tmp_path / "o"), "--workers", "0"]) == 2
