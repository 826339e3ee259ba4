"""BILD: the outer gradient (eq. 6i) against finite differences, the weights' behaviour in alpha,
the patch log, checkpoints and resume, Guided-Pix2Pix, the command line, DDP, the noisy-label
diagnostic."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import make_paired_dataset

from hazefree import models
from hazefree.cli import main as cli_main
from hazefree.models.weights import load_weights
from hazefree.training import Bild, SupervisedObjective, Trainer, load_config

REPO = Path(__file__).resolve().parents[1]
TINY_GP2P = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None}


def _outer_setup(alpha: float, relative: bool = False):
    """A float64 AOD-Net, a BILD of the exact form with a perturbed (non-uniform) f_phi, a batch and
    a D_v batch; ``relative=False`` is the paper's R_i."""
    torch.manual_seed(0)
    cfg = load_config(model="aod-net", overrides=["bild.enabled=true", f"bild.alpha={alpha}", "bild.width=4",
                                                  "bild.mode=exact", "bild.ess=0", f"bild.relative={relative}"])
    model = models.create("aod-net").double()
    bild = Bild(SupervisedObjective(model, cfg), cfg, val_batches=None)
    bild.net.double()
    with torch.no_grad():
        for p in bild.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)

    def pairs(n):
        return {k: torch.rand(n, 3, 16, 16, generator=g, dtype=torch.float64) for k in ("hazy", "clear")}

    return bild, pairs(4), pairs(3)


class TestOuterGradient:
    @pytest.mark.parametrize("alpha,relative", [(0.0, False), (0.3, False), (0.3, True)])
    def test_matches_finite_differences(self, alpha, relative):
        """grad_phi of J_v(theta_t(phi)) / s - alpha H(w(phi)), eq. 6i with a per-patch R_i, equals
        central differences of that objective (float64; a large eta, so theta_t is far from theta);
        with ``relative`` the virtual step is on sum_i w_i log l_i."""
        bild, batch, val = _outer_setup(alpha, relative)
        eta = 0.5
        seen = bild.outer_gradient(batch, val, eta)
        assert seen.weights.max() / seen.weights.min() > 2  # a non-trivial point
        grad = [p.grad.clone() for p in bild.net.parameters()]
        g = torch.Generator().manual_seed(2)
        for _ in range(3):
            v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in bild.net.parameters()]
            analytic = sum((a * b).sum() for a, b in zip(grad, v)).item()

            def outer(sign: float, eps: float = 1e-6) -> float:
                with torch.no_grad():
                    for p, d in zip(bild.net.parameters(), v):
                        p.add_(sign * eps * d)
                value = bild.outer_objective(batch, val, eta, seen.scale).item()
                with torch.no_grad():
                    for p, d in zip(bild.net.parameters(), v):
                        p.sub_(sign * eps * d)
                return value

            numeric = (outer(1.0) - outer(-1.0)) / 2e-6
            assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)

    def test_one_scalar_per_batch_gives_no_gradient(self):
        """Why each patch needs its own R_i: a batch-wide scalar times grad_phi sum_i w_i is 0."""
        bild, batch, _ = _outer_setup(0.0)
        w = bild.log_weights(batch).exp()
        (3.7 * w).sum().backward()
        assert max(p.grad.abs().max().item() for p in bild.net.parameters()) < 1e-12


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


class TestFastForm:
    def test_ranks_match_exact_across_a_run(self, tmp_path):
        """The default (fast) R_i data part, a central difference along grad J_v, ranks the patches
        of each batch as the exact double backward does (Spearman >= 0.9 at every compared step),
        and its values agree (Pearson >= 0.99 on average), along a short run. (Probing the last
        parameter tensor's gradient only gave Spearman >= 0.93 but Pearson 0.96 on average here.)"""
        cfg = _run_cfg(tmp_path, steps=12, batch_size=8, bild={"every": 2})
        tr = Trainer(cfg, progress=False)
        rho, pearson = [], []
        for step in range(cfg.steps):
            batch = tr.sampler.batch(step)
            if step % tr.bild.every == 0:
                val = tr.bild.val_batches.batch(step, 0)
                w = tr.bild.log_weights(batch).exp().detach()
                exact, _ = tr.bild.exact_data_part(batch, val, w, tr._lr())
                fast, _ = tr.bild.fast_data_part(batch, val, tr._lr())
                rho.append(_spearman(exact, fast))
                pearson.append(float(torch.corrcoef(torch.stack([exact.double(), fast.double()]))[0, 1]))
            tr.bild.step(batch, step, 0, tr._lr())
        assert min(rho) >= 0.9, (rho, pearson)
        assert np.mean(pearson) >= 0.99, (rho, pearson)

    def test_phi_moves_only_every_k_steps(self, tmp_path):
        """bild.every = 3: phi takes its step at steps 0, 3, 6; in between the weights are f_phi's
        forward on the batch (the reweighter reused)."""
        cfg = _run_cfg(tmp_path, steps=7, bild={"every": 3, "alpha": 0.0, "ess": 0})
        tr = Trainer(cfg, progress=False)
        moved = []
        for step in range(cfg.steps):
            before = [p.detach().clone() for p in tr.bild.net.parameters()]
            batch = tr.sampler.batch(step)
            _, seen = tr.bild.step(batch, step, 0, tr._lr())
            moved.append(any(not torch.equal(a, p) for a, p in zip(before, tr.bild.net.parameters())))
            assert seen.refreshed == (step % 3 == 0)
            with torch.no_grad():
                torch.testing.assert_close(seen.new_weights, tr.bild.log_weights(batch).exp())
        assert moved == [s % 3 == 0 for s in range(cfg.steps)], moved

    def test_exact_mode_every_step_by_default(self, tmp_path):
        cfg = _run_cfg(tmp_path, steps=1, bild={"mode": "exact"})
        assert Trainer(cfg, progress=False).bild.every == 1
        with pytest.raises(ValueError, match="bild.mode"):
            Trainer(_run_cfg(tmp_path, steps=1, bild={"mode": "approx"}), progress=False)


class TestEssRule:
    def test_temper_keeps_the_effective_sample_size(self):
        """beta = temper(scores, share): the largest beta <= 1 with ESS(softmax(beta s)) >= share N."""
        from hazefree.training.bild import _ess, temper

        scores = torch.tensor([6.0, 1.0, 0.0, -1.0, 0.5, 0.0, 2.0, -3.0])
        beta = temper(scores, 0.5)
        assert 0 < beta < 1
        assert _ess(torch.softmax(beta * scores, 0)) == pytest.approx(4.0, rel=1e-6)
        assert _ess(torch.softmax(1.01 * beta * scores, 0)) < 4.0  # the largest such beta
        assert temper(0.01 * scores, 0.5) == 1.0  # already spread enough: untouched

    def test_ceiling_holds_the_effective_sample_size(self):
        """bild.ess_target: beta may exceed 1, so the ESS is share N even for nearly equal scores."""
        from hazefree.training.bild import TARGET_CEILING, _ess, temper

        scores = 0.01 * torch.tensor([6.0, 1.0, 0.0, -1.0, 0.5, 0.0, 2.0, -3.0])
        beta = temper(scores, 0.5, ceiling=TARGET_CEILING)
        assert beta > 1
        assert _ess(torch.softmax(beta * scores, 0)) == pytest.approx(4.0, rel=1e-6)

    def test_keeps_weights_from_collapsing(self, tmp_path):
        """alpha -> 0 lets the weights concentrate on few patches; bild.ess = 0.75 keeps every
        batch's ESS >= 0.75 N."""
        ess = {}
        for target in (0, 0.75):
            cfg = _run_cfg(tmp_path, steps=16, out=str(tmp_path / f"e{target}"), val_every=100, checkpoint_every=100,
                           bild={"alpha": 0.0, "ess": target, "every": 1, "lr": 0.05})
            Trainer(cfg, progress=False).fit()
            w = np.array([float(r["weight"]) for r in _weights(Path(cfg.out))]).reshape(-1, cfg.batch_size)
            ess[target] = 1 / np.square(w).sum(1) / cfg.batch_size
        assert ess[0].min() < 0.6, ess
        assert ess[0.75].min() >= 0.75 - 1e-4, ess


def _run_cfg(tmp_path: Path, steps: int = 4, model: str = "aod-net", **over):
    data = tmp_path / "data"
    if not data.exists():
        make_paired_dataset(data, 8, 40)
    values = {"model": model, "data": {"paired": [str(data)], "crop": 32, "val_fraction": 0.25,
                                       "scale_range": [1.0, 1.0]},
              "batch_size": 4, "steps": steps, "val_every": 2, "checkpoint_every": 2, "log_every": 1,
              "image_every": 100, "out": str(tmp_path / "run"), "seed": 1, "threads": 1,
              "bild": {"enabled": True}}
    if model == "guided-pix2pix":
        values.update(model_options=TINY_GP2P, ndf=4)
    for k, v in over.items():
        values[k] = {**values[k], **v} if isinstance(values.get(k), dict) else v
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(values))
    return load_config(path)


def _weights(run: Path) -> list[dict]:
    with open(run / "patch_weights.csv") as fh:
        return list(csv.DictReader(fh))


class TestWeights:
    def test_large_alpha_keeps_them_uniform_and_zero_alpha_moves_them(self, tmp_path):
        spread = {}
        for alpha in (1e6, 0.0):
            cfg = _run_cfg(tmp_path, steps=15, out=str(tmp_path / f"a{alpha}"), bild={"alpha": alpha, "every": 1},
                           val_every=100, checkpoint_every=100)
            Trainer(cfg, progress=False).fit()
            w = np.array([float(r["weight"]) for r in _weights(Path(cfg.out))])
            spread[alpha] = np.abs(w - 1 / cfg.batch_size).max()
        assert spread[1e6] < 1e-3, spread
        assert spread[0.0] > 1e-2, spread

    def test_patch_log(self, tmp_path):
        cfg = _run_cfg(tmp_path, steps=4, bild={"weights_every": 2})
        tr = Trainer(cfg, progress=False)
        tr.fit()
        rows = _weights(Path(cfg.out))
        assert list(rows[0]) == ["step", "image", "source", "y", "x", "h", "w", "weight"]
        assert {r["source"] for r in rows} == {"data"}
        assert [int(r["step"]) for r in rows] == [2] * 4 + [4] * 4
        names = {Path(f).name for f in tr.bank.files}
        for step in (2, 4):
            batch = tr.sampler.batch(step - 1)  # the batch of step k is drawn at step counter k - 1
            got = [r for r in rows if int(r["step"]) == step]
            assert [r["image"] for r in got] == [Path(tr.bank.files[i]).name for i in batch["index"]]
            assert [[int(r[c]) for c in "yxhw"] for r in got] == batch["box"].tolist()
            assert sum(float(r["weight"]) for r in got) == pytest.approx(1.0, abs=1e-4)
        assert {r["image"] for r in rows} <= names
        assert list((Path(cfg.out) / "tensorboard").iterdir())

    def test_needs_validation_pairs(self, tmp_path):
        with pytest.raises(ValueError, match="BILD needs validation pairs"):
            Trainer(_run_cfg(tmp_path, data={"val_fraction": 0}), progress=False)
        with pytest.raises(ValueError, match="bild.input"):
            Trainer(_run_cfg(tmp_path, bild={"input": "clear"}), progress=False)


class TestValSources:
    def test_dv_from_carved_training_scenes(self, tmp_path):
        """D_v = whole training scenes of the named sources, out of D_t; the validation split untouched."""
        trusted = make_paired_dataset(tmp_path / "trusted", 10, 40, first=100)
        other = make_paired_dataset(tmp_path / "other", 6, 40, seed=1, first=300)
        data = {"paired": [str(trusted), str(other)], "rerender_per_pair": 2, "val_fraction": 0.2}
        cfg = _run_cfg(tmp_path, data=data, bild={"val_sources": ["trusted"], "val_share": 0.25})
        plain = Trainer(_run_cfg(tmp_path, data=data, bild={"enabled": False}), progress=False)
        tr = Trainer(cfg, progress=False)
        bank = tr.bank
        scene = lambda i: (bank.sources[i], bank.names[i].split("_")[0])  # noqa: E731
        assert tr.val_idx == plain.val_idx  # the judge's split is the same with and without BILD
        dv = tr.bild.val_batches.indices
        assert dv and all(Path(bank.sources[i]).name == "trusted" and not bank.rerendered[i] for i in dv)
        carved = {scene(i) for i in dv}
        assert len(carved) == 2  # 25 % of the 8 training scenes of "trusted" (2 of its 10 are validation)
        # D_t lost exactly the carved scenes, re-renders included, and nothing else
        assert set(tr.sampler.indices) == {i for i in plain.sampler.indices if scene(i) not in carved}
        assert not carved & {scene(i) for i in tr.val_idx}

    def test_unknown_source_is_named(self, tmp_path):
        with pytest.raises(ValueError, match="names no training source: nope"):
            Trainer(_run_cfg(tmp_path, bild={"val_sources": ["nope"]}), progress=False)
        with pytest.raises(ValueError, match="both name BILD's D_v"):
            Trainer(_run_cfg(tmp_path, bild={"val_sources": ["data"], "val_data": str(tmp_path / "data")}),
                    progress=False)


class TestMemory:
    def test_evidence_is_the_shrunk_mean_of_centred_parts(self):
        from hazefree.training.bild import ImageEvidence

        ev = ImageEvidence(5, prior=2.0)
        batches = [([0, 1, 2], [1.0, 2.0, 6.0]), ([2, 2, 4], [0.5, -0.5, 3.0]), ([0, 3, 4], [-1.0, 0.0, 1.0])]
        seen: dict[int, list[float]] = {}
        for idx, part in batches:
            ev.add(torch.tensor(idx), torch.tensor(part))
            centre = sum(part) / len(part)
            for i, p in zip(idx, part):
                seen.setdefault(i, []).append(p - centre)
        want = [sum(seen.get(i, [])) / (len(seen.get(i, [])) + 2.0) for i in range(5)]
        torch.testing.assert_close(ev.mean(torch.arange(5)), torch.tensor(want))

    def test_weights_follow_the_evidence(self, tmp_path):
        """With f_phi at its start (zero scores), the weights are softmax(-m / alpha) of the images' means."""
        cfg = _run_cfg(tmp_path, steps=1, bild={"memory": True, "alpha": 0.5, "memory_prior": 1.0})
        tr = Trainer(cfg, progress=False)
        batch = tr.sampler.batch(0)
        idx = batch["index"]
        tr.bild.memory.add(idx, torch.linspace(-1.0, 1.0, len(idx)))
        got = tr.bild.log_weights(batch).exp().detach()
        m = {}
        for i, v in zip(idx.tolist(), torch.linspace(-1.0, 1.0, len(idx)).tolist()):
            m.setdefault(i, []).append(v)  # the parts' mean is 0, so centring leaves them
        score = torch.tensor([-sum(m[i]) / (len(m[i]) + 1.0) / 0.5 for i in idx.tolist()])
        torch.testing.assert_close(got, torch.softmax(score, 0))
        assert got[0] > got[-1]  # the image whose patch hurt the validation loss most weighs least

    def test_needs_positive_alpha(self, tmp_path):
        with pytest.raises(ValueError, match="alpha > 0"):
            Trainer(_run_cfg(tmp_path, bild={"memory": True, "alpha": 0.0}), progress=False)


class TestConsistency:
    def test_pair_consistency(self):
        """c = 1 for a pair rendered with I = J t + A (1 - t) at constant t, near 0 for another
        scene's target, and the cosine of the forward-difference fields (NumPy) on random patches."""
        from hazefree.training.bild import pair_consistency

        torch.manual_seed(0)
        clear = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 40, 40), 3, 1, 1, count_include_pad=False)  # smooth scenes
        hazy = clear * 0.4 + torch.tensor([0.8, 0.85, 0.9]).view(1, 3, 1, 1) * 0.6
        torch.testing.assert_close(pair_consistency(hazy, clear), torch.ones(4))
        assert pair_consistency(hazy, clear.roll(1, dims=0)).abs().max() < 0.2
        a, b = torch.rand(3, 3, 9, 11), torch.rand(3, 3, 9, 11)

        def field(x):
            g = x.mean(axis=0)
            return np.concatenate([np.diff(g, axis=0)[:, :-1].ravel(), np.diff(g, axis=1)[:-1].ravel()])

        want = [float(field(x) @ field(y) / np.linalg.norm(field(x)) / np.linalg.norm(field(y)))
                for x, y in zip(a.double().numpy(), b.double().numpy())]
        torch.testing.assert_close(pair_consistency(a, b), torch.tensor(want, dtype=torch.float32))

    def test_slope_is_the_pooled_within_batch_regression(self):
        from hazefree.training.bild import ConsistencyEvidence

        ev = ConsistencyEvidence(prior=0.5)
        batches = [([0.9, 0.1, 0.8], [-1.0, 2.0, 0.5]), ([0.2, 0.95, 0.9, 0.7], [1.0, -0.5, 0.0, 0.3])]
        sxy = sxx = 0.0
        for c, d in batches:
            ev.add(torch.tensor(c), torch.tensor(d))
            c, d = np.array(c) - np.mean(c), np.array(d) - np.mean(d)
            sxy, sxx = sxy + c @ d, sxx + c @ c
        assert ev.slope() == pytest.approx(sxy / (sxx + 0.5), rel=1e-6)
        assert ev.slope() < 0  # the inconsistent pairs hurt the validation loss here

    def test_weights_follow_the_slope(self, tmp_path):
        """With f_phi at its start (zero scores), the weights are softmax(-b c / alpha)."""
        from hazefree.training.bild import pair_consistency

        cfg = _run_cfg(tmp_path, steps=1, bild={"consistency": True, "alpha": 0.5, "consistency_prior": 1.0})
        tr = Trainer(cfg, progress=False)
        batch = tr.sampler.batch(0)
        tr.bild.consistency.add(torch.tensor([0.0, 1.0, 0.5, 0.2]), torch.tensor([2.0, -2.0, 0.0, 1.0]))
        b = tr.bild.consistency.slope()
        c = pair_consistency(batch["hazy"], batch["clear"])
        got = tr.bild.log_weights(batch).exp().detach()
        torch.testing.assert_close(got, torch.softmax(-b * c / 0.5, 0))
        assert b < 0 and got[c.argmax()] == got.max()

    def test_needs_positive_alpha(self, tmp_path):
        with pytest.raises(ValueError, match="alpha > 0"):
            Trainer(_run_cfg(tmp_path, bild={"consistency": True, "alpha": 0.0}), progress=False)


class TestCheckpoints:
    @pytest.mark.parametrize("inp,memory", [("pair", False), ("hazy", False), ("pair", True), ("pair", "consistency")])
    def test_resume_matches_uninterrupted(self, tmp_path, inp, memory):
        evidence = {"consistency": True} if memory == "consistency" else {"memory": memory}
        bild = {"input": inp, **evidence} | ({"every": 1} if memory else {})
        full = _run_cfg(tmp_path, steps=6, out=str(tmp_path / "full"), bild=bild)
        Trainer(full, progress=False).fit()
        part = _run_cfg(tmp_path, steps=4, out=str(tmp_path / "part"), bild=bild)
        Trainer(part, progress=False).fit()
        with open(Path(part.out) / "patch_weights.csv", "a") as fh:  # a row a killed run wrote after step 4
            fh.write("5,100_1.png,data,0,0,32,32,0.5\n5,10")
        rest = _run_cfg(tmp_path, steps=6, out=str(tmp_path / "part"), bild=bild)
        torch.manual_seed(999)
        tr = Trainer(rest, resume=True, progress=False)
        assert tr.step == 4
        tr.fit()
        kept = {False: (), True: ("reweighter_memory",), "consistency": ("reweighter_consistency",)}[memory]
        for name in ("model", "reweighter") + kept:
            ref = load_weights(Path(full.out) / "checkpoints" / "step_0000006" / f"{name}.safetensors")[0]
            got = load_weights(Path(rest.out) / "checkpoints" / "step_0000006" / f"{name}.safetensors")[0]
            for k in ref:
                torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=f"{name}.{k}")
        assert _weights(Path(rest.out)) == _weights(Path(full.out))

    def test_plain_checkpoint_cannot_resume_with_bild(self, tmp_path):
        plain = _run_cfg(tmp_path, steps=2, bild={"enabled": False})
        Trainer(plain, progress=False).fit()
        with pytest.raises(Exception, match="saved without BILD"):
            Trainer(_run_cfg(tmp_path, steps=4), resume=True, progress=False)

    def test_guided_pix2pix(self, tmp_path):
        cfg = _run_cfg(tmp_path, steps=2, model="guided-pix2pix")
        tr = Trainer(cfg, progress=False)
        before = {k: v.clone() for k, v in tr.model.state_dict().items()}
        losses = tr.fit()
        assert np.isfinite([losses[k] for k in ("loss_g", "loss_d", "bild_val_loss")]).all()
        assert any(not torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())
        files = {p.name for p in (Path(cfg.out) / "checkpoints" / "step_0000002").iterdir()}
        assert files == {"generator.safetensors", "discriminator.safetensors", "reweighter.safetensors", "state.pt"}


class TestCommandLine:
    def test_flags(self, tmp_path, capsys):
        data = make_paired_dataset(tmp_path / "data", 6, 40)
        trusted = make_paired_dataset(tmp_path / "trusted", 2, 40, first=300)
        run = tmp_path / "run"
        code = cli_main(["train", "aod-net", "--data", str(data), "--steps", "2", "--out", str(run), "--no-progress",
                         "--bild", "--bild-alpha", "0.5", "--val-data", str(trusted), "--set", "data.crop=32",
                         "--set", "batch_size=2", "--set", "threads=1"])
        assert code == 0
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["bild"]["enabled"] and saved["bild"]["alpha"] == 0.5 and saved["bild"]["val_data"] == str(trusted)
        assert "bild_val_loss" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (run / "patch_weights.csv").is_file()
        cli_main(["train", "aod-net", "--data", str(data), "--steps", "2", "--out", str(tmp_path / "r2"),
                  "--no-progress", "--bild", "--val-fraction", "0.5", "--set", "data.crop=32", "--set", "batch_size=2"])
        assert yaml.safe_load((tmp_path / "r2" / "config.yaml").read_text())["data"]["val_fraction"] == 0.5
        assert cli_main(["train", "aod-net", "--bild", "--val-fraction", "0.2", "--val-data", str(trusted)]) != 0
        assert "not allowed with" in capsys.readouterr().err


def test_noisy_labels_short(tmp_path):
    """Short version of benchmarks/bild_noisy_labels.py with the default fast probe: noise targets
    on a third of the scenes get clearly smaller weights than clean ones over the second half of
    the run (30 steps, so phi is updated at every step rather than every 4, and a stronger alpha
    than the default: log-weight spread 2 instead of 1). Measured 0.33 (the exact form: 0.33)."""
    spec = importlib.util.spec_from_file_location("bild_noisy_labels", REPO / "benchmarks" / "bild_noisy_labels.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = Namespace(source="synthetic", scene_offset=0, corruption="noise", model="aod-net", train_scenes=12,
                     val_scenes=3, size=40, crop=32, batch=8, steps=30, lr=1e-3, alpha=0.5, input="pair", seed=0, threads=1,
                     set=["bild.every=1"], out=str(tmp_path), runs=["bild"])
    result = bench.run(args)
    assert result["weight_ratio_corrupted_to_clean"] < 0.6, result


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    """torchrun --nproc_per_node=2 with --bild: phi's gradients are averaged over the ranks."""
    make_paired_dataset(tmp_path / "data", 6, 40)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "hazefree", "train", "aod-net", "--data", str(tmp_path / "data"), "--steps", "2", "--out", str(run),
           "--no-progress", "--bild", "--val-fraction", "0.34", "--set", "data.crop=32", "--set", "batch_size=2",
           "--set", "val_every=2", "--set", "checkpoint_every=2", "--set", "threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "step_0000002" / "reweighter.safetensors").is_file()
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("{")]) == 1
    assert len(_weights(run)) == 2  # rank 0's patches of the last step (log_every 10)
