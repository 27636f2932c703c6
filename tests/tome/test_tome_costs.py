"""What merging saves (vitstudy.tome.costs): the schedule's FLOPs equal torch's counter on the patched model."""

from __future__ import annotations

import pytest

from vitstudy import tome
from vitstudy.bench import flops_per_image


@pytest.mark.parametrize("r", [3, (5, -1), [0, 9, 0, 4], 30])
def test_schedule_flops_equal_the_counter(fresh_vit, r):
    """schedule_flops (computed from shapes and the schedule) is the FLOP counter's count of the patched model's
    forward, matching included, exactly; r = 0 is the unpatched model's count."""
    plain = fresh_vit(depth=6)
    model = tome.apply_tome(fresh_vit(depth=6), r)
    assert tome.schedule_flops(plain, r) == flops_per_image(model, (1, 28, 28))


def test_schedule_flops_at_r_zero_are_the_unpatched_model(fresh_vit):
    """r = 0: the unpatched timm model's count."""
    plain = fresh_vit(depth=6)
    assert tome.schedule_flops(plain, 0) == flops_per_image(plain, (1, 28, 28))


def test_flop_gain_is_zero_at_r_zero_and_grows_with_r(fresh_vit):
    """No merging, no gain; a larger constant r has a larger FLOP-ideal gain; flops_off is reused as given."""
    model = tome.apply_tome(fresh_vit(depth=4))
    assert tome.flop_gain(model, (1, 28, 28))["ideal_gain_pct"] == 0
    model.r = 2
    small = tome.flop_gain(model, (1, 28, 28))
    model.r = 6
    large = tome.flop_gain(model, (1, 28, 28), flops_off=small["gflops_off"] * 1e9)
    assert 0 < small["ideal_gain_pct"] < large["ideal_gain_pct"]
    assert large["gflops_off"] == small["gflops_off"] and model.r == 6
