"""Model zoo, part B: MSBDN-DFF and FFA-Net (published configurations).

Every test runs the full published architectures (31M and 4.5M parameters) on tiny inputs, so the
file stays fast on one CPU thread; the full models are built once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_paired_dataset

from hazefree import models
from hazefree.models import MSBDN, DehazeOutput, FFANet
from hazefree.models.ffa_net import HAZY_MEAN, HAZY_STD
from hazefree.training import Trainer, load_config

# Published trainable parameter counts: MSBDN-DFF (official Net, res_blocks=18) and
# FFA-Net (official FFA(gps=3, blocks=19)).
PUBLISHED = {"msbdn": 31_353_061, "ffa-net": 4_455_913}
NAMES = sorted(PUBLISHED)


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: models.create(name) for name in NAMES}


def _dataset(root: Path, n: int = 2, size: int = 40) -> Path:
    return make_paired_dataset(root, n, size)


class TestRegistry:
    def test_registered_with_classes(self, nets):
        assert set(NAMES) <= set(models.available())
        assert isinstance(nets["msbdn"], MSBDN) and isinstance(nets["ffa-net"], FFANet)

    @pytest.mark.parametrize("name", NAMES)
    def test_published_parameter_count(self, nets, name):
        assert models.count_parameters(nets[name]) == PUBLISHED[name]

    def test_meta_device_count(self):
        # `hazefree models` counts on the meta device; the constructors must not touch data.
        with torch.device("meta"):
            assert models.count_parameters(models.MODELS.build("msbdn")) == PUBLISHED["msbdn"]

    def test_training_defaults(self):
        msbdn = load_config(model="msbdn")
        assert (msbdn.objective, msbdn.loss, msbdn.batch_size, msbdn.data.crop) == ("supervised", "mse", 16, 256)
        assert msbdn.optim.name == "adam" and msbdn.optim.lr == pytest.approx(1e-4)
        assert msbdn.optim.betas == (0.9, 0.999) and msbdn.optim.schedule == "step"
        ffa = load_config(model="ffa-net")
        assert (ffa.objective, ffa.loss, ffa.batch_size, ffa.data.crop) == ("supervised", "l1", 2, 240)
        assert ffa.optim.betas == (0.9, 0.999) and ffa.optim.schedule == "cosine"


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
        assert out.transmission is None and out.airlight is None and out.coarse_transmission is None
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


class TestWrapping:
    def test_msbdn_multiple_of_16_needs_no_padding(self, nets):
        net = nets["msbdn"].eval()
        x = torch.rand(1, 3, 32, 48)
        with torch.no_grad():
            torch.testing.assert_close(net(x).clear, net._net(x).clamp(0, 1), rtol=0, atol=0)

    def test_ffa_normalises_input_like_the_official_loader(self):
        # normalize=True on [0, 1] input == the official network fed the normalised image
        torch.manual_seed(0)
        wrapped = FFANet(blocks=1).eval()
        raw = FFANet(blocks=1, normalize=False).eval()
        raw.load_state_dict(wrapped.state_dict())
        x = torch.rand(1, 3, 13, 11)
        xn = (x - torch.tensor(HAZY_MEAN).view(1, 3, 1, 1)) / torch.tensor(HAZY_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            torch.testing.assert_close(wrapped(x).clear, raw(xn).clear)

    def test_ffa_options_validated(self):
        with pytest.raises(ValueError, match="multiple of 16"):
            FFANet(dim=40)
        with pytest.raises(ValueError, match="blocks"):
            FFANet(blocks=0)


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
