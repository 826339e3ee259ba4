"""Tests for the ``hazefree`` command line (in-process via cli.main, plus one real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from hazefree import cli
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]


def _hazy(h: int = 20, w: int = 24, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth hazy-looking uint8 image (bright, low contrast) with noise."""
    rng = np.random.default_rng(seed)
    base = np.linspace(120, 220, w, dtype=np.float64)[None, :, None] + rng.normal(0, 15, (h, w, channels))
    return np.clip(base, 0, 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path, **options)
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _dehaze(capsys, *args: str) -> tuple[int, str, str]:
    return _run(capsys, "dehaze", *args, "--method", "dcp")


@pytest.fixture
def folder(tmp_path) -> Path:
    """in/a.png, in/sub/b.jpg, in/sub/deeper/c.tif."""
    root = tmp_path / "in"
    _save(root / "a.png", _hazy(seed=1))
    _save(root / "sub" / "b.jpg", _hazy(seed=2), quality=95)
    _save(root / "sub" / "deeper" / "c.tif", _hazy(seed=3))
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestDehaze:
    def test_folder_mirrored(self, capsys, folder, tmp_path):
        out = tmp_path / "out"
        code, stdout, stderr = _dehaze(capsys, str(folder), "-o", str(out))
        assert code == 0, stderr
        assert "dcp" in stdout and "3 dehazed, 0 failed, 0 skipped" in stdout
        assert sorted(_snapshot(out)) == ["a.png", "sub/b.jpg", "sub/deeper/c.tif"]
        for rel in ("a.png", "sub/b.jpg", "sub/deeper/c.tif"):
            result, source = read_image(out / rel), read_image(folder / rel)
            assert result.format == source.format and result.size == source.size
            assert not np.allclose(result.rgb.numpy(), source.rgb.numpy(), atol=2 / 255)  # it did something

    def test_single_file(self, capsys, folder, tmp_path):
        code, stdout, _ = _dehaze(capsys, str(folder / "sub" / "b.jpg"), "-o", str(tmp_path / "out"))
        assert code == 0 and (tmp_path / "out" / "b.jpg").is_file()
        assert "1 dehazed, 0 failed, 0 skipped" in stdout

    def test_one_bad_file_among_good_ones(self, capsys, folder, tmp_path):
        (folder / "sub" / "broken.png").write_text("not a png")
        out = tmp_path / "out"
        code, stdout, stderr = _dehaze(capsys, str(folder), "-o", str(out))
        assert code == 1
        assert "3 dehazed, 1 failed, 0 skipped" in stdout
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert errors == [errors[0]] and str(folder / "sub" / "broken.png") in errors[0]
        assert "Traceback" not in stderr
        assert sorted(_snapshot(out)) == ["a.png", "sub/b.jpg", "sub/deeper/c.tif"]

    @pytest.mark.parametrize(
        "make_bad,problem",
        [
            (lambda p: p.write_bytes(b""), "empty file"),
            (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "corrupt"),
            (lambda p: p.write_text("hello"), "not an image file"),
        ],
    )
    def test_bad_files_one_line_each(self, capsys, tmp_path, make_bad, problem):
        bad = tmp_path / "in" / "bad.png"
        bad.parent.mkdir()
        make_bad(bad)
        code, stdout, stderr = _dehaze(capsys, str(bad), "-o", str(tmp_path / "out"))
        assert code == 1 and "0 dehazed, 1 failed" in stdout
        assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(f"error: {bad}: ")
        assert problem in stderr

    def test_debug_shows_traceback(self, capsys, tmp_path):
        bad = tmp_path / "bad.jpg"
        bad.write_text("hello")
        code, _, stderr = _dehaze(capsys, str(bad), "-o", str(tmp_path / "out"), "--debug")
        assert code == 1 and "Traceback" in stderr and f"error: {bad}" in stderr

    def test_empty_folder(self, capsys, tmp_path):
        (tmp_path / "empty").mkdir()
        code, stdout, stderr = _dehaze(capsys, str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
        assert code == 1 and "no image files" in stderr and "0 dehazed, 1 failed" in stdout

    def test_missing_input(self, capsys, folder, tmp_path):
        inputs = [str(folder / "a.png"), str(tmp_path / "nope.png")]
        code, stdout, stderr = _dehaze(capsys, *inputs, "-o", str(tmp_path / "o"))
        assert code == 1 and "1 dehazed, 1 failed" in stdout
        assert f"error: {tmp_path / 'nope.png'}: no such file" in stderr

    def test_refuses_output_folder_equal_to_input(self, capsys, folder):
        before = _snapshot(folder)
        code, stdout, stderr = _dehaze(capsys, str(folder), "-o", str(folder))
        assert code == 2 and "refusing to overwrite input" in stderr and "--suffix" in stderr
        assert _snapshot(folder) == before

    def test_overwrite_never_replaces_an_input(self, capsys, folder):
        before = _snapshot(folder)
        code, _, stderr = _dehaze(capsys, str(folder), "-o", str(folder), "--overwrite")
        assert code == 2 and "refusing to overwrite input" in stderr
        assert _snapshot(folder) == before

    def test_refuses_input_file_through_other_spelling(self, capsys, folder, tmp_path):
        # The output folder is a symlink to the input folder: same files, other path.
        link = tmp_path / "link"
        link.symlink_to(folder, target_is_directory=True)
        before = _snapshot(folder)
        code, _, stderr = _dehaze(capsys, str(folder / "a.png"), "-o", str(link))
        assert code == 2 and "refusing to overwrite input" in stderr
        assert _snapshot(folder) == before

    def test_suffix_allows_same_folder(self, capsys, folder):
        before = _snapshot(folder)
        code, stdout, _ = _dehaze(capsys, str(folder), "-o", str(folder), "--suffix", "_clear")
        assert code == 0 and "3 dehazed" in stdout
        after = _snapshot(folder)
        assert {k: after[k] for k in before} == before
        assert {"a_clear.png", "sub/b_clear.jpg", "sub/deeper/c_clear.tif"} == set(after) - set(before)
        # A second identical run would write over the first run's results, which are now inputs.
        code, _, stderr = _dehaze(capsys, str(folder), "-o", str(folder), "--suffix", "_clear", "--overwrite")
        assert code == 2 and "earlier run" in stderr
        assert _snapshot(folder) == after

    def test_existing_outputs_need_a_flag(self, capsys, folder, tmp_path):
        out = tmp_path / "out"
        assert _dehaze(capsys, str(folder), "-o", str(out))[0] == 0
        first = _snapshot(out)
        code, _, stderr = _dehaze(capsys, str(folder), "-o", str(out))
        assert code == 2 and "already exists" in stderr and "--overwrite" in stderr
        assert _snapshot(out) == first

    def test_skip_existing(self, capsys, folder, tmp_path):
        out = tmp_path / "out"
        _save(out / "a.png", np.zeros((2, 2, 3), np.uint8))
        marker = (out / "a.png").read_bytes()
        code, stdout, _ = _dehaze(capsys, str(folder), "-o", str(out), "--skip-existing")
        assert code == 0 and "2 dehazed, 0 failed, 1 skipped" in stdout
        assert (out / "a.png").read_bytes() == marker and (out / "sub" / "b.jpg").is_file()

    def test_overwrite_replaces_outputs(self, capsys, folder, tmp_path):
        out = tmp_path / "out"
        _save(out / "a.png", np.zeros((2, 2, 3), np.uint8))
        code, stdout, _ = _dehaze(capsys, str(folder), "-o", str(out), "--overwrite")
        assert code == 0 and "3 dehazed" in stdout
        assert read_image(out / "a.png").size == (20, 24)

    def test_overwrite_and_skip_exclusive(self, capsys, folder, tmp_path):
        code, _, stderr = _dehaze(
            capsys, str(folder), "-o", str(tmp_path / "o"), "--overwrite", "--skip-existing"
        )
        assert code == 2 and "not allowed with" in stderr

    def test_output_inside_input_folder_is_not_rescanned(self, capsys, folder):
        out = folder / "results"
        assert _dehaze(capsys, str(folder), "-o", str(out))[0] == 0
        code, stdout, _ = _dehaze(capsys, str(folder), "-o", str(out), "--overwrite")
        assert code == 0 and "3 dehazed" in stdout
        assert not (out / "results").exists()

    def test_two_inputs_one_output_refused(self, capsys, tmp_path):
        _save(tmp_path / "in" / "x.png", _hazy())
        _save(tmp_path / "in" / "x.gif", _hazy())  # GIF results are written as PNG: x.png again
        code, _, stderr = _dehaze(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"))
        assert code == 2 and "would both be written" in stderr
        assert not (tmp_path / "out").exists()

    def test_save_transmission(self, capsys, folder, tmp_path):
        out = tmp_path / "out"
        code, _, _ = _dehaze(capsys, str(folder), "-o", str(out), "--save-transmission", "--suffix", "_d")
        assert code == 0
        t = cv2.imread(str(out / "sub" / "b_d_transmission.png"), cv2.IMREAD_UNCHANGED)
        assert t.dtype == np.uint16 and t.shape == (20, 24)
        assert 0 < t.min() and t.max() <= 65535 and t.std() > 0
        assert (out / "a_d_transmission.png").is_file()
        assert (out / "sub" / "deeper" / "c_d_transmission.png").is_file()

    def test_gray_stays_gray(self, capsys, tmp_path):
        _save(tmp_path / "g.png", _hazy(channels=1))
        assert _dehaze(capsys, str(tmp_path / "g.png"), "-o", str(tmp_path / "out"))[0] == 0
        with Image.open(tmp_path / "out" / "g.png") as im:
            assert im.mode == "L" and im.size == (24, 20)

    def test_alpha_passes_through_exactly(self, capsys, tmp_path):
        alpha = np.random.default_rng(5).integers(0, 256, (20, 24, 1), dtype=np.uint8)
        rgba = np.concatenate([_hazy(), alpha], axis=2)
        _save(tmp_path / "a.png", rgba)
        assert _dehaze(capsys, str(tmp_path / "a.png"), "-o", str(tmp_path / "out"))[0] == 0
        result = np.asarray(Image.open(tmp_path / "out" / "a.png"))
        assert result.shape == (20, 24, 4)
        np.testing.assert_array_equal(result[:, :, 3], rgba[:, :, 3])

    @pytest.mark.parametrize("ext", [".png", ".tif"])
    def test_16bit_stays_16bit_with_exact_alpha(self, capsys, tmp_path, ext):
        rgba = (_hazy(channels=4).astype(np.uint16) * 257)[:, :, [2, 1, 0, 3]]
        rgba[:, :, 3] = np.random.default_rng(6).integers(0, 65536, (20, 24), dtype=np.uint16)
        cv2.imwrite(str(tmp_path / f"h{ext}"), rgba)
        assert _dehaze(capsys, str(tmp_path / f"h{ext}"), "-o", str(tmp_path / "out"))[0] == 0
        result = cv2.imread(str(tmp_path / "out" / f"h{ext}"), cv2.IMREAD_UNCHANGED)
        assert result.dtype == np.uint16 and result.shape == (20, 24, 4)
        np.testing.assert_array_equal(result[:, :, 3], rgba[:, :, 3])
        # 16 bits are really used: not every value is a multiple of 257 (an 8-bit level)
        assert (result[:, :, :3] % 257 != 0).any()

    def test_animated_gif_written_as_png_with_warning(self, capsys, tmp_path):
        frames = [Image.fromarray(_hazy(seed=s)).convert("P") for s in (1, 2)]
        frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
        code, stdout, stderr = _dehaze(capsys, str(tmp_path / "anim.gif"), "-o", str(tmp_path / "out"))
        assert code == 0 and (tmp_path / "out" / "anim.png").is_file()
        assert "warning:" in stderr and "only the first" in stderr

    @pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1)])
    def test_extreme_shapes(self, capsys, tmp_path, shape):
        _save(tmp_path / "x.png", _hazy(*shape))
        code, stdout, stderr = _dehaze(capsys, str(tmp_path / "x.png"), "-o", str(tmp_path / "out"))
        assert code == 0, stderr
        result = read_image(tmp_path / "out" / "x.png")
        assert result.size == shape and np.isfinite(result.rgb.numpy()).all()

    def test_max_pixels(self, capsys, tmp_path):
        _save(tmp_path / "x.png", _hazy())
        code, _, stderr = _dehaze(
            capsys, str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--max-pixels", "100"
        )
        assert code == 1 and "more than the limit of 100" in stderr and "Traceback" not in stderr

    def test_unknown_method(self, capsys, folder, tmp_path):
        code, _, stderr = _run(capsys, "dehaze", str(folder), "-o", str(tmp_path / "o"), "--method", "nope")
        assert code == 2 and "unknown method 'nope'" in stderr
        assert "dcp" in stderr and "guided-pix2pix" in stderr
        assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()

    def test_missing_weights_file(self, capsys, folder, tmp_path):
        weights = str(tmp_path / "w.safetensors")
        code, _, stderr = _run(capsys, "dehaze", str(folder), "-o", str(tmp_path / "o"), "--method", weights)
        assert code == 2 and "no such file" in stderr and "Traceback" not in stderr

    def test_output_is_a_file(self, capsys, folder):
        code, _, stderr = _dehaze(capsys, str(folder), "-o", str(folder / "a.png"))
        assert code == 2 and "not a folder" in stderr


class TestCommands:
    def test_models_lists_registry(self, capsys):
        code, stdout, _ = _run(capsys, "models")
        assert code == 0
        lines = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
        assert {"dcp", "guided-pix2pix"} <= set(lines)
        assert lines["dcp"][1:3] == ["0", "yes"]
        assert int(lines["guided-pix2pix"][1].replace(",", "")) > 0

    def test_no_command_prints_usage(self, capsys):
        code, _, stderr = _run(capsys)
        assert code == 2 and "dehaze" in stderr

    @pytest.mark.parametrize("command", ["train", "eval"])
    def test_train_and_eval_registered(self, capsys, command):
        code, stdout, _ = _run(capsys, command, "--help")
        assert code == 0 and f"usage: hazefree {command}" in stdout

    def test_train_unknown_model(self, capsys):
        code, _, stderr = _run(capsys, "train", "no-such-model", "--steps", "1")
        assert code == 2 and "unknown model 'no-such-model'" in stderr and "guided-pix2pix" in stderr


def test_real_samples_through_cli(capsys, tmp_path):
    sources = [SHARED_DATA / "rice1" / "hazy" / "10.png", SHARED_DATA / "rice1" / "hazy" / "14.png"]
    if not all(p.is_file() for p in sources):
        pytest.skip("shared data not available")
    code, stdout, _ = _dehaze(capsys, *map(str, sources), "-o", str(tmp_path / "out"))
    assert code == 0 and "2 dehazed" in stdout
    for p in sources:
        result = read_image(tmp_path / "out" / p.name)
        assert result.size == (256, 256) and np.isfinite(result.rgb.numpy()).all()


def test_console_entry_point_subprocess(tmp_path):
    _save(tmp_path / "in" / "x.jpg", _hazy())
    proc = subprocess.run(
        [sys.executable, "-m", "hazefree", "dehaze", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
         "--method", "dcp"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 dehazed, 0 failed, 0 skipped" in proc.stdout
    assert read_image(tmp_path / "out" / "x.jpg").size == (20, 24)
