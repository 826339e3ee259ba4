"""Widening a trained Guided-Pix2Pix U-Net without changing what it computes.

A wider U-Net (larger ``ngf``) trained from scratch would take days on the CPU; started from a
trained narrow one it only has to learn what the new channels add. Each convolution of the wide
network holds the narrow one's kernels for the old channels; the new output channels get a fresh
initialisation, and the weights from new input channels into old output channels are zero. The
new channels then see the old ones (and each other) but feed only new channels, so the wide
network's output equals the narrow one's (up to float rounding) until training moves those zero
weights, which gradients do at once, since the new channels' activations are not zero. This is
the function-preserving idea of Net2Net (Chen et al. 2016, "Net2WiderNet"), with zero outgoing
weights instead of its split-and-halve copies, so that the new channels do not start as
duplicates of old ones.

The U-Net's layout (:class:`~hazefree.models.guided_pix2pix.UNetGenerator`) decides where old
channels sit in each layer's input: decoder inputs are ``cat([upsampled, skip])``, so the old
channels of the second half start after the new width of the first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.guided_pix2pix import GuidedPix2Pix


def _embed(new: Tensor, old: Tensor, out_idx: Tensor, in_idx: Tensor, transposed: bool) -> None:
    """Write ``old`` into ``new`` at (``out_idx``, ``in_idx``) and zero new inputs into old outputs.

    Conv2d and Linear weights are (out, in, ...); ConvTranspose2d weights are (in, out, ...).
    """
    w = new.transpose(0, 1) if transposed else new  # a view: (out, in, ...)
    o = old.transpose(0, 1) if transposed else old
    fresh_in = torch.ones(w.shape[1], dtype=torch.bool)
    fresh_in[in_idx] = False
    w[out_idx.unsqueeze(1), fresh_in.nonzero().flatten().unsqueeze(0)] = 0.0
    w[out_idx.unsqueeze(1), in_idx.unsqueeze(0)] = o


def _concat_index(old: int, new: int) -> Tensor:
    """Where the old channels of ``cat([a, b])`` sit when a and b grow from ``old`` to ``new`` each."""
    return torch.cat([torch.arange(old), new + torch.arange(old)])


@torch.no_grad()
def widen_guided_pix2pix(narrow: GuidedPix2Pix, wide: GuidedPix2Pix) -> GuidedPix2Pix:
    """Copy ``narrow``'s weights into the freshly initialised, wider ``wide`` (in place; returned).

    The two must differ only in ``ngf``: same depth, input and output channels, head or not.
    """
    a, b = narrow.backbone, wide.backbone
    if a.num_downs != b.num_downs:
        raise ValueError("widening keeps the U-Net's depth: num_downs differs")
    heads = [None if m.airlight_head is None else m.airlight_head.skip > 0 for m in (narrow, wide)]
    if heads[0] != heads[1]:
        raise ValueError("widening keeps the airlight head (and whether it reads the U-Net's features) or its absence")
    old_w = [blk[0].out_channels for blk in a.down]
    new_w = [blk[0].out_channels for blk in b.down]
    if any(n < o for o, n in zip(old_w, new_w)):
        raise ValueError(f"the wide U-Net is narrower somewhere: {old_w} -> {new_w}")

    def copy(old_layer: nn.Module, new_layer: nn.Module, in_idx: Tensor, n_out: int) -> None:
        out_idx = torch.arange(n_out)
        _embed(new_layer.weight, old_layer.weight, out_idx, in_idx, isinstance(new_layer, nn.ConvTranspose2d))
        new_layer.bias[out_idx] = old_layer.bias

    n = a.num_downs
    for i in range(n):
        in_idx = torch.arange(a.down[i][0].in_channels) if i == 0 else torch.arange(old_w[i - 1])
        copy(a.down[i][0], b.down[i][0], in_idx, old_w[i])
    for j, i in enumerate(range(n - 1, 0, -1)):  # innermost first, as UNetGenerator builds them
        in_idx = torch.arange(old_w[i]) if j == 0 else _concat_index(old_w[i], new_w[i])
        copy(a.up[j][1], b.up[j][1], in_idx, old_w[i - 1])
    copy(a.head[1], b.head[1], _concat_index(old_w[0], new_w[0]), a.head[1].out_channels)
    head = narrow.airlight_head
    if head is not None and head.skip:  # it reads no U-Net feature: the same head fits the wide model
        wide.airlight_head.load_state_dict(head.state_dict())
    elif head is not None:
        # its first layer reads [pooled bottleneck (old_w[-1] -> new_w[-1]), estimates and statistics]
        first_old, first_new = head.mlp[0], wide.airlight_head.mlp[0]
        rest = first_old.in_features - old_w[-1]
        in_idx = torch.cat([torch.arange(old_w[-1]), new_w[-1] + torch.arange(rest)])
        copy(first_old, first_new, in_idx, first_old.out_features)
        for k, layer in enumerate(head.mlp):
            if k > 0 and isinstance(layer, nn.Linear):
                wide.airlight_head.mlp[k].load_state_dict(layer.state_dict())
    return wide
