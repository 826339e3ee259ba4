"""Model zoo contract, for all five baselines of the BILD paper (AOD-Net, DehazeNet, GridDehazeNet,
MSBDN-DFF, FFA-Net): published parameter counts, the N x 3 x H x W [0, 1] interface at any size,
no hidden state, gradients, a functional forward, one step of the shared trainer, and the per-model
training defaults. Architecture-specific checks are in test_zoo_models.py.

The full published architectures run on tiny inputs, built once per session (conftest ``zoo``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_paired_dataset

from hazefree import models
from hazefree.models import (
    MSBDN,
    AODNet,
    DehazeNet,
    DehazeOutput,
    FFANet,
    GridDehazeNet,
)
from hazefree.training import Trainer, load_config

# Published trainable parameter counts: AOD-Net (released Caffe model), DehazeNet (paper Table I;
# the Caffe re-implementation's prototxt has 8,561), GridDehazeNet (official default, the total
# printed by its train.py), MSBDN-DFF (official Net, res_blocks=18), FFA-Net (official
# FFA(gps=3, blocks=19)).
PUBLISHED = {
    "aod-net": 1_761, "dehazenet": 8_305, "griddehazenet": 958_051,
    "msbdn": 31_353_061, "ffa-net": 4_455_913,
}
NAMES = sorted(PUBLISHED)
CLASSES = {"aod-net": AODNet, "dehazenet": DehazeNet, "griddehazenet": GridDehazeNet,
           "msbdn": MSBDN, "ffa-net": FFANet}


@pytest.fixture
def nets(zoo):
    return zoo


class TestRegistry:
    @pytest.mark.parametrize("name", NAMES)
    def test_registered_with_class(self, nets, name):
        assert name in models.available() and isinstance(nets[name], CLASSES[name])

    @pytest.mark.parametrize("name", NAMES)
    def test_published_parameter_count(self, nets, name):
        assert models.count_parameters(nets[name]) == PUBLISHED[name]

    @pytest.mark.parametrize("name", NAMES)
    def test_meta_device_count(self, name):
        # `hazefree models` counts on the meta device; the constructors must not touch data.
        with torch.device("meta"):
            assert models.count_parameters(models.MODELS.build(name)) == PUBLISHED[name]

    @pytest.mark.parametrize("name", NAMES)
    def test_no_buffers(self, nets, name):
        # no hidden state (BatchNorm statistics or other buffers): functional_call and BILD need it
        assert not list(nets[name].buffers())

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
        if name in ("msbdn", "ffa-net", "aod-net"):  # end-to-end: no physical intermediates
            assert out.transmission is None and out.airlight is None
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


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step(tmp_path, name):
    data = make_paired_dataset(tmp_path / "data", 2, 40)
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
