"""``hazefree train`` refuses what the dehaze command refuses: a pair whose two images are not the
same view, an out-of-range config (every bad key named, before any data is read), and an
unreadable image (named; ``--skip-bad`` leaves it out and says how many pairs remain)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_paired_dataset
from PIL import Image

from hazefree.cli import main as cli_main
from hazefree.data import MAX_CROP_BORDER, Pair, load_pair
from hazefree.training.config import TrainConfig, load_config

# a tiny, fast run of the smallest model
FAST = ["--no-progress", "--set", "data.crop=32", "--set", "batch_size=2", "--set", "threads=1",
        "--set", "val_every=1", "--set", "data.val_fraction=0.25"]


def _train(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["train", "aod-net", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


# ------------------------------------------------------------------------------ mismatched sizes


class TestSizeMismatch:
    def _resized_copy_dataset(self, root: Path) -> tuple[Path, Path]:
        """Three good pairs and one whose clear image is a resized copy: hazy 620 x 460, clear 300 x 200."""
        data = make_paired_dataset(root, 3, 40)
        scene = _scene(460, 620)
        hazy, clear = data / "hazy" / "900_1.png", data / "clear" / "900.png"
        Image.fromarray(scene).save(hazy)
        Image.fromarray(scene).resize((300, 200), Image.BILINEAR).save(clear)
        return hazy, clear

    def test_refused_naming_both_files_and_sizes(self, tmp_path, capsys):
        hazy, clear = self._resized_copy_dataset(tmp_path / "data")
        run = tmp_path / "run"
        code, _, err = _train(capsys, "--data", str(tmp_path / "data"), "--steps", "1", "--out", str(run), *FAST)
        assert code == 2
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and "Traceback" not in err
        assert str(hazy) in line and str(clear) in line
        assert "620 x 460" in line and "300 x 200" in line and "--allow-size-mismatch" in line
        assert not run.exists()  # refused while loading, before the run folder is written

    def test_allow_size_mismatch_keeps_the_old_crop(self, tmp_path, capsys):
        self._resized_copy_dataset(tmp_path / "data")
        run = tmp_path / "run"
        code, out, err = _train(capsys, "--data", str(tmp_path / "data"), "--steps", "1", "--out", str(run),
                                "--allow-size-mismatch", *FAST)
        assert code == 0, err
        assert "warning: 900_1.png: hazy (460, 620) and clear (200, 300) differ in size; centre-cropped" in err
        assert json.loads(out.strip().splitlines()[-1])["step"] == 1
        assert (run / "best.safetensors").is_file()

    @pytest.mark.parametrize("border, allowed", [(10, True), (MAX_CROP_BORDER, True), (MAX_CROP_BORDER + 1, False)])
    def test_border_bound(self, tmp_path, border, allowed):
        # SOTS-indoor: the ground truth has a frame of 10 px per side around the hazy image
        gt = _scene(60 + 2 * border, 80 + 2 * border, seed=3)
        pair = Pair(tmp_path / "hazy.png", tmp_path / "clear.png")
        Image.fromarray(gt[border:-border, border:-border]).save(pair.hazy)
        Image.fromarray(gt).save(pair.clear)
        if not allowed:
            with pytest.raises(ValueError, match=rf"{pair.hazy} is 80 x 60 pixels but its clear image {pair.clear} is "
                                                 rf"{80 + 2 * border} x {60 + 2 * border}"):
                load_pair(pair)
            return
        with pytest.warns(UserWarning, match="centre-cropped"):
            hazy, clear = load_pair(pair)
        expected = torch.from_numpy(gt[border:-border, border:-border].astype(np.float32) / 255).permute(2, 0, 1)[None]
        assert torch.equal(clear, expected) and torch.equal(hazy, expected)


# ---------------------------------------------------------------------------------------- config


class TestConfigChecked:
    def test_every_bad_key_named_before_any_data_is_read(self, tmp_path, capsys):
        run = tmp_path / "run"
        missing = tmp_path / "no-such-folder"  # reading data would fail on this: the config is refused first
        code, _, err = _train(capsys, "--data", str(missing), "--steps", "-5", "--out", str(run),
                              "--set", "optim.lr=-1e-3", "--set", "data.crop=0", "--set", "optim.betas=[0.5, 1.5]",
                              "--set", "data.scale_range=[0.9, 0.5]", "--set", "bild.alpha=.nan")
        assert code == 2
        line = err.strip().splitlines()[-1]
        assert "Traceback" not in err and str(missing) not in err
        assert line.startswith("error: invalid training config (6 problem(s)): ")
        for text in ("steps must be > 0, got -5", "optim.lr must be > 0, got -0.001", "data.crop must be > 0, got 0",
                     "optim.betas must be two values in [0, 1), got (0.5, 1.5)",
                     "data.scale_range must be a (low, high) range with low <= high, got [0.9, 0.5]",
                     "bild.alpha must be finite, got nan"):
            assert text in line, text
        assert not run.exists()

    def test_generic_rules_cover_keys_without_their_own(self):
        # a *_range key is checked for order and finiteness whatever its name; a number-typed key for type
        cfg = TrainConfig()
        cfg.data.rerender_beta_scale = (2.0, 1.0)
        cfg.lambda_l1 = "a lot"
        with pytest.raises(ValueError) as info:
            cfg.validate()
        assert "data.rerender_beta_scale must be a (low, high) range with low <= high, got [2.0, 1.0]" in str(info.value)
        assert "lambda_l1 must be a number, got 'a lot'" in str(info.value)

    def test_valid_configs_pass(self):
        for model in ("guided-pix2pix", "aod-net", "msbdn", "ffa-net", "dehazenet", "griddehazenet"):
            load_config(model=model).validate()
        load_config(model="aod-net", overrides=["data.val_fraction={a: 0.2, b: 0.0}", "optim.grad_clip=null"])
        repo = Path(__file__).resolve().parents[1]
        for path in sorted((repo / "configs").rglob("*.yaml")):
            load_config(path)  # every shipped config is within range

    def test_load_config_checks(self, tmp_path):
        (tmp_path / "cfg.yaml").write_text("steps: -5\noptim:\n  lr: -0.1\n")
        with pytest.raises(ValueError, match=r"\(2 problem\(s\)\): optim.lr must be > 0, got -0.1; steps must be > 0"):
            load_config(tmp_path / "cfg.yaml", model="aod-net")

    def test_train_checks_a_config_built_in_python(self, tmp_path):
        from hazefree.training import train

        cfg = TrainConfig(model="aod-net", steps=0, out=str(tmp_path / "run"))
        cfg.data.paired = [str(tmp_path / "no-such-folder")]
        with pytest.raises(ValueError, match=r"steps must be > 0, got 0"):
            train(cfg, progress=False)


# ------------------------------------------------------------------------------ unreadable images


class TestBadImages:
    def _dataset_with_a_truncated_image(self, root: Path) -> Path:
        data = make_paired_dataset(root, 4, 40)
        bad = data / "hazy" / "102_1.png"
        bad.write_bytes(bad.read_bytes()[:-30])  # cut inside the last chunks
        return bad

    def test_stops_naming_the_file_by_default(self, tmp_path, capsys):
        bad = self._dataset_with_a_truncated_image(tmp_path / "data")
        run = tmp_path / "run"
        code, _, err = _train(capsys, "--data", str(tmp_path / "data"), "--steps", "1", "--out", str(run), *FAST)
        assert code == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(f"error: {bad}: truncated")
        assert not run.exists()

    def test_skip_bad_names_each_file_and_what_remains(self, tmp_path, capsys):
        bad = self._dataset_with_a_truncated_image(tmp_path / "data")
        run = tmp_path / "run"
        code, out, err = _train(capsys, "--data", str(tmp_path / "data"), "--steps", "1", "--out", str(run),
                                "--skip-bad", *FAST)
        assert code == 0, err
        assert f"warning: skipped {bad}: truncated" in err
        assert "warning: skipped 1 unreadable image(s) (skip_bad); 3 of 4 pairs and clear + depth samples remain" in err
        assert json.loads(out.strip().splitlines()[-1])["step"] == 1
