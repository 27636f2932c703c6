"""multiexit.costs: FLOP accounting of the pieces and of an exit histogram."""

import pytest
import torch

from vitstudy import bench, multiexit
from vitstudy.multiexit import MultiExitViT


def test_exit_costs_add_up_to_the_plain_model(tiny_vit):
    """The pieces' FLOPs sum to bench.flops_per_image of the plain model."""
    costs = multiexit.exit_costs(MultiExitViT(tiny_vit), (1, 28, 28))
    assert costs.plain() == pytest.approx(bench.flops_per_image(tiny_vit, (1, 28, 28)), rel=1e-9)
    assert costs.plain() / costs.forced(3) == pytest.approx(4.0, rel=0.02)


def test_ideal_speedup_of_an_exit_histogram(tiny_vit):
    """Half the images at block 3, half at the end: the ideal speed-up is plain / mean cost."""
    costs = multiexit.exit_costs(MultiExitViT(tiny_vit), (1, 28, 28))
    per_exit = costs.per_exit((3, 6, 9))
    expected = costs.plain() / ((per_exit[0] + per_exit[3]) / 2).item()
    assert costs.ideal_speedup((3, 6, 9), torch.tensor([3, 12])) == pytest.approx(expected)
