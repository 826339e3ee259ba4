"""Zoo wiring against the papers: what each layer receives, not only how many parameters it has.

AOD-Net (Li et al., ICCV 2017, Sec. 3.2 and Fig. 3): conv1 reads I; conv2 reads conv1; "concat1"
joins conv1 and conv2 for conv3; "concat2" joins conv2 and conv3 for conv4; "concat3" joins
conv1, conv2, conv3 and conv4 for conv5; each conv is followed by a ReLU; J = K I - K + b (eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hazefree import models


def _aod_forward_from_the_paper(net, hazy: torch.Tensor) -> torch.Tensor:
    """The paper's K-estimation module and eq. 3, written out with the layers' weights."""

    def conv(layer, x):
        return F.relu(F.conv2d(x, layer.weight, layer.bias, padding=layer.kernel_size[0] // 2))

    k1 = conv(net.conv1, hazy)
    k2 = conv(net.conv2, k1)
    k3 = conv(net.conv3, torch.cat([k1, k2], 1))  # concat1
    k4 = conv(net.conv4, torch.cat([k2, k3], 1))  # concat2
    k = conv(net.conv5, torch.cat([k1, k2, k3, k4], 1))  # concat3
    return F.relu(k * hazy - k + 1.0)


def _random_aod():
    torch.manual_seed(0)
    net = models.create("aod-net").eval()
    with torch.no_grad():  # weights that make every layer's output matter (default init leaves many ReLUs off)
        for layer in (net.conv1, net.conv2, net.conv3, net.conv4, net.conv5):
            layer.weight.normal_(0.0, 0.5)
            layer.bias.uniform_(0.0, 0.2)
    return net


def test_aod_net_matches_the_papers_forward():
    net = _random_aod()
    hazy = torch.rand(2, 3, 23, 31, generator=torch.Generator().manual_seed(1))
    expected = _aod_forward_from_the_paper(net, hazy).clamp(0, 1)
    assert torch.allclose(net(hazy).clear, expected, atol=1e-6)
    assert (expected - hazy).abs().mean() > 0.05  # a test image the network changes


def test_aod_net_concatenations_through_hooks():
    """Each layer's input, caught by a forward hook, is the concatenation the paper names, in order."""
    net = _random_aod()
    inputs, outputs, order = {}, {}, []

    def hook(name):
        def record(_module, args, out):
            order.append(name)
            inputs[name], outputs[name] = args[0], F.relu(out)

        return record

    names = ("conv1", "conv2", "conv3", "conv4", "conv5")
    handles = [getattr(net, name).register_forward_hook(hook(name)) for name in names]
    hazy = torch.rand(1, 3, 17, 19, generator=torch.Generator().manual_seed(2))
    try:
        net(hazy)
    finally:
        for h in handles:
            h.remove()
    assert order == list(names)
    x = outputs
    assert torch.equal(inputs["conv1"], hazy)
    assert torch.equal(inputs["conv2"], x["conv1"])
    assert torch.equal(inputs["conv3"], torch.cat([x["conv1"], x["conv2"]], 1))
    assert torch.equal(inputs["conv4"], torch.cat([x["conv2"], x["conv3"]], 1))
    assert torch.equal(inputs["conv5"], torch.cat([x["conv1"], x["conv2"], x["conv3"], x["conv4"]], 1))
    # and the three channels of each group are different signals (a swapped group would show)
    assert not torch.allclose(x["conv1"], x["conv2"]) and not torch.allclose(x["conv2"], x["conv3"])
