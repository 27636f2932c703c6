"""bench.operators: counting the operators a call dispatches (no clock)."""

import torch
from torch import nn

from vitstudy.bench.operators import count_operators, operator_ideal, operators_per_image


def test_count_operators_counts_each_dispatch_by_name():
    """Two adds and a multiply are counted as such, whatever the tensors' sizes."""
    x = torch.ones(3)
    counts = count_operators(lambda t: (t + 1) * (t + 2), x)
    assert counts["add"] == 2 and counts["mul"] == 1 and sum(counts.values()) == 3


def test_operators_per_image_divides_by_the_batch_and_restores_the_mode():
    """One forward of a linear layer with dropout: eval mode (the dropout dispatches as an identity), the count
    divided by the images, and the model's training mode put back."""
    model = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5)).train()
    per_image = operators_per_image(model, torch.ones(8, 4))
    assert per_image == sum(count_operators(model.eval(), torch.ones(8, 4)).values()) / 8
    model.train()
    operators_per_image(model, torch.ones(2, 4))
    assert model.training


def test_operator_ideal_is_the_baseline_over_the_arm():
    assert operator_ideal(200, 100) == 2.0 and operator_ideal(100, 125) == 0.8
