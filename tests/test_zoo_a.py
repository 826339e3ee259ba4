"""Model zoo, part A: AOD-Net, DehazeNet and GridDehazeNet (published configurations).

Every test runs the full published architectures on tiny inputs (GridDehazeNet, the largest, has
under a million parameters), so the file stays fast on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_paired_dataset

from hazefree import models
from hazefree.models import AODNet, DehazeNet, DehazeOutput, GridDehazeNet
from hazefree.models.dehazenet import DehazeNetTransmission, brelu
from hazefree.physics import remove_haze
from hazefree.training import Trainer, load_config

# Published trainable parameter counts: AOD-Net (released Caffe model), DehazeNet (paper Table I;
# the Caffe re-implementation's prototxt has 8,561), GridDehazeNet (official default, the total
# printed by its train.py).
PUBLISHED = {"aod-net": 1_761, "dehazenet": 8_305, "griddehazenet": 958_051}
NAMES = sorted(PUBLISHED)
CLASSES = {"aod-net": AODNet, "dehazenet": DehazeNet, "griddehazenet": GridDehazeNet}


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: models.create(name) for name in NAMES}


def _dataset(root: Path, n: int = 2, size: int = 40) -> Path:
    return make_paired_dataset(root, n, size)


class TestRegistry:
    def test_registered_with_classes(self, nets):
        assert set(NAMES) <= set(models.available())
        for name in NAMES:
            assert isinstance(nets[name], CLASSES[name])

    @pytest.mark.parametrize("name", NAMES)
    def test_published_parameter_count(self, nets, name):
        assert models.count_parameters(nets[name]) == PUBLISHED[name]

    @pytest.mark.parametrize("name", NAMES)
    def test_meta_device_count(self, name):
        # `hazefree models` counts on the meta device; the constructors must not touch data.
        with torch.device("meta"):
            assert models.count_parameters(models.MODELS.build(name)) == PUBLISHED[name]

    def test_no_buffers(self, nets):
        # no hidden state: no BatchNorm statistics or other buffers in any of the three
        assert all(not list(net.buffers()) for net in nets.values())

    def test_training_defaults(self):
        aod = load_config(model="aod-net")
        assert (aod.objective, aod.loss, aod.batch_size, aod.data.crop) == ("supervised", "mse", 8, 480)
        assert aod.optim.name == "sgd" and aod.optim.lr == pytest.approx(1e-3)
        assert aod.optim.momentum == pytest.approx(0.9) and aod.optim.weight_decay == pytest.approx(1e-4)
        assert aod.optim.grad_clip == pytest.approx(0.1) and aod.optim.schedule == "constant"
        dn = load_config(model="dehazenet")
        assert (dn.objective, dn.loss, dn.batch_size, dn.data.crop) == ("supervised", "mse", 128, 16)
        assert dn.optim.name == "sgd" and dn.optim.lr == pytest.approx(5e-3)
        assert (dn.optim.schedule, dn.optim.lr_decay, dn.optim.lr_decay_every) == ("step", 0.5, 100_000)
        grid = load_config(model="griddehazenet")
        assert (grid.objective, grid.loss, grid.batch_size, grid.data.crop) == ("supervised", "smooth_l1", 18, 240)
        assert grid.optim.name == "adam" and grid.optim.lr == pytest.approx(1e-3)
        assert grid.optim.betas == (0.9, 0.999) and grid.optim.lr_decay == pytest.approx(0.5)
        for cfg in (aod, dn, grid):
            assert cfg.data.scale_range == (1.0, 1.0)


@pytest.mark.parametrize("name", NAMES)
class TestForward:
    @pytest.mark.parametrize("size", [(37, 29), (5, 3)])
    def test_any_size_eval(self, nets, name, size):
        net = nets[name].eval()
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            out = net(x)
        assert isinstance(out, DehazeOutput)
        assert out.clear.shape == x.shape
        assert torch.isfinite(out.clear).all()
        assert out.clear.min() >= 0 and out.clear.max() <= 1

    def test_clamp_only_in_eval(self, nets, name):
        # No dropout or batch statistics: train and eval differ only by the final clamp.
        net = nets[name]
        x = torch.rand(1, 3, 37, 29)
        with torch.no_grad():
            raw = net.train()(x).clear
            clipped = net.eval()(x).clear
        torch.testing.assert_close(clipped, raw.clamp(0, 1))

    def test_backward_finite_grads(self, nets, name):
        net = nets[name].train()
        net.zero_grad(set_to_none=True)
        x = torch.rand(1, 3, 37, 29)
        (net(x).clear - x).abs().mean().backward()
        grads = [(n, p.grad) for n, p in net.named_parameters()]
        missing = [n for n, g in grads if g is None]
        assert not missing, f"parameters without gradient: {missing[:5]}"
        assert all(torch.isfinite(g).all() for _, g in grads)
        assert any(g.abs().sum() > 0 for _, g in grads)
        net.zero_grad(set_to_none=True)

    def test_functional_call_matches_module(self, nets, name):
        net = nets[name].eval()
        x = torch.rand(1, 3, 37, 29)
        params = {k: v.detach().clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            got = torch.func.functional_call(net, params, (x,))
            expected = net(x)
        torch.testing.assert_close(got.clear, expected.clear, rtol=0, atol=0)

    def test_rejects_bad_shape(self, nets, name):
        with pytest.raises(ValueError, match="N x 3 x H x W"):
            nets[name](torch.rand(1, 1, 16, 16))


class TestAODNet:
    def test_output_is_k_formula(self, nets):
        # J = ReLU(K * I - K + 1) (paper eq. 3 with b = 1), clipped to [0, 1] in eval
        net = nets["aod-net"].eval()
        x = torch.rand(1, 3, 13, 11)
        with torch.no_grad():
            k = net.estimate_k(x)
            out = net(x)
        assert out.transmission is None and out.airlight is None
        assert (k >= 0).all() and k.shape == x.shape
        torch.testing.assert_close(out.clear, F.relu(k * x - k + 1).clamp(0, 1))


class TestDehazeNet:
    def test_patch_network_regresses_one_t_per_16x16_patch(self):
        torch.manual_seed(0)
        net = DehazeNetTransmission()
        for conv in (net.conv1, net.conv3x3, net.conv5x5, net.conv7x7, net.regress):
            torch.nn.init.normal_(conv.weight, std=0.5)  # large weights: the output spans BReLU's range
        with torch.no_grad():
            t = net(torch.rand(64, 3, 16, 16))
            big = net(torch.rand(1, 3, 20, 23))
        assert t.shape == (64, 1, 1, 1) and big.shape == (1, 1, 5, 8)
        assert t.min() >= 0 and t.max() <= 1
        assert (t == 0).any() or (t == 1).any()  # BReLU saturates on both sides
        with pytest.raises(ValueError, match="at least 16"):
            net(torch.rand(1, 3, 15, 40))

    def test_brelu(self):
        x = torch.tensor([-2.0, -0.0, 0.3, 1.0, 4.0], requires_grad=True)
        y = brelu(x)
        torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 0.3, 1.0, 1.0]))
        y.sum().backward()
        assert x.grad[0] == 0 and x.grad[2] == 1 and x.grad[4] == 0

    def test_transmission_and_scattering_model(self, nets):
        net = nets["dehazenet"].eval()
        x = torch.rand(2, 3, 37, 29) * 0.8 + 0.1
        with torch.no_grad():
            out = net(x)
        assert out.coarse_transmission.shape == (2, 1, 37, 29)
        assert out.coarse_transmission.min() >= 0 and out.coarse_transmission.max() <= 1  # BReLU
        assert out.transmission.shape == (2, 1, 37, 29)
        assert out.transmission.min() >= 0 and out.transmission.max() <= 1
        assert out.airlight.shape == (2, 3, 1, 1)
        expected = remove_haze(x, out.transmission, out.airlight, t_min=net.t_min)
        torch.testing.assert_close(out.clear, expected)

    def test_saturated_brelu_gives_unit_transmission(self):
        net = DehazeNet().eval()
        with torch.no_grad():
            net.net.regress.bias.fill_(5.0)  # far above 1: BReLU clips to t = 1 everywhere
            x = torch.rand(1, 3, 21, 18)
            out = net(x)
        assert torch.equal(out.coarse_transmission, torch.ones(1, 1, 21, 18))
        torch.testing.assert_close(out.transmission, torch.ones(1, 1, 21, 18))
        torch.testing.assert_close(out.clear, x)  # t = 1: nothing to remove


class TestGridDehazeNet:
    def test_normalises_input_like_the_official_loader(self, nets):
        # normalize=True on [0, 1] input == the official network fed (x - 0.5) / 0.5
        wrapped = nets["griddehazenet"].eval()
        raw = GridDehazeNet(normalize=False).eval()
        raw.load_state_dict(wrapped.state_dict())
        x = torch.rand(1, 3, 16, 20)
        with torch.no_grad():
            torch.testing.assert_close(wrapped(x).clear, raw((x - 0.5) / 0.5).clear)

    def test_multiple_of_4_needs_no_padding(self, nets):
        net = nets["griddehazenet"].eval()
        x = torch.rand(1, 3, 16, 24)
        with torch.no_grad():
            torch.testing.assert_close(net(x).clear, net._grid(x * 2 - 1).clamp(0, 1), rtol=0, atol=0)

    def test_unpadded_official_behaviour_on_odd_sizes(self, nets):
        net = GridDehazeNet(pad_multiple=1).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, 13, 9)).clear.shape == (1, 3, 13, 9)

    def test_without_attention_the_fusion_weights_are_frozen(self):
        net = GridDehazeNet(attention=False)
        assert models.count_parameters(net) == PUBLISHED["griddehazenet"] - 3 * 6 * 2 * 64

    def test_options_validated(self):
        with pytest.raises(ValueError, match="width"):
            GridDehazeNet(width=1)
        with pytest.raises(ValueError, match="pad_multiple"):
            GridDehazeNet(pad_multiple=0)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step(tmp_path, name):
    data = _dataset(tmp_path / "data")
    cfg = load_config(model=name, overrides=[
        f"data.paired={json.dumps([str(data)])}", "data.crop=32", "batch_size=1", "steps=1",
        "val_every=100", "checkpoint_every=100", "data.val_fraction=0", f"out={tmp_path / 'run'}",
    ])
    tr = Trainer(cfg, progress=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    losses = tr.fit()
    assert np.isfinite(losses["loss"])
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f"{name}: no parameter moved after one step"
