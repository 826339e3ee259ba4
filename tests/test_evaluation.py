"""Tests for hazefree.evaluation and ``hazefree eval``: scores against scikit-image, CSV, protocol
switches, dataset layouts and errors, ``folder:`` methods, grids, the no-reference haze density,
and the results script (benchmarks/results.py) on a tiny synthetic data root.

Fixtures are small generated images; real images are read from ../shared/data when present.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hazefree import Dehazer, cli
from hazefree.evaluation import (
    GRID_CAPTION,
    GRID_GAP,
    GRID_MAX_ROWS,
    EvalMethod,
    Protocol,
    Tile,
    evaluate,
    haze_density,
    make_grid,
    open_dataset,
    resolve_method,
    write_grid,
)
from hazefree.io import read_image
from hazefree.metrics import psnr
from hazefree.physics import add_haze

REPO = Path(__file__).resolve().parents[1]
H, W = 48, 64


def _clear(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A textured clear scene as H x W x 3 uint8 within [25, 205] (room for +-offsets)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.45 + 0.3 * (np.sin(xx / (3 + seed)) * np.cos(yy / 5))[..., None] * rng.uniform(0.5, 1, 3)
    pix = np.clip(base + rng.normal(0, 0.05, (h, w, 3)), 0.1, 0.8)
    return np.round(pix * 255).astype(np.uint8)


def _hazy_of(clear: np.ndarray, t: float = 0.5, a: float = 0.9) -> np.ndarray:
    j = torch.from_numpy(clear).permute(2, 0, 1)[None].float() / 255
    hazy = add_haze(j, torch.full((1, 1, *clear.shape[:2]), t), a)
    return np.round(hazy[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def paired(tmp_path) -> Path:
    """pairs/hazy/{a,b,c}.png + pairs/clear/{a,b,c}.png (identical names)."""
    root = tmp_path / "pairs"
    for seed, name in enumerate("abc"):
        c = _clear(seed)
        _save(root / "clear" / f"{name}.png", c)
        _save(root / "hazy" / f"{name}.png", _hazy_of(c, t=0.4 + 0.1 * seed))
    return root


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/hazy/{p,q}.png: hazy images without ground truth."""
    root = tmp_path / "photos"
    for seed, name in enumerate("pq"):
        _save(root / "hazy" / f"{name}.png", _hazy_of(_clear(seed + 5), t=0.4))
    return root


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _offset_outputs(dataset: Path, out: Path, offset: int, border: int | None = None) -> None:
    """Outputs = ground truth + ``offset`` grey levels (no clipping within [25, 205]); with
    ``border``, the outer ``border`` pixels are set to black."""
    for gt in sorted((dataset / "clear").iterdir()):
        pix = np.asarray(Image.open(gt)).astype(np.int32) + offset
        if border:
            pix[:border], pix[-border:], pix[:, :border], pix[:, -border:] = 0, 0, 0, 0
        _save(out / gt.name, pix.astype(np.uint8))


# ------------------------------------------------------------------------------ scores and CSV


class TestScores:
    def test_csv_header_and_rows(self, capsys, paired, photos, tmp_path):
        code, stdout, _ = _run(capsys, "eval", "--method", "dcp", "--data", f"{paired},{photos}",
                               "--csv", str(tmp_path / "s.csv"))
        assert code == 0
        lines = (tmp_path / "s.csv").read_text().splitlines()
        assert lines[0] == ("dataset,image,method,psnr,ssim,seconds,haze_input,haze_output,"
                            "fade_input,fade_output,clipped_input,clipped_output")
        rows = _read_csv(tmp_path / "s.csv")
        assert [(r["dataset"], r["image"], r["method"]) for r in rows] == [
            ("pairs", "a.png", "dcp"), ("pairs", "b.png", "dcp"), ("pairs", "c.png", "dcp"),
            ("photos", "p.png", "dcp"), ("photos", "q.png", "dcp")]
        for r in rows[:3]:
            assert 5 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) <= 1 and float(r["seconds"]) > 0
        for r in rows[3:]:  # no ground truth: empty full-reference cells, haze measured
            assert r["psnr"] == "" and r["ssim"] == "" and float(r["haze_output"]) < float(r["haze_input"])
        # mean and population std in the table equal those of the CSV
        p = np.array([float(r["psnr"]) for r in rows[:3]])
        assert f"| PSNR (dB) | {p.mean():.2f} ± {p.std():.2f} |" in stdout

    def test_evaluate_api_identity_method(self, paired):
        result = evaluate(paired, [EvalMethod.from_function("identity", lambda x: x)])
        hazy = read_image(paired / "hazy" / "a.png").rgb
        clear = read_image(paired / "clear" / "a.png").rgb
        assert result.rows[0].psnr == pytest.approx(psnr(hazy, clear).item(), abs=1e-9)
        assert result.dataset.paired and len(result.rows) == 3

    def test_matches_skimage_on_real_images(self, capsys, tmp_path):
        """CSV scores of dcp (in memory) and of its saved PNGs (folder:) equal scikit-image's."""
        data = SHARED_DATA / "rice1"
        if not (data / "hazy" / "10.png").is_file():
            pytest.skip("shared data not available")
        names = ["10.png", "14.png"]  # the first two by name: what --limit 2 scores
        code, _, _ = _run(capsys, "dehaze", *(str(data / "hazy" / n) for n in names), "-o", str(tmp_path / "out"),
                          "--method", "dcp")
        assert code == 0
        for protocol in ("rgb", "y"):
            csv_path = tmp_path / f"{protocol}.csv"
            code, _, err = _run(capsys, "eval", "--method", f"dcp,folder:{tmp_path / 'out'}", "--data", str(data),
                                "--limit", "2", "--protocol", protocol, "--csv", str(csv_path))
            assert code == 0, err
            rows = _read_csv(csv_path)
            assert len(rows) == 4
            for r in rows:
                out = np.asarray(Image.open(tmp_path / "out" / r["image"]).convert("RGB"))
                gt = np.asarray(Image.open(data / "clear" / r["image"]).convert("RGB"))
                if protocol == "y":  # skimage's rgb2ycbcr is MATLAB's: Y in [16, 235]
                    out, gt = rgb2ycbcr(out)[..., 0], rgb2ycbcr(gt)[..., 0]
                    axis = None
                else:
                    axis = 2
                ref_p = peak_signal_noise_ratio(gt, out, data_range=255)
                ref_s = structural_similarity(gt, out, channel_axis=axis, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=255)
                assert float(r["psnr"]) == pytest.approx(ref_p, abs=6e-5)  # CSV keeps 4 decimals
                assert float(r["ssim"]) == pytest.approx(ref_s, abs=6e-7)  # CSV keeps 6 decimals


# ---------------------------------------------------------------------------------- protocol


class TestProtocol:
    def test_y_channel_scores_grey_offset_higher_by_the_luma_range(self, capsys, paired, tmp_path):
        # A grey offset of 10 levels: RGB PSNR is 20 log10(255 / 10); luma (range 219 / 255) sees
        # 10 * 219 / 255, i.e. exactly 20 log10(255 / 219) = 1.32 dB more.
        _offset_outputs(paired, tmp_path / "off", 10)
        scores = {}
        for protocol in ("rgb", "y"):
            code, _, _ = _run(capsys, "eval", "--method", f"folder:{tmp_path / 'off'}", "--data", str(paired),
                              "--protocol", protocol, "--csv", str(tmp_path / f"{protocol}.csv"))
            assert code == 0
            scores[protocol] = [float(r["psnr"]) for r in _read_csv(tmp_path / f"{protocol}.csv")]
        expected_rgb = 20 * math.log10(255 / 10)
        assert scores["rgb"] == pytest.approx([expected_rgb] * 3, abs=1e-4)
        assert scores["y"] == pytest.approx([expected_rgb + 20 * math.log10(255 / 219)] * 3, abs=1e-3)

    def test_crop_removes_border_errors(self, capsys, paired, tmp_path):
        _offset_outputs(paired, tmp_path / "framed", 2, border=3)
        scores = {}
        for crop in ("0", "3"):
            code, stdout, _ = _run(capsys, "eval", "--method", f"folder:{tmp_path / 'framed'}", "--data",
                                   str(paired), "--crop", crop, "--csv", str(tmp_path / f"c{crop}.csv"))
            assert code == 0 and f"border crop={crop} px" in stdout
            scores[crop] = [float(r["psnr"]) for r in _read_csv(tmp_path / f"c{crop}.csv")]
        assert scores["3"] == pytest.approx([20 * math.log10(255 / 2)] * 3, abs=1e-4)
        assert all(c0 < c3 - 10 for c0, c3 in zip(scores["0"], scores["3"]))

    def test_ssim_variant_changes_ssim_not_psnr(self, capsys, paired, tmp_path):
        got = {}
        for variant in ("skimage", "uniform7"):
            assert _run(capsys, "eval", "--method", "dcp", "--data", str(paired), "--ssim", variant,
                        "--csv", str(tmp_path / f"{variant}.csv"))[0] == 0
            got[variant] = _read_csv(tmp_path / f"{variant}.csv")
        for a, b in zip(got["skimage"], got["uniform7"]):
            assert a["psnr"] == b["psnr"] and a["ssim"] != b["ssim"]

    def test_protocol_line_printed_with_every_table(self, capsys, paired, photos):
        code, stdout, _ = _run(capsys, "eval", "--method", "dcp", "--data", f"{paired},{photos}",
                               "--protocol", "y")
        assert code == 0
        assert stdout.count("protocol: Y (BT.601") == 2 and stdout.count("8-bit quantised") == 2
        assert "output clipped to [0,1]" in stdout and "SSIM=skimage" in stdout

    def test_quantisation_matches_saved_files(self):
        x = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 127.5 / 255]).view(1, 1, 2, 2)
        # round half up, like hazefree.io's writer (torch.round would give 0, 2, 2, 128)
        assert (Protocol().prepare(x) * 255).round().flatten().tolist() == [1, 2, 3, 128]

    def test_bad_protocol(self):
        with pytest.raises(ValueError, match="SSIM variant"):
            Protocol(ssim_variant="ms-ssim")
        with pytest.raises(ValueError, match="leaves no pixels"):
            Protocol(crop=24).prepare(torch.rand(1, 3, H, W))


# ------------------------------------------------------------------------- layouts and errors


class TestDatasets:
    def test_layouts(self, tmp_path):
        c = _clear(0, 24, 24)
        _save(tmp_path / "ntire" / "01_hazy.png", c)  # one flat folder (NTIRE)
        _save(tmp_path / "ntire" / "01_GT.png", c)
        _save(tmp_path / "reside" / "hazy" / "0001_0.8_0.2.png", c)  # RESIDE names
        _save(tmp_path / "reside" / "clear" / "0001.png", c)
        _save(tmp_path / "ohaze" / "hazy" / "35_outdoor_hazy.jpg", c)  # O-HAZE names, GT/ folder
        _save(tmp_path / "ohaze" / "GT" / "35_outdoor_GT.jpg", c)
        _save(tmp_path / "flat" / "photo.jpg", c)  # photos only, no sub-folder
        expected = {"ntire": ("01_hazy.png", "01_GT.png"), "reside": ("0001_0.8_0.2.png", "0001.png"),
                    "ohaze": ("35_outdoor_hazy.jpg", "35_outdoor_GT.jpg")}
        for name, (hazy, clear) in expected.items():
            ds = open_dataset(tmp_path / name)
            assert ds.paired and [(i.name, i.clear.name) for i in ds.items] == [(hazy, clear)]
        flat = open_dataset(tmp_path / "flat")
        assert not flat.paired and [i.name for i in flat.items] == ["photo.jpg"]

    def test_hazy_only_folder_gives_haze_table(self, capsys, photos):
        code, stdout, _ = _run(capsys, "eval", "--method", "dcp", "--data", str(photos))
        assert code == 0
        assert "| photos (n = 2, no ground truth) | hazy input | dcp |" in stdout
        assert "| haze density (lower = clearer) |" in stdout and "measure: haze density" in stdout

    def test_real_hazy_only_set(self, capsys):
        if not (SHARED_DATA / "rtts" / "hazy").is_dir():
            pytest.skip("shared data not available")
        code, stdout, err = _run(capsys, "eval", "--method", "dcp", "--data", str(SHARED_DATA / "rtts"),
                                 "--limit", "1")
        assert code == 0, err
        assert "rtts (n = 1, no ground truth)" in stdout and "haze density" in stdout

    def test_unmatched_hazy_images_noted(self, capsys, paired):
        _save(paired / "hazy" / "zzz.png", _clear(9))
        code, _, err = _run(capsys, "eval", "--method", "dcp", "--data", str(paired))
        assert code == 0 and "1 hazy image(s) without ground truth are not scored: zzz.png" in err

    @pytest.mark.parametrize("make, message", [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no hazy/clear pairs and no images"),
        (lambda root: (_save(root / "hazy" / "a.png", _clear(0)), _save(root / "clear" / "b.png", _clear(1))),
         "no hazy/clear pairs found"),
        (lambda root: root.write_bytes(b"x"), "not a folder"),
    ])
    def test_bad_data_folder(self, capsys, tmp_path, make, message):
        root = tmp_path / "set"
        make(root)
        code, stdout, err = _run(capsys, "eval", "--method", "dcp", "--data", str(root))
        assert code == 2 and message in err and "Traceback" not in err and stdout == ""

    def test_unknown_method(self, capsys, paired):
        code, _, err = _run(capsys, "eval", "--method", "dcp,no-such", "--data", str(paired))
        assert code == 2 and "unknown method 'no-such'" in err and "folder:PATH" in err

    def test_weights_file_method(self, capsys, paired, tmp_path):
        from hazefree.models import save_weights

        save_weights({}, tmp_path / "dcp.safetensors", model_name="dcp", options={"omega": 0.8})
        code, stdout, err = _run(capsys, "eval", "--method", f"dcp,{tmp_path / 'dcp.safetensors'}", "--data",
                                 str(paired), "--csv", str(tmp_path / "w.csv"))
        assert code == 0, err
        rows = _read_csv(tmp_path / "w.csv")
        assert {r["method"] for r in rows} == {"dcp", str(tmp_path / "dcp.safetensors")}
        assert rows[0]["psnr"] != rows[3]["psnr"]  # omega 0.8 is another method


# ------------------------------------------------------------------------------ folder: method


class TestFolderMethod:
    @pytest.mark.parametrize("layout", ["hazy-folder", "dataset-root"])
    def test_reproduces_scores_of_saved_method(self, capsys, paired, tmp_path, layout):
        source = paired / "hazy" if layout == "hazy-folder" else paired
        assert _run(capsys, "dehaze", str(source), "-o", str(tmp_path / "saved"), "--method", "dcp")[0] == 0
        code, _, err = _run(capsys, "eval", "--method", f"dcp,folder:{tmp_path / 'saved'}", "--data", str(paired),
                            "--csv", str(tmp_path / "f.csv"))
        assert code == 0, err
        rows = _read_csv(tmp_path / "f.csv")
        live = [(r["image"], r["psnr"], r["ssim"]) for r in rows if r["method"] == "dcp"]
        saved = [(r["image"], r["psnr"], r["ssim"]) for r in rows if r["method"] == "folder:saved"]
        assert len(live) == 3 and live == saved
        assert all(r["seconds"] == "" for r in rows if r["method"] == "folder:saved")

    def test_missing_outputs_reported(self, capsys, paired, tmp_path):
        code, _, _ = _run(capsys, "dehaze", str(paired / "hazy"), "-o", str(tmp_path / "saved"), "--method", "dcp")
        assert code == 0
        (tmp_path / "saved" / "b.png").unlink()
        code, stdout, err = _run(capsys, "eval", "--method", f"folder:{tmp_path / 'saved'}", "--data", str(paired))
        assert code == 2 and stdout == ""
        assert "no output for 1 of 3 images of pairs" in err and err.rstrip().endswith(": b.png")

    def test_output_of_another_size_refused(self, capsys, paired, tmp_path):
        for name in "abc":
            _save(tmp_path / "small" / f"{name}.png", _clear(0, 40, 40))
        code, _, err = _run(capsys, "eval", "--method", f"folder:{tmp_path / 'small'}", "--data", str(paired))
        assert code == 2 and "output is 40 x 40, the hazy image a.png is 48 x 64" in err

    def test_full_size_outputs_cropped_like_the_pair(self, capsys, tmp_path):
        # hazy 52 x 68, ground truth 48 x 64 (like official SOTS indoor): the pair is centre-cropped,
        # and so is an output of the hazy file's size; saved copies of the hazy images must score
        # exactly as the identity method on the cropped pair.
        root = tmp_path / "sots"
        _save(root / "hazy" / "a.png", _clear(1, 52, 68))
        _save(root / "clear" / "a.png", _clear(2, 48, 64))
        _save(tmp_path / "copies" / "a.png", np.asarray(Image.open(root / "hazy" / "a.png")))
        ds = open_dataset(root)
        with pytest.warns(UserWarning, match="centre-cropped"):
            rows = evaluate(ds, [EvalMethod.from_function("identity", lambda x: x),
                                 resolve_method(f"folder:{tmp_path / 'copies'}")]).rows
        assert rows[0].psnr == rows[1].psnr and rows[0].ssim == rows[1].ssim

    def test_same_folder_names_get_full_labels(self, capsys, paired, tmp_path):
        for parent in ("x", "y"):
            _run(capsys, "dehaze", str(paired / "hazy"), "-o", str(tmp_path / parent / "out"), "--method", "dcp")
        specs = [f"folder:{tmp_path / 'x' / 'out'}", f"folder:{tmp_path / 'y' / 'out'}"]
        code, stdout, err = _run(capsys, "eval", "--method", ",".join(specs), "--data", str(paired))
        assert code == 0, err
        assert f"| pairs (n = 3) | {specs[0]} | {specs[1]} |" in stdout

    def test_missing_output_folder(self, capsys, paired, tmp_path):
        code, _, err = _run(capsys, "eval", "--method", f"folder:{tmp_path / 'nope'}", "--data", str(paired))
        assert code == 2 and "no such folder" in err

    def test_per_dataset_subfolders(self, capsys, paired, photos, tmp_path):
        # PATH/<dataset>/ is searched first, so two sets may share image names
        for ds in (paired, photos):
            _run(capsys, "dehaze", str(ds / "hazy"), "-o", str(tmp_path / "all" / ds.name), "--method", "dcp")
        code, _, err = _run(capsys, "eval", "--method", f"dcp,folder:{tmp_path / 'all'}", "--data",
                            f"{paired},{photos}", "--csv", str(tmp_path / "s.csv"))
        assert code == 0, err
        rows = _read_csv(tmp_path / "s.csv")
        by = {(r["dataset"], r["image"], r["method"]): r["haze_output"] for r in rows}
        for (dataset, image, method), v in by.items():
            if method == "dcp":
                assert by[(dataset, image, "folder:all")] == v


# ----------------------------------------------------------------------------- grid and report


class TestGridAndReport:
    def test_grid_png_size(self, capsys, paired, photos, tmp_path):
        code, _, err = _run(capsys, "eval", "--method", "dcp", "--data", f"{paired},{photos}", "--grid",
                            str(tmp_path / "g.png"), "--grid-images", "2")
        assert code == 0, err
        grid = Image.open(tmp_path / "g.png")
        tile_w = round(W * 160 / H)  # tiles are 160 px high, aspect kept
        # 2 paired rows (hazy | dcp | ground truth) and 2 hazy-only rows (hazy | dcp)
        assert grid.size == (GRID_GAP + 3 * (tile_w + GRID_GAP),
                             GRID_GAP + 4 * (160 + GRID_CAPTION + GRID_GAP))
        assert grid.size == (655, 716)
        px = np.asarray(grid.convert("RGB"))
        assert px[GRID_GAP:GRID_GAP + 160, GRID_GAP:GRID_GAP + tile_w].std() > 5  # a picture, not background
        # the last rows have no ground-truth tile: background there
        assert (px[-(160 + GRID_CAPTION + GRID_GAP):-GRID_GAP, -tile_w:] == 255).all()
        # captions are drawn under the tiles
        band = px[GRID_GAP + 160:GRID_GAP + 160 + GRID_CAPTION, GRID_GAP:GRID_GAP + tile_w]
        assert (band < 128).any()

    def test_hazy_only_tiles_carry_fade(self, photos):
        from hazefree.metrics.fade import fade

        res = evaluate(photos, [EvalMethod.from_function("half", lambda x: 0.5 * x)], grid_images=1)
        hazy = read_image(photos / "hazy" / "p.png").rgb
        quantised = lambda x: (x * 255.0 + 0.5).floor() / 255.0  # noqa: E731 (as the writer rounds)
        want_in, want_out = fade(quantised(hazy)).item(), fade(quantised(0.5 * hazy)).item()
        assert [t.caption for t in res.grid[0]] == [f"hazy, FADE {want_in:.2f} p.png", f"half FADE {want_out:.2f}"]

    def test_grid_rows_capped(self, tmp_path):
        tiles = [[Tile(np.zeros((10, 20, 3), np.uint8), "x")] for _ in range(GRID_MAX_ROWS + 5)]
        write_grid(tmp_path / "g.png", tiles, tile_height=10)
        assert Image.open(tmp_path / "g.png").size[1] == GRID_GAP + GRID_MAX_ROWS * (10 + GRID_CAPTION + GRID_GAP)
        with pytest.raises(ValueError, match="no tiles"):
            make_grid([])

    def test_report(self, capsys, paired, photos, tmp_path):
        code, _, _ = _run(capsys, "eval", "--method", "dcp", "--data", f"{paired},{photos}", "--post", "rescale",
                          "--report", str(tmp_path / "r.md"))
        assert code == 0
        text = (tmp_path / "r.md").read_text()
        assert "## pairs" in text and "## photos" in text and "| pairs (n = 3) | dcp+rescale |" in text
        assert "protocol: RGB" in text and "post-processing: rescale" in text
        assert "GP2P-G (paper)" in text and "not ours" in text


# ------------------------------------------------------------------------- no-reference measure


class TestHazeDensity:
    def test_hazier_is_higher_and_dehazing_lowers_it(self):
        clear = torch.from_numpy(_clear(3, 96, 128)).permute(2, 0, 1)[None].float() / 255
        values = [haze_density(add_haze(clear, torch.full((1, 1, 96, 128), t), 0.9)).item()
                  for t in (1.0, 0.7, 0.4, 0.2)]
        assert values == sorted(values) and values[-1] - values[0] > 0.3
        hazy = add_haze(clear, torch.full((1, 1, 96, 128), 0.4), 0.9)
        assert haze_density(Dehazer("dcp")(hazy).clear) < haze_density(hazy)

    def test_real_clear_image_below_its_synthetic_hazy_version(self):
        path = SHARED_DATA / "sots_indoor" / "clear" / "1400_1.png"
        if not path.is_file():
            pytest.skip("shared data not available")
        clear = read_image(path).rgb
        hazy = add_haze(clear, torch.full((1, 1, *clear.shape[-2:]), 0.5), 0.85)
        assert haze_density(clear).item() + 0.2 < haze_density(hazy).item()

    def test_exposure_invariant_range_and_shape(self):
        x = torch.from_numpy(_clear(4)).permute(2, 0, 1)[None].float() / 255
        hazy = add_haze(x, torch.full((1, 1, H, W), 0.5), 0.8)
        batch = torch.cat([hazy, hazy * 0.5])  # the same scene, half the exposure
        d = haze_density(batch)
        assert d.shape == (2,) and d.dtype == torch.float64 and ((d >= 0) & (d <= 1)).all()
        assert d[1].item() == pytest.approx(d[0].item(), abs=1e-5)

    def test_large_images_are_reduced_first(self):
        small = torch.from_numpy(_clear(5, 128, 128)).permute(2, 0, 1)[None].float() / 255
        large = small.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # 1024 px, reduced back to 128
        assert haze_density(large, max_side=128).item() == pytest.approx(haze_density(small).item(), abs=1e-6)

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            haze_density(torch.full((1, 3, 8, 8), 2.0))


# ---------------------------------------------------------------------------- results script


def _load_results_script(monkeypatch):
    # The script imports its sibling benchmarks/machine.py, as it does when run as `python benchmarks/results.py`.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("results_script", REPO / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestResultsScript:
    def test_small_run(self, paired, photos, tmp_path, capsys, monkeypatch):
        script = _load_results_script(monkeypatch)
        out = tmp_path / "docs"
        readme = tmp_path / "README.md"
        readme.write_text("# x\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\ntail\n")
        code = script.main(["--data-root", str(tmp_path), "--sets", "pairs", "--real-sets", "photos",
                            "--methods", "dcp", "--out", str(out), "--readme", str(readme)])
        assert code == 0
        updated = readme.read_text()
        assert "old table" not in updated and updated.startswith("# x") and updated.endswith("\ntail\n")
        block = updated[updated.index("results:start"):updated.index("results:end")]
        assert "| pairs (3) |" in block and "the paper's numbers, not ours" in block and "--methods dcp" in block
        assert "hazy input" in block.split("Published values")[0]  # the input scored beside the methods
        text = (out / "results.md").read_text()
        assert "| pairs (3) |" in text and "| photos (2) |" in text and "GP2P-G (paper)" in text
        assert text.index("(ours)") < text.index("the paper's, not ours")  # ours first, then theirs
        assert "protocol: RGB" in text and "hardware:" in text and "![" in text
        readme.write_text("no markers\n")
        with pytest.raises(SystemExit, match="no '<!-- results:start -->'"):
            script.main(["--data-root", str(tmp_path), "--sets", "pairs", "--real-sets", "",
                         "--methods", "dcp", "--out", str(out), "--readme", str(readme)])
        tile_w = round(W * 160 / H)
        assert Image.open(out / "grid_real.png").size == (GRID_GAP + 2 * (tile_w + GRID_GAP),
                                                          GRID_GAP + 2 * (160 + GRID_CAPTION + GRID_GAP))


class TestWinTable:
    def test_counts_wins_and_worst_margin(self):
        from hazefree.evaluation import Row, win_table

        rows = [Row("set", img, m, p, None, None) for img, m, p in [
            ("a", "ours", 20.0), ("a", "dcp", 18.0), ("a", "hazy input", 15.0),
            ("b", "ours", 17.0), ("b", "dcp", 19.5), ("b", "hazy input", 16.0),
            ("c", "ours", 25.0), ("c", "dcp", 24.0), ("c", "hazy input", 26.0),
        ]]
        table = win_table(rows, ["ours"], ["dcp", "hazy input"])
        assert "| ours vs dcp | ours vs hazy input |" in table
        assert "| set | 2/3, worst -2.50 | 2/3, worst -1.00 |" in table
