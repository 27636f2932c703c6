"""What dropping saves (vitstudy.skipvit.costs): FLOPs, and the activation memory kept for backward."""

import torch
from torch import nn

from vitstudy import skipvit as sv


class Twice(nn.Module):
    """x -> relu(x) * relu(x): the same saved tensor twice (mul saves both operands, here one storage)."""

    def forward(self, x):
        y = torch.relu(x)
        return (y * y).sum(-1, keepdim=True).expand(-1, 3)


def test_flop_gain_is_zero_for_the_baseline(tiny_vit):
    """The baseline preset (no drop layers) costs the same FLOPs on and off."""
    model = sv.apply_skipvit(tiny_vit(depth=2), "baseline")
    assert sv.flop_gain(model, (1, 28, 28))["ideal_gain_pct"] == 0


def test_flop_gain_of_the_headline_row_is_positive(tiny_vit):
    """Dropping 55% of the tokens after block 6 of 12 costs fewer FLOPs: a positive FLOP-ideal gain."""
    model = sv.apply_skipvit(tiny_vit(), sv.HEADLINE)
    gain = sv.flop_gain(model, (1, 28, 28))
    assert gain["gflops_on"] < gain["gflops_off"] and gain["ideal_gain_pct"] > 0


def test_shared_storage_is_counted_once():
    """relu's output saved by relu and twice by mul counts once: x-sized relu output plus log_softmax's output."""
    x, targets = torch.randn(4, 5, requires_grad=True), torch.zeros(4, dtype=torch.long)
    got = sv.saved_activation_bytes(Twice(), x, targets)
    # relu output [4, 5] float32 (80 B, saved three times) + log_softmax output [4, 3] (48 B, saved twice) +
    # targets [4] int64 (32 B) + nll_loss's total weight, a float32 scalar (4 B).
    assert got == 80 + 48 + 32 + 4


def test_parameters_are_not_activations():
    """A linear layer's saved weight is left out: only its input counts."""
    layer = nn.Linear(6, 3, bias=False)
    got = sv.saved_activation_bytes(layer, torch.randn(2, 6), torch.zeros(2, dtype=torch.long))
    assert got == 2 * 6 * 4 + 2 * 3 * 4 + 2 * 8 + 4  # input, log_softmax output, targets, nll's total weight


def test_dropping_saves_activation_memory(tiny_vit, images):
    """The headline row keeps less for backward than the same model with dropping off."""
    model = sv.apply_skipvit(tiny_vit(), sv.HEADLINE)
    x, targets = images(2), torch.zeros(2, dtype=torch.long)
    with sv.dropping(model, False):
        off = sv.saved_activation_bytes(model, x, targets)
    assert sv.saved_activation_bytes(model, x, targets) < off
