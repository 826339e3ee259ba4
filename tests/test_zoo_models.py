"""Architecture-specific checks of the zoo models: each wrapper against the original's own
input convention and formulas (the shared contract is in test_zoo.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hazefree import models
from hazefree.models import DehazeNet, FFANet, GridDehazeNet
from hazefree.models.dehazenet import DehazeNetTransmission, brelu
from hazefree.models.ffa_net import HAZY_MEAN, HAZY_STD
from hazefree.physics import remove_haze

GRIDDEHAZENET_PARAMETERS = 958_051


@pytest.fixture
def nets(zoo):
    return zoo


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
        assert models.count_parameters(net) == GRIDDEHAZENET_PARAMETERS - 3 * 6 * 2 * 64

    def test_options_validated(self):
        with pytest.raises(ValueError, match="width"):
            GridDehazeNet(width=1)
        with pytest.raises(ValueError, match="pad_multiple"):
            GridDehazeNet(pad_multiple=0)


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
