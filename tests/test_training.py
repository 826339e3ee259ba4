"""The shared trainer: config, one step per preset, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_paired_dataset

from hazefree import models
from hazefree.cli import main as cli_main
from hazefree.models.weights import load_weights
from hazefree.training import TrainConfig, Trainer, load_config, load_training_data
from hazefree.training.trainer import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None}


def _dataset(root: Path, n: int = 4, size: int = 40) -> Path:
    return make_paired_dataset(root, n, size)


def _cfg(tmp_path: Path, objective="pix2pix", steps=4, **kw) -> TrainConfig:
    data = _dataset(tmp_path / "data") if not (tmp_path / "data").exists() else tmp_path / "data"
    values = {
        "model": "guided-pix2pix", "model_options": TINY, "objective": objective, "ndf": 4,
        "data": {"paired": [str(data)], "crop": 32, "val_fraction": 0.25, "scale_range": [0.8, 1.0]},
        "batch_size": 2, "steps": steps, "val_every": 2, "checkpoint_every": 2, "log_every": 1,
        "image_every": 2, "out": str(tmp_path / "run"), "seed": 1,
    }
    values.update(kw)
    path = tmp_path / "cfg.yaml"
    import yaml

    path.write_text(yaml.safe_dump(values))
    return load_config(path)


class TestConfig:
    def test_layers_and_overrides(self, tmp_path):
        cfg = load_config(model="guided-pix2pix", overrides=["optim.lr=3e-4", "data.crop=128", "steps=7"])
        assert cfg.optim.lr == pytest.approx(3e-4) and cfg.data.crop == 128 and cfg.steps == 7
        assert cfg.ndf == 16  # per-model default
        assert cfg.optim.betas == (0.5, 0.999) and cfg.lambda_l1 == 100.0

    def test_unknown_key(self):
        with pytest.raises(ValueError, match="unknown OptimConfig key"):
            load_config(model="guided-pix2pix", overrides=["optim.lrr=1"])

    def test_yaml_is_data_only(self, tmp_path):
        bad = tmp_path / "evil.yaml"
        bad.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
        with pytest.raises(ValueError, match="cannot read config"):
            load_config(bad)

    @pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
    def test_committed_configs(self, path):
        cfg = load_config(path)
        # training data: the train split and clear + depth sets only, never an evaluation set
        # (or folders a tool derives from it under runs/, e.g. tools/real_haze_targets.py's real_targets)
        assert all(p.startswith(("../shared/data/train/", "runs/")) for p in cfg.data.paired)
        # stages 1-8 also rendered haze on two depth folders outside train/; stage 9 on uses train/ only
        assert all(p.startswith("../shared/data/train/") or Path(p).name in ("middlebury", "rgbd_sensor")
                   for p in cfg.data.synthetic)
        # a later stage starts from weights of the committed config that precedes it (its best file
        # or one of its checkpoints), from the weights shipped when it was declared, or from weights
        # shipped earlier, named on the init line as "# git show <commit>:hazefree/weights/<file>"
        # with a commit of this repository's history
        outs = {Path(load_config(p).out) for p in CONFIGS.rglob("*.yaml")} - {Path(cfg.out)}
        shipped = re.search(r"^init: \S+\s+# git show ([0-9a-f]{7,40}):hazefree/weights/\S+\.safetensors$",
                            path.read_text(), re.MULTILINE)
        if shipped:
            repo = Path(__file__).resolve().parents[1]
            found = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{shipped[1]}^{{commit}}"],
                                   capture_output=True)
            assert found.returncode == 0, f"{path.name}: commit {shipped[1]} is not in this repository"
        assert (cfg.init is None or cfg.init.startswith("hazefree/weights/") or shipped
                or any(Path(cfg.init).is_relative_to(out) for out in outs))


class TestTrainingData:
    def test_validation_without_rerendered_levels(self, tmp_path):
        data = {"paired": [str(_dataset(tmp_path / "data"))], "rerender_per_pair": 2, "val_fraction": 0.25}
        with_levels = load_training_data(_cfg(tmp_path, data=data))
        bank, train, val = load_training_data(_cfg(tmp_path, data={**data, "val_rerendered": False}))
        scene = lambda i: bank.names[i].split("_")[0]  # noqa: E731
        assert [bank.names[i] for i in with_levels[2]] == ["101_1", "101_1_rr0", "101_1_rr1"]
        assert [bank.names[i] for i in val] == ["101_1"]
        # the held-out scene's levels are not trained on either
        assert train == with_levels[1] and all(scene(i) != "101" for i in train)
        assert sum(bank.rerendered) == 8 and not any(bank.rerendered[i] for i in val)


class TestTrainer:
    @pytest.mark.parametrize("objective", ["pix2pix", "supervised"])
    def test_steps_checkpoint_best(self, tmp_path, objective):
        cfg = _cfg(tmp_path, objective)
        result = Trainer(cfg, progress=False).fit()
        assert np.isfinite(list(result.values())).all() and "val_psnr" in result
        run = Path(cfg.out)
        ckpts = sorted((run / "checkpoints").glob("step_*"))
        assert [c.name for c in ckpts] == ["step_0000002", "step_0000004"]
        assert not list((run / "checkpoints").glob(".tmp*"))
        best = models.load_file(run / "best.safetensors")
        assert isinstance(best, models.GuidedPix2Pix) and not best.training
        best_info = json.loads((run / "best.json").read_text())
        assert best_info["step"] in (2, 4) and best_info["val_psnr"] >= result["val_psnr"] - 1e-9
        assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())

    def test_validate_only_scores_weights_on_the_split(self, tmp_path, capsys):
        cfg = _cfg(tmp_path)
        Trainer(cfg, progress=False).fit()
        best = Path(cfg.out) / "best.safetensors"
        files_before = sorted(p for p in tmp_path.rglob("*"))
        code = cli_main(["train", "guided-pix2pix", "--config", str(tmp_path / "cfg.yaml"), "--validate", str(best),
                         "--out", str(tmp_path / "elsewhere")])
        assert code == 0
        scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        best_info = json.loads((Path(cfg.out) / "best.json").read_text())
        assert scored["val_psnr"] == pytest.approx(best_info["val_psnr"], abs=1e-9)
        assert sorted(p for p in tmp_path.rglob("*")) == files_before  # nothing written
        # an option recorded with the weights and absent from the config is used
        state, _ = load_weights(best)
        models.save_weights(state, tmp_path / "t.safetensors", "guided-pix2pix", {**TINY, "t_min": 0.6})
        cli_main(["train", "guided-pix2pix", "--config", str(tmp_path / "cfg.yaml"), "--validate",
                  str(tmp_path / "t.safetensors")])
        clamped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert clamped["val_psnr"] != pytest.approx(scored["val_psnr"], abs=1e-3)

    def test_airlight_error_tool(self, tmp_path):
        # the fixtures are rendered with A = 0.85 (tests/helpers.py); the tool compares each model's A
        cfg = _cfg(tmp_path)
        net = models.create("guided-pix2pix", **TINY, airlight="max_luma")
        models.save_weights(net, tmp_path / "w.safetensors", "guided-pix2pix", {**TINY, "airlight": "max_luma"})
        tool = Path(__file__).resolve().parents[1] / "tools" / "airlight_error.py"
        out = subprocess.run([sys.executable, str(tool), str(tmp_path / "cfg.yaml"), str(tmp_path / "w.safetensors")],
                             capture_output=True, text=True, check=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        tr = Trainer(cfg, progress=False)
        expected = [(net.eval()(tr.bank.full(i)[0]).airlight - 0.85).abs().mean().item() for i in tr.val_idx]
        assert got["images"] == len(expected) > 0 and got["skipped"] == 0
        assert got["mean_abs_airlight_error"] == pytest.approx(sum(expected) / len(expected), abs=2e-3)

    def test_lr_schedule(self, tmp_path):
        cfg = _cfg(tmp_path, "supervised", steps=5, optim={"lr": 1e-3, "lr_decay": 0.5, "lr_decay_every": 2})
        tr = Trainer(cfg, progress=False)
        tr.fit()
        assert tr.objective.optimizers()["model"].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)

    def test_resume_matches_uninterrupted(self, tmp_path):
        full = _cfg(tmp_path, steps=6)
        torch.manual_seed(123)  # the trainer must not depend on the caller's RNG state
        ref_result = Trainer(full, progress=False).fit()
        ref = load_weights(Path(full.out) / "checkpoints" / "step_0000006" / "generator.safetensors")[0]

        part = _cfg(tmp_path, steps=4, out=str(tmp_path / "run2"))
        Trainer(part, progress=False).fit()
        rest = _cfg(tmp_path, steps=6, out=str(tmp_path / "run2"))
        torch.manual_seed(999)
        tr = Trainer(rest, resume=True, progress=False)
        assert tr.step == 4
        result = tr.fit()
        got = load_weights(Path(rest.out) / "checkpoints" / "step_0000006" / "generator.safetensors")[0]
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
        for k in ("loss_g", "loss_d", "val_psnr"):
            assert result[k] == pytest.approx(ref_result[k], rel=0, abs=0)

    def test_validation_per_source(self, tmp_path):
        big = make_paired_dataset(tmp_path / "big", 8, 40)
        small = make_paired_dataset(tmp_path / "small", 4, 40, seed=1, first=200)
        runs = {}
        for how in ("image", "source"):
            cfg = _cfg(tmp_path, "supervised", data={
                "paired": [str(big), str(small)], "crop": 32, "val_fraction": 0.5, "val_average": how})
            runs[how] = Trainer(cfg, progress=False)
        tr = runs["image"]
        n = {src: sum(tr.bank.sources[i] == src for i in tr.val_idx) for src in (str(big), str(small))}
        assert all(n.values())
        by_image, by_source = runs["image"].validate(), runs["source"].validate()
        p_big, p_small = by_image["val_psnr@big"], by_image["val_psnr@small"]
        assert p_big != pytest.approx(p_small)
        total = n[str(big)] + n[str(small)]
        assert by_image["val_psnr"] == pytest.approx((n[str(big)] * p_big + n[str(small)] * p_small) / total)
        assert by_source["val_psnr"] == pytest.approx((p_big + p_small) / 2)
        # a cap on the number of validation images keeps every source when averaging over sources
        for how, expected in (("image", {str(big)}), ("source", {str(big), str(small)})):
            cfg = _cfg(tmp_path, "supervised", data={
                "paired": [str(big), str(small)], "crop": 32, "val_fraction": 0.5, "val_average": how,
                "val_max_images": 2})
            capped = Trainer(cfg, progress=False)
            assert len(capped.val_idx) == 2
            assert {capped.bank.sources[i] for i in capped.val_idx} == expected
        with pytest.raises(ValueError, match="val_average"):
            Trainer(_cfg(tmp_path, data={"paired": [str(big)], "val_average": "scene"}), progress=False)

    def test_validation_by_group(self, tmp_path):
        """val_average "group": weighted mean of each group's image mean; split_seed fixes the split."""
        a = make_paired_dataset(tmp_path / "a", 8, 40)
        b = make_paired_dataset(tmp_path / "b", 4, 40, seed=1, first=200)
        c = make_paired_dataset(tmp_path / "c", 4, 40, seed=2, first=400)
        data = {"paired": [str(a), str(b), str(c)], "crop": 32, "val_fraction": {"a": 0.5, "b": 0.5, "c": 0.5},
                "val_average": "group",
                "val_groups": {"one": ["a"], "two": ["b", "c"]}, "val_group_weights": {"two": 0.5}, "split_seed": 3}
        tr = Trainer(_cfg(tmp_path, "supervised", data=data), progress=False)
        m = tr.validate()
        n = {k: sum(tr.bank.sources[i].endswith(f"/{k}") for i in tr.val_idx) for k in "abc"}
        two = (n["b"] * m["val_psnr@b"] + n["c"] * m["val_psnr@c"]) / (n["b"] + n["c"])
        assert m["val_psnr@group:one"] == pytest.approx(m["val_psnr@a"])
        assert m["val_psnr@group:two"] == pytest.approx(two)
        assert m["val_psnr"] == pytest.approx((m["val_psnr@a"] + 0.5 * two) / 1.5)
        # the split follows split_seed, not the run's seed
        other = Trainer(_cfg(tmp_path, "supervised", data=data, seed=7), progress=False)
        assert other.val_idx == tr.val_idx
        with pytest.raises(ValueError, match="in no val_groups group"):
            Trainer(_cfg(tmp_path, "supervised", data={**data, "val_groups": {"one": ["a"], "two": ["b"]}}),
                    progress=False).validate()
        with pytest.raises(ValueError, match="val_groups is needed"):
            Trainer(_cfg(tmp_path, "supervised", data={**data, "val_groups": {}}), progress=False)
        with pytest.raises(ValueError, match="names groups not in val_groups"):
            Trainer(_cfg(tmp_path, "supervised", data={**data, "val_group_weights": {"three": 1.0}}), progress=False)

    def test_weight_average(self, tmp_path):
        """ema_decay d: after the first step the average is the weights, then d * avg + (1 - d) * w."""
        cfg = _cfg(tmp_path, "supervised", steps=1, ema_decay=0.75, val_every=100, checkpoint_every=1)
        tr = Trainer(cfg, progress=False)
        tr.fit()
        w1 = {k: v.clone() for k, v in tr.model.state_dict().items()}
        tr.cfg.steps = 2
        tr.fit()
        w2 = tr.model.state_dict()
        avg = tr.ema.module.state_dict()
        for k in w1:
            torch.testing.assert_close(avg[k], 0.75 * w1[k] + 0.25 * w2[k], msg=k)
        assert any(not torch.equal(avg[k], w2[k]) for k in w2)
        # the average is what gets validated, checkpointed and kept as best
        saved = load_weights(Path(cfg.out) / "checkpoints" / "step_0000002" / "ema.safetensors")[0]
        best = load_weights(Path(cfg.out) / "best.safetensors")[0]
        for k in avg:
            torch.testing.assert_close(saved[k], avg[k], rtol=0, atol=0, msg=k)
            torch.testing.assert_close(best[k], avg[k], rtol=0, atol=0, msg=k)

    def test_weight_average_resumes(self, tmp_path):
        full = _cfg(tmp_path, "supervised", steps=4, ema_decay=0.5)
        Trainer(full, progress=False).fit()
        ref = load_weights(Path(full.out) / "checkpoints" / "step_0000004" / "ema.safetensors")[0]
        part = _cfg(tmp_path, "supervised", steps=2, ema_decay=0.5, out=str(tmp_path / "run2"))
        Trainer(part, progress=False).fit()
        rest = _cfg(tmp_path, "supervised", steps=4, ema_decay=0.5, out=str(tmp_path / "run2"))
        Trainer(rest, resume=True, progress=False).fit()
        got = load_weights(Path(rest.out) / "checkpoints" / "step_0000004" / "ema.safetensors")[0]
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
        # a checkpoint written without an average cannot silently start one from the raw weights
        plain = _cfg(tmp_path, "supervised", steps=2, out=str(tmp_path / "run3"))
        Trainer(plain, progress=False).fit()
        with pytest.raises(Exception, match="without a weight average"):
            Trainer(_cfg(tmp_path, "supervised", steps=4, ema_decay=0.5, out=str(tmp_path / "run3")),
                    resume=True, progress=False)
        with pytest.raises(ValueError, match="ema_decay"):
            Trainer(_cfg(tmp_path, "supervised", ema_decay=1.5, out=str(tmp_path / "run4")), progress=False)

    def test_oracle_airlight_tool(self, tmp_path):
        # fixtures rendered with A = 0.85: the tool swaps in the fitted A, then the fitted t
        cfg = _cfg(tmp_path)
        net = models.create("guided-pix2pix", **TINY, airlight="max_luma")
        models.save_weights(net, tmp_path / "w.safetensors", "guided-pix2pix", {**TINY, "airlight": "max_luma"})
        tool = Path(__file__).resolve().parents[1] / "tools" / "oracle_airlight.py"
        out = subprocess.run([sys.executable, str(tool), str(tmp_path / "cfg.yaml"), str(tmp_path / "w.safetensors"),
                              "--json", str(tmp_path / "rows.json")], capture_output=True, text=True, check=True).stdout
        rows = json.loads((tmp_path / "rows.json").read_text())
        tr = Trainer(cfg, progress=False)
        assert len(rows) == len(tr.val_idx) > 0 and "data" in out.splitlines()[1]
        from hazefree.metrics import psnr

        for row, i in zip(rows, tr.val_idx):
            hazy, clear = tr.bank.full(i)
            assert row["fitted_airlight"] == pytest.approx(0.85, abs=0.011)
            assert row["model"] == pytest.approx(psnr(net.eval()(hazy).clear, clear).item(), abs=1e-4)
            assert row["fitted_t"] > row["model"]  # an untrained U-Net's t is far from the fitted one
            # the fitted t (a smooth ramp) through the model's guided filter in place of t0: near the
            # fitted t's score, far above the network's own t0
            assert row["filtered_t"] > row["model"] + 3 and abs(row["filtered_t"] - row["fitted_t"]) < 3
        assert out.splitlines()[1].endswith("0.85-0.85")  # the range of the fitted airlights
        # the training side: other images, none of the validation ones
        subprocess.run([sys.executable, str(tool), str(tmp_path / "cfg.yaml"), str(tmp_path / "w.safetensors"),
                        "--split", "train", "--json", str(tmp_path / "train.json")], check=True, capture_output=True)
        train_names = {r["name"] for r in json.loads((tmp_path / "train.json").read_text())}
        assert train_names and not train_names & {r["name"] for r in rows}

    def test_init_from_weights(self, tmp_path):
        first = _cfg(tmp_path, steps=2)
        Trainer(first, progress=False).fit()
        best = Path(first.out) / "best.safetensors"
        second = _cfg(tmp_path, steps=2, out=str(tmp_path / "stage2"), init=str(best), seed=7)
        for resume in (False, True):  # --resume without a checkpoint yet also starts from init
            tr = Trainer(second, resume=resume, progress=False)
            for k, v in load_weights(best)[0].items():
                torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
        # a head added on top of the previous stage starts fresh; every other weight is the stage's
        headed = _cfg(tmp_path, steps=2, out=str(tmp_path / "stage2h"), init=str(best),
                      model_options={**TINY, "airlight_head": True}, init_new_modules=["airlight_head"])
        tr = Trainer(headed, progress=False)
        for k, v in load_weights(best)[0].items():
            torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
        with pytest.raises(Exception, match="missing: airlight_head"):
            Trainer(_cfg(tmp_path, steps=2, out=str(tmp_path / "stage2x"), init=str(best),
                         model_options={**TINY, "airlight_head": True}), progress=False)
        with pytest.raises(Exception, match="no such file"):
            Trainer(_cfg(tmp_path, out=str(tmp_path / "bad"), init=str(tmp_path / "missing.safetensors")),
                    progress=False)

    def test_airlight_loss_supervises_the_head_where_the_data_know_a(self, tmp_path):
        # the fixtures are rendered with A = 0.85; re-rendering fits it, so the bank knows it
        cfg = _cfg(tmp_path, "supervised", steps=4, airlight_loss=1.0,
                   model_options={**TINY, "airlight": "max_luma", "airlight_head": True},
                   data={"paired": [str(_dataset(tmp_path / "data"))], "crop": 32, "val_fraction": 0.25,
                         "rerender_per_pair": 1, "rerender_min_fit_db": 40.0})
        tr = Trainer(cfg, progress=False)
        batch = tr.sampler.batch(0)
        torch.testing.assert_close(batch["airlight"], torch.full((2, 3), 0.85), atol=0.011, rtol=0)
        losses = tr.objective.losses(batch)
        out = tr.model(batch["hazy"])
        err = (out.airlight.flatten(1) - batch["airlight"]).abs().mean(1)
        torch.testing.assert_close(losses["loss_airlight"], err)
        assert np.isfinite(tr.fit()["loss_airlight"])
        # a sample whose airlight is not known adds nothing
        batch["airlight"][0] = float("nan")
        unknown = tr.objective.losses(batch)
        assert unknown["loss_airlight"][0] == 0 and unknown["loss_airlight"][1] > 0
        with pytest.raises(ValueError, match="airlight_loss needs"):
            from hazefree.training.objectives import airlight_error
            airlight_error(None, batch["airlight"])

    def test_pix2pix_adds_the_airlight_term_on_the_l1_scale(self, tmp_path):
        data = {"paired": [str(_dataset(tmp_path / "data"))], "crop": 32, "val_fraction": 0.25,
                "rerender_per_pair": 1, "rerender_min_fit_db": 40.0}
        logs = {}
        for weight in (0.0, 1.0):
            torch.manual_seed(0)
            cfg = _cfg(tmp_path / str(weight), "pix2pix", steps=1, airlight_loss=weight,
                       model_options={**TINY, "airlight": "max_luma", "airlight_head": True}, data=data)
            tr = Trainer(cfg, progress=False)
            logs[weight] = tr.objective.step(tr.sampler.batch(0))
        assert "loss_g_airlight" not in logs[0.0] and logs[1.0]["loss_g_airlight"] > 0
        expected = logs[0.0]["loss_g"] + tr.objective.lambda_l1 * logs[1.0]["loss_g_airlight"]
        assert logs[1.0]["loss_g"] == pytest.approx(expected, rel=1e-5)

    def test_transmission_loss_supervises_t0_with_the_rendering_t(self, tmp_path):
        # the fixtures are rendered with A = 0.85 and t a ramp across the width (helpers); the bank
        # knows A from re-rendering, so the term compares t0 with the t that renders the crop
        cfg = _cfg(tmp_path, "supervised", steps=2, transmission_loss=0.5,
                   model_options={**TINY, "airlight": "max_luma"},
                   data={"paired": [str(_dataset(tmp_path / "data"))], "crop": 32, "val_fraction": 0.25,
                         "rerender_per_pair": 1, "rerender_min_fit_db": 40.0})
        tr = Trainer(cfg, progress=False)
        batch = tr.sampler.batch(0)
        torch.manual_seed(0)  # the same dropout in both forwards
        losses = tr.objective.losses(batch)
        torch.manual_seed(0)
        out = tr.model(batch["hazy"])
        # independently: I = J t + A (1 - t) with A = 0.85 per channel, t by least squares in NumPy,
        # on the pixels where |J - A|^2 summed over the channels is at least 0.01
        hazy, clear = batch["hazy"].double().numpy(), batch["clear"].double().numpy()
        a = batch["airlight"].double().numpy()[:, :, None, None]
        num, den = ((hazy - a) * (clear - a)).sum(1), ((clear - a) ** 2).sum(1)
        t = np.clip(num / (den + 1e-8), 0, 1)
        valid = den >= 0.01
        t0 = out.coarse_transmission[:, 0].detach().double().numpy()
        expected = [np.abs(t0[k] - t[k])[valid[k]].mean() for k in range(len(t))]
        np.testing.assert_allclose(losses["loss_transmission"].detach().numpy(), expected, rtol=1e-4)
        l1 = (out.clear - batch["clear"]).abs().flatten(1).mean(1)
        torch.testing.assert_close(losses["loss"], l1 + 0.5 * losses["loss_transmission"], rtol=1e-5, atol=1e-6)
        assert np.isfinite(tr.fit()["loss_transmission"])
        # a sample whose airlight is not known adds nothing
        batch["airlight"][0] = float("nan")
        unknown = tr.objective.losses(batch)["loss_transmission"]
        assert unknown[0] == 0 and unknown[1] > 0

    def test_transmission_error_at_a_smaller_working_size(self):
        # t0 at half the crop's size is compared with the determined pixels' t averaged over 2 x 2
        from hazefree.physics import add_haze
        from hazefree.training.objectives import transmission_error

        # (the first two columns' J equals A: their t is undetermined and left out, whatever t0 is there)
        gen = torch.Generator().manual_seed(0)
        clear = 0.5 * torch.rand(1, 3, 8, 8, generator=gen)
        clear[..., :2] = 0.9
        t = torch.linspace(0.2, 0.9, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
        hazy = add_haze(clear, t, 0.9)
        batch = {"hazy": hazy, "clear": clear, "airlight": torch.full((1, 3), 0.9)}
        halves = t.reshape(1, 1, 4, 2, 4, 2).mean((3, 5)).clone()
        halves[..., 0] = 5.0
        assert transmission_error(halves, batch).item() == pytest.approx(0.0, abs=1e-6)
        assert transmission_error(halves + 0.1, batch).item() == pytest.approx(0.1, abs=1e-6)
        with pytest.raises(ValueError, match="transmission_loss needs"):
            transmission_error(None, batch)

    def test_airlight_head_fit_on_whole_images(self, tmp_path):
        # stage 1: a tiny model; stage 2 fits a head onto it with everything else frozen
        first = _cfg(tmp_path, "supervised", steps=2, model_options={**TINY, "airlight": "max_luma"})
        Trainer(first, progress=False).fit()
        init = str(Path(first.out) / "best.safetensors")
        data = {"paired": [str(tmp_path / "data")], "val_fraction": 0.25, "rerender_per_pair": 2,
                "rerender_min_fit_db": 40.0}
        # an untrained U-Net's t says little, so the airlight term leads (weight 20)
        cfg = _cfg(tmp_path, "airlight_head", steps=40, val_every=20, batch_size=4, airlight_loss=20.0,
                   init=init, init_new_modules=["airlight_head"], out=str(tmp_path / "head"), data=data,
                   model_options={**TINY, "airlight": "max_luma", "airlight_head": True},
                   optim={"lr": 1e-2, "schedule": "constant", "betas": [0.9, 0.999]})
        from hazefree.training.airlight import head_examples, head_loss
        from hazefree.training.trainer import train

        best = train(cfg, progress=False)
        fitted = models.load_file(Path(cfg.out) / "best.safetensors")
        start, _ = load_weights(init)
        for k, v in start.items():  # the frozen model is untouched
            torch.testing.assert_close(fitted.state_dict()[k], v, rtol=0, atol=0, msg=k)
        log = json.loads((Path(cfg.out) / "log.json").read_text())
        assert [r["step"] for r in log] == [20, 40] and best["val_psnr"] == max(r["val_psnr"] for r in log)
        # the head learned: its airlight error on the cached training images fell (fixtures: A = 0.85)
        bank, train_idx, _ = load_training_data(cfg)
        fresh = build_model(cfg)
        fresh.load_state_dict({**fitted.state_dict(), **{k: torch.zeros_like(v) for k, v in
                                                          fitted.state_dict().items() if k.endswith("mlp.2.weight")
                                                          or k.endswith("mlp.2.bias")}})
        ex = head_examples(fitted, bank, train_idx, seed=0, progress=False)
        idx = torch.arange(len(ex.inputs))
        assert head_loss(fitted.airlight_head, ex, idx, cfg)[1].mean() < head_loss(fresh.airlight_head, ex, idx, cfg)[1].mean()
        with pytest.raises(ValueError, match="needs model_options.airlight_head"):
            train(_cfg(tmp_path, "airlight_head", init=init, out=str(tmp_path / "x")), progress=False)

    def test_one_step_each_preset(self, tmp_path):
        for name, crop in (("guided-pix2pix", 64), ("guided-pix2pix-paper", 256)):
            cfg = load_config(model=name, overrides=[
                f"data.paired={json.dumps([str(_dataset(tmp_path / name, n=2, size=crop))])}",
                f"data.crop={crop}", "batch_size=1", "steps=1", "val_every=100", "checkpoint_every=100",
                "data.val_fraction=0", f"out={tmp_path / (name + '_run')}",
            ])
            net = models.create(name)
            before = {k: v.clone() for k, v in net.state_dict().items()}
            tr = Trainer(cfg, progress=False)
            tr.model.load_state_dict(before)
            losses = tr.fit()
            assert np.isfinite(losses["loss_g"])
            changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
            assert changed, f"{name}: no parameter moved after one step"


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    """torchrun --nproc_per_node=2 on CPU (gloo): both ranks train on their own batches."""
    _dataset(tmp_path / "data", n=4)
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        "-m", "hazefree", "train", "guided-pix2pix", "--data", str(tmp_path / "data"), "--steps", "2",
        "--out", str(run), "--no-progress",
        "--set", f"model_options={json.dumps(TINY)}", "--set", "ndf=4", "--set", "data.crop=32",
        "--set", "batch_size=1", "--set", "val_every=2", "--set", "checkpoint_every=2", "--set", "threads=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "step_0000002" / "generator.safetensors").is_file()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 reports
