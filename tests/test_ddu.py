"""DDU, the down-up wrapper (hazefree.models.ddu): start state, gradients, functional use, files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import make_paired_dataset
from PIL import Image
from torch.func import functional_call, grad, vmap

from hazefree import cli, models
from hazefree.io import read_image
from hazefree.models import DownUp
from hazefree.models.weights import load_weights
from hazefree.training import Trainer, load_config


def _reference(net: DownUp, x: torch.Tensor) -> models.DehazeOutput:
    """The wrapped model on the 1/S image, its outputs upsampled bilinearly: DDU at initialisation."""
    low = F.interpolate(x, size=net.low_size(*x.shape[-2:]), mode="bilinear", align_corners=False, antialias=True)
    out = net.model(low)
    up = lambda t: None if t is None else F.interpolate(t, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out._replace(clear=up(out.clear), transmission=up(out.transmission))


def _trained_like(net: DownUp, seed: int = 0) -> DownUp:
    """``net`` with a non-zero last grid layer, as after some training (otherwise T = 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.upsampler.grid_net[-1].parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


class TestStart:
    @pytest.mark.parametrize("name", ["aod-net", "dcp", "dehazenet"])
    @pytest.mark.parametrize("mode", ["train", "eval", "bands"])
    def test_equals_bilinear_upsampling_of_the_wrapped_output(self, name, mode):
        torch.manual_seed(0)
        net = models.create(name, ddu=4).train(mode != "eval")
        if mode == "bands":  # the row bands a large image runs in
            net.upsampler.band_pixels = 53 * 9
        x = torch.rand(2, 3, 70, 53)  # sides not divisible by S
        with torch.no_grad():
            got, ref = net(x), _reference(net, x)
        assert got.clear.shape == x.shape
        torch.testing.assert_close(got.clear, ref.clear, rtol=0, atol=1e-5)
        if ref.transmission is None:
            assert got.transmission is None
        else:  # the CLI's --save-transmission needs a full-size t
            assert got.transmission.shape == (2, 1, 70, 53)
            torch.testing.assert_close(got.transmission, ref.transmission, rtol=0, atol=1e-6)
        assert (got.airlight is None) == (ref.airlight is None)

    def test_trained_grid_changes_the_output(self):
        net = _trained_like(models.create("aod-net", ddu=4)).eval()
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            assert (net(x).clear - _reference(net, x).clear).abs().max() > 1e-3

    def test_no_hidden_state(self):
        assert not list(models.create("aod-net", ddu=4).buffers())


class TestGradients:
    def test_reach_the_wrapped_model_and_the_upsampler(self):
        torch.manual_seed(0)
        net = models.create("aod-net", ddu=4).train()
        x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
        (net(x).clear - y).square().mean().backward()
        assert all(p.grad.abs().sum() > 0 for p in net.model.parameters())
        # at the start only the zero last layer of the grid sees a gradient (the rest is behind it) ...
        assert net.upsampler.grid_net[-1].weight.grad.abs().sum() > 0
        torch.optim.SGD(net.parameters(), lr=0.1).step()
        net.zero_grad()
        (net(x).clear - y).square().mean().backward()
        # ... after one step every parameter of both parts gets one
        silent = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert not silent, silent

    def test_bands_match_one_pass(self):
        # a 4K image runs in recomputed bands; values and gradients must equal the one-pass result
        net = _trained_like(models.create("aod-net", ddu=4)).double()
        x = torch.rand(1, 3, 40, 36, dtype=torch.float64, requires_grad=True)
        results = []
        for band_pixels in (36 * 7, 1 << 20):  # 6 bands of 7 rows (the last shorter), then one pass
            net.upsampler.band_pixels = band_pixels
            out = net(x).clear
            results.append((out, torch.autograd.grad(out.square().sum(), [x, *net.parameters()])))
        (a, ga), (b, gb) = results
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


class TestFunctional:
    @pytest.mark.parametrize("band_pixels", [1 << 19, 32 * 5])
    def test_functional_call_with_other_parameters(self, band_pixels):
        torch.manual_seed(0)
        net = _trained_like(models.create("aod-net", ddu=4)).double()
        net.upsampler.band_pixels = band_pixels
        other = _trained_like(models.create("aod-net", ddu=4), seed=1).double()
        other.upsampler.band_pixels = band_pixels
        params = {k: v.detach().clone().requires_grad_() for k, v in other.named_parameters()}
        x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
        out = functional_call(net, params, (x,)).clear
        g = torch.autograd.grad(out.square().sum(), list(params.values()))  # backward after the call
        ref = other(x).clear
        g_ref = torch.autograd.grad(ref.square().sum(), list(other.parameters()))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        for u, v in zip(g, g_ref):
            torch.testing.assert_close(u, v)

    def test_per_sample_gradients_by_vmap(self):
        # what a bi-level reweighting step (BILD) computes: one gradient per patch
        net = _trained_like(models.create("aod-net", ddu=4))
        params = {k: v.detach() for k, v in net.named_parameters()}
        x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)

        def loss(p, xi, yi):
            return (functional_call(net, p, (xi[None],)).clear - yi[None]).square().mean()

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        for i in range(3):
            one = torch.autograd.grad(loss(dict(net.named_parameters()), x[i], y[i]), list(net.parameters()))
            for k, v in zip(params, one):
                torch.testing.assert_close(per_sample[k][i], v, rtol=1e-4, atol=1e-6)


class TestOptions:
    @pytest.mark.parametrize("bad", [0, 1, -4, 2.5, "4", True])
    def test_bad_factor(self, bad):
        with pytest.raises(ValueError, match=r"ddu must be an integer downsampling factor >= 2.*got"):
            models.create("aod-net", ddu=bad)

    def test_bad_upsampler(self):
        with pytest.raises(ValueError, match="unknown DDU upsampler 'nearest'; choose one of bilateral"):
            models.create("aod-net", ddu=4, ddu_upsampler="nearest")
        with pytest.raises(ValueError, match="needs a ddu factor"):
            models.create("aod-net", ddu_upsampler="bilinear")

    def test_image_smaller_than_factor(self):
        with pytest.raises(ValueError, match=r"3 x 20 pixels is smaller than the DDU factor 4"):
            models.create("aod-net", ddu=4)(torch.rand(1, 3, 3, 20))

    @pytest.mark.parametrize("kind", ["bilinear", "guided"])
    def test_parameter_free_upsamplers(self, kind):
        net = models.create("aod-net", ddu=4, ddu_upsampler=kind).eval()
        assert models.count_parameters(net) == models.count_parameters(net.model)
        x = torch.rand(1, 3, 64, 48)
        out = net(x).clear
        assert out.shape == x.shape and torch.isfinite(out).all()
        if kind == "bilinear":
            torch.testing.assert_close(out, _reference(net, x).clear)


class TestFiles:
    def test_round_trip(self, tmp_path):
        net = _trained_like(models.create("aod-net", ddu=4)).eval()
        path = tmp_path / "ddu.safetensors"
        models.save_weights(net, path, model_name="aod-net", options={})
        _, meta = load_weights(path)
        assert json.loads(meta["options"]) == {"ddu": 4, "ddu_upsampler": "bilateral"}
        back = models.load_file(path)
        assert isinstance(back, DownUp) and back.scale == 4 and not back.training
        x = torch.rand(1, 3, 48, 40)
        with torch.no_grad():
            torch.testing.assert_close(back(x).clear, net(x).clear, rtol=0, atol=0)

    def test_plain_weights_into_a_new_wrapper(self, tmp_path):
        plain = models.create("aod-net").eval()
        path = tmp_path / "plain.safetensors"
        models.save_weights(plain, path, model_name="aod-net", options={})
        wrapped = models.load_file(path, ddu=4)
        assert isinstance(wrapped, DownUp)
        torch.testing.assert_close(wrapped.model.conv5.weight, plain.conv5.weight, rtol=0, atol=0)
        x = torch.rand(1, 3, 48, 40)
        with torch.no_grad():  # adding DDU to trained weights changes nothing until it is trained
            torch.testing.assert_close(wrapped(x).clear, _reference(wrapped, x).clear, rtol=0, atol=1e-5)

    def test_wrong_file_is_a_clear_error(self, tmp_path):
        net = models.create("aod-net", ddu=4)
        path = tmp_path / "ddu.safetensors"
        # a state dict (not the module) is written with the options it is given: here a wrong record
        models.save_weights(net.state_dict(), path, model_name="aod-net",
                            options={"ddu": 4, "ddu_upsampler": "bilinear"})
        with pytest.raises(models.CheckpointError, match="unexpected: upsampler"):
            models.load_file(path)  # the file says bilinear, but its tensors hold a bilateral upsampler


def _write_image(path, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    pixels = (120 + 80 * rng.random((*size, 3))).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


class TestCommandLine:
    def test_dehaze_with_a_ddu_weights_file(self, tmp_path, capsys):
        net = _trained_like(models.create("dehazenet", ddu=2)).eval()
        weights = tmp_path / "w.safetensors"
        models.save_weights(net, weights, model_name="dehazenet", options={})
        src = _write_image(tmp_path / "a.png")
        out_dir = tmp_path / "out"
        code = cli.main(["dehaze", str(src), "-o", str(out_dir), "--method", str(weights), "--save-transmission"])
        assert code == 0, capsys.readouterr().err
        got = read_image(out_dir / "a.png").rgb
        with torch.no_grad():
            expected = net(read_image(src).rgb).clear
        assert (got - expected).abs().max() <= 1.0 / 255 + 1e-6  # 8-bit output
        t = read_image(out_dir / "a_transmission.png").rgb
        assert t.shape[-2:] == (40, 48)

    def test_dehaze_too_small_names_the_file(self, tmp_path, capsys):
        weights = tmp_path / "w.safetensors"
        models.save_weights(models.create("aod-net", ddu=8), weights, model_name="aod-net", options={})
        src = _write_image(tmp_path / "tiny.png", size=(5, 40))
        code = cli.main(["dehaze", str(src), "-o", str(tmp_path / "out"), "--method", str(weights)])
        err = capsys.readouterr().err
        assert code != 0 and "tiny.png" in err and "smaller than the DDU factor 8" in err
        assert not (tmp_path / "out" / "tiny.png").exists()

    def test_train_rejects_a_bad_factor(self, tmp_path, capsys):
        data = make_paired_dataset(tmp_path / "data", 2, 40)
        code = cli.main(["train", "aod-net", "--ddu", "1", "--data", str(data), "--out", str(tmp_path / "run")])
        # refused by the config check, before any data is read or the run folder is made
        assert code != 0 and "ddu must be >= 2, got 1" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_training_end_to_end(tmp_path):
    """``ddu: S`` in the config trains both parts; the run's weights rebuild the wrapper."""
    data = make_paired_dataset(tmp_path / "data", 3, 48)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"ddu": 4}))
    cfg = load_config(config, "aod-net", overrides=[
        f"data.paired={json.dumps([str(data)])}", "data.crop=32", "batch_size=2", "steps=2",
        "val_every=2", "checkpoint_every=2", "data.val_fraction=0.34", f"out={tmp_path / 'run'}",
        "optim.grad_clip=null", "optim.lr=0.05",
    ])
    assert cfg.ddu == 4
    tr = Trainer(cfg, progress=False)
    assert isinstance(tr.model, DownUp)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    assert np.isfinite(tr.fit()["loss"])
    moved = {k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("model.") for k in moved) and any(k.startswith("upsampler.") for k in moved)
    assert "upsampler.grid_net.0.weight" in moved  # behind the zero layer: moves from step 2 on
    best = models.load_file(tmp_path / "run" / "best.safetensors")
    assert isinstance(best, DownUp) and best.scale == 4
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(best(x).clear, tr.model.eval()(x).clear)
