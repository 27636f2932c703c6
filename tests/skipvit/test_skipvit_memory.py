"""Activation memory (vitstudy.skipvit.memory) and the model-size rule (vitstudy.skipvit.model_size)."""

import math

import torch
from torch import nn

from vitstudy import skipvit as sv
from vitstudy.skipvit import memory
from vitstudy.skipvit.model_size import scaled_headline


class Twice(nn.Module):
    """x -> relu(x) * relu(x): the same saved tensor twice (mul saves both operands, here one storage)."""

    def forward(self, x):
        y = torch.relu(x)
        return (y * y).sum(-1, keepdim=True).expand(-1, 3)


def test_shared_storage_is_counted_once():
    """relu's output saved by relu and twice by mul counts once: x-sized relu output plus log_softmax's output."""
    x, targets = torch.randn(4, 5, requires_grad=True), torch.zeros(4, dtype=torch.long)
    got = memory.saved_activation_bytes(Twice(), x, targets)
    # relu output [4, 5] float32 (80 B, saved three times) + log_softmax output [4, 3] (48 B, saved twice) +
    # targets [4] int64 (32 B) + nll_loss's total weight, a float32 scalar (4 B).
    assert got == 80 + 48 + 32 + 4


def test_parameters_are_not_activations():
    """A linear layer's saved weight is left out: only its input counts."""
    layer = nn.Linear(6, 3, bias=False)
    got = memory.saved_activation_bytes(layer, torch.randn(2, 6), torch.zeros(2, dtype=torch.long))
    assert got == 2 * 6 * 4 + 2 * 3 * 4 + 2 * 8 + 4  # input, log_softmax output, targets, nll's total weight


def test_dropping_saves_memory_and_no_cuda_is_nan(tiny_vit):
    """The headline row keeps less for backward than the plain model; without CUDA the peak is NaN + note."""
    rows = memory.memory_rows("vitstudy_tiny_patch4_28", (1, 28, 28), 10, {"h": sv.TABLE1["skip_6_55_s11"]},
                              device="cpu", depth=12)  # fmt: skip
    row = rows.iloc[0]
    assert row["saved_mib_per_image_on"] < row["saved_mib_per_image_off"]
    assert 0 < row["memory_saving_pct"] < 100 * (1 - 1 / row["ideal_speedup"]) + 5
    assert math.isnan(row["cuda_peak_mib_per_image_on"]) and row["note"] == memory.NOT_MEASURED


def test_headline_scales_with_depth():
    """12 blocks: 6 / skip 11 (the paper's); 24 blocks: drop after 12, re-insert at 22."""
    assert scaled_headline(12) == sv.TABLE1["skip_6_55_s11"]
    assert (scaled_headline(24).drop_layers, scaled_headline(24).skip_layer) == ((12,), 22)


def test_model_size_rows_time_each_arm_in_its_own_process():
    """The default model-size timing is one process per (round, arm): its arms must rebuild in a child."""
    import dataclasses

    from vitstudy.skipvit import model_size

    kwargs = model_size.model_size_budget("smoke")
    kwargs["timing"] = dataclasses.replace(kwargs["timing"], isolation="process")
    table, raw = model_size.model_size_rows(**kwargs)
    assert (table["isolation"] == "process").all()
    assert table["speedup"].notna().all() and table["control_speedup"].notna().all()
    assert set(raw["arm"]) == {"baseline", "headline", model_size.CONTROL}
