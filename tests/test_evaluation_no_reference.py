"""``hazefree eval`` reports FADE and the clipped-pixel share of the input and of every method, with
or without ground truth; values equal FADE of the saved files (hazefree.metrics.fade.fade_file,
read by Pillow) and a NumPy count of black/white pixels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hazefree import cli
from hazefree.evaluation import EvalMethod, evaluate, summarize
from hazefree.evaluation.no_reference import brightness_ratio, clipped_share
from hazefree.evaluation.tables import no_reference_table
from hazefree.metrics.fade import fade, fade_file

H, W = 48, 64


def _photo(seed: int) -> np.ndarray:
    """H x W x 3 uint8 hazy-looking photo with a black and a white block (known clipped share)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((W, H), Image.BILINEAR))
    pixels = (base * 0.5 + 100 + rng.integers(0, 8, (H, W, 3))).astype(np.uint8)
    pixels[:4, :10] = 0  # 40 black pixels
    pixels[-3:, -5:] = 255  # 15 white pixels
    pixels[10, 10] = (0, 0, 7)  # not black in all three channels: not clipped
    return pixels


@pytest.fixture
def hazy_only(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "hazy").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_photo(i)).save(root / "hazy" / f"p{i}.png")
    return root


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    (root / "hazy").mkdir(parents=True)
    (root / "clear").mkdir(parents=True)
    for i in range(2):
        clear = _photo(10 + i)
        hazy = (clear * 0.6 + 0.4 * 230).round().astype(np.uint8)
        Image.fromarray(clear).save(root / "clear" / f"{i}.png")
        Image.fromarray(hazy).save(root / "hazy" / f"{i}_1.png")
    return root


def _clipped_numpy(pixels: np.ndarray) -> float:
    return float(((pixels == 0).all(axis=-1) | (pixels == 255).all(axis=-1)).mean())


def _brighten(x: torch.Tensor) -> torch.Tensor:
    return (x * 1.6).clamp(0, 1)


def test_hazy_only_rows_carry_fade_and_clipped(hazy_only):
    res = evaluate(hazy_only, [EvalMethod.from_function("same", lambda x: x),
                               EvalMethod.from_function("bright", _brighten)])
    assert len(res.rows) == 6
    for row in res.rows:
        path = hazy_only / "hazy" / row.image
        pixels = np.array(Image.open(path).convert("RGB"))
        assert row.psnr is None and row.ssim is None
        assert row.fade_input == pytest.approx(fade_file(path), rel=1e-12)
        assert row.clipped_input == pytest.approx(_clipped_numpy(pixels))
        assert row.clipped_input == pytest.approx(55 / (H * W))
        if row.method == "same":
            assert row.fade_output == row.fade_input and row.clipped_output == row.clipped_input
        else:
            out = _brighten(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
            out8 = np.floor(out[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            assert row.fade_output == pytest.approx(fade(out).item(), rel=1e-12)
            assert row.clipped_output == pytest.approx(_clipped_numpy(out8))
            assert row.clipped_output > row.clipped_input  # brightening clips more to white


def test_summary_and_table(hazy_only):
    res = evaluate(hazy_only, [EvalMethod.from_function("same", lambda x: x)])
    summary = summarize(res.rows)
    entry = summary[("photos", "same")]
    fades = [r.fade_input for r in res.rows]
    assert entry["fade_input"] == pytest.approx(np.mean(fades))
    assert entry["fade_input_std"] == pytest.approx(np.std(fades))
    table = no_reference_table(summary, "photos", ["same"])
    assert f"| FADE (lower = less fog) | {np.mean(fades):.3f} ± {np.std(fades):.3f} |" in table
    share = 100 * 55 / (H * W)
    assert f"| clipped pixels (%) | {share:.2f} ± 0.00 | {share:.2f} ± 0.00 |" in table


def test_clipped_share_counts_black_and_white_in_all_channels():
    x = torch.full((2, 3, 4, 5), 0.5)
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 0, 1] = 1.0  # white
    x[0, :, 0, 2] = 0.001  # rounds to 0 in 8 bits: black
    x[0, 0, 0, 3] = 0.0  # one channel only: not clipped
    x[1] = 1.2  # out of range: clipped to white as the writer would
    np.testing.assert_allclose(clipped_share(x).numpy(), [3 / 20, 1.0])


def test_clipped_share_bad_input():
    with pytest.raises(ValueError, match="clipped_share"):
        clipped_share(torch.zeros(1, 1, 4, 4))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_hazy_only_folder(hazy_only, tmp_path, capsys):
    out_csv = tmp_path / "s.csv"
    assert cli.main(["eval", "--method", "dcp", "--data", str(hazy_only), "--csv", str(out_csv)]) == 0
    stdout = capsys.readouterr().out
    assert "| FADE (lower = less fog) |" in stdout and "| clipped pixels (%) |" in stdout
    assert "| haze density (lower = clearer) |" in stdout and "PSNR" not in stdout
    rows = _read_csv(out_csv)
    assert len(rows) == 3
    for r in rows:
        assert r["psnr"] == "" and r["ssim"] == ""
        assert float(r["fade_input"]) == pytest.approx(fade_file(hazy_only / "hazy" / r["image"]), abs=1e-5)
        assert float(r["clipped_input"]) == pytest.approx(55 / (H * W), abs=1e-6)
        assert r["fade_output"] and r["clipped_output"]


def test_cli_pairs_keep_psnr_ssim_and_add_no_reference(pairs, tmp_path, capsys):
    out_csv = tmp_path / "p.csv"
    assert cli.main(["eval", "--method", "dcp", "--data", str(pairs), "--csv", str(out_csv)]) == 0
    stdout = capsys.readouterr().out
    assert "| PSNR (dB) |" in stdout and "| SSIM |" in stdout
    assert "| FADE (lower = less fog) |" in stdout and "| clipped pixels (%) |" in stdout
    rows = _read_csv(out_csv)
    assert len(rows) == 2
    for r in rows:
        assert float(r["psnr"]) > 0 and 0 < float(r["ssim"]) <= 1
        assert float(r["fade_input"]) == pytest.approx(fade_file(pairs / "hazy" / r["image"]), abs=1e-5)


def test_images_too_small_for_fade_get_no_value(tmp_path):
    root = tmp_path / "tiny"
    (root / "hazy").mkdir(parents=True)
    Image.fromarray(_photo(0)[:12, :12]).save(root / "hazy" / "t.png")
    res = evaluate(root, [EvalMethod.from_function("same", lambda x: x)])
    (row,) = res.rows
    assert row.fade_input is None and row.fade_output is None
    assert row.clipped_input == pytest.approx(40 / 144)  # the 4 x 10 black block lies inside
    table = no_reference_table(summarize(res.rows), "tiny", ["same"])
    assert "| FADE (lower = less fog) | - | - |" in table


def test_fade_table_means_clipping_and_wins_against_the_reference():
    from hazefree.evaluation import Row, fade_table

    def row(image, method, fade_in, fade_out, clipped):
        return Row("photos", image, method, None, None, None, fade_input=fade_in, fade_output=fade_out,
                   clipped_input=0.0, clipped_output=clipped)

    rows = [row("a", "dcp", 2.0, 1.0, 0.001), row("a", "ours", 2.0, 0.8, 0.003),
            row("b", "dcp", 3.0, 1.2, 0.001), row("b", "ours", 3.0, 1.4, 0.001),
            row("c", "dcp", 1.0, 0.5, 0.004), row("c", "ours", 1.0, 0.4, 0.002)]
    table = fade_table(rows, ["dcp", "ours"], "dcp")
    body = table.splitlines()[2]
    # inputs (2 + 3 + 1) / 3 = 2.000; dcp 0.900 / 0.20 %; ours 0.867 / 0.20 %, clearer on a and c
    assert body == "| photos (3) | 2.000 | 0.900 / 0.20 % | 0.867 / 0.20 %, clearer on 2/3 |"


def test_brightness_ratio_against_numpy():
    rng = np.random.default_rng(0)
    hazy, out = rng.random((2, 3, 8, 10)), rng.random((2, 3, 8, 10)) * 0.3
    luma = lambda x: (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(axis=(1, 2))  # noqa: E731
    got = brightness_ratio(torch.from_numpy(out).float(), torch.from_numpy(hazy).float()).numpy()
    np.testing.assert_allclose(got, luma(out) / luma(hazy), rtol=1e-6)
    # only green moves: the weights are the luma weights, not a plain mean of the channels
    x = torch.full((1, 3, 2, 2), 0.5)
    y = x.clone()
    y[:, 1] = 0.0
    assert brightness_ratio(y, x).item() == pytest.approx(1 - 0.587)
    with pytest.raises(ValueError, match="differ"):
        brightness_ratio(x, torch.zeros(1, 3, 2, 3))
