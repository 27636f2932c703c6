"""Notebook 04's placement question (vitstudy.experiments.skipvit.placement): both FLOP ideals, the timed variant."""

import pandas as pd
import pytest

from vitstudy.experiments.skipvit import placement, table1
from vitstudy.experiments.skipvit.skipvit_speed import CONTROL
from vitstudy.skipvit import HEADLINE, TABLE1


def test_dropping_after_the_attention_saves_the_dropped_tokens_mlp():
    """Every dropping row: the after-attention reading counts fewer FLOPs (the dropped tokens skip block L's MLP)
    and so has the larger ideal; the fused row's default is EViT's placement, SkipViT's rows' the block."""
    ideals = placement.placement_ideals("vitstudy_tiny_patch4_28", (1, 28, 28), num_classes=10)
    assert set(ideals["row"]) == set(TABLE1) - {"baseline"}
    assert (ideals["gflops_attention"] < ideals["gflops_block"]).all()
    assert (ideals["ideal_speedup_attention"] > ideals["ideal_speedup_block"]).all()
    defaults = ideals.set_index("row")["default_placement"]
    assert defaults["fused_6_45"] == "attention" and defaults[HEADLINE] == "block"


def test_headline_is_timed_in_both_placements_and_table1_keeps_its_rows():
    """The ViT-S/16 comparison gets one more arm (the headline after the attention); Table 1 leaves it out and
    the placement table shows both readings beside the A/A control."""
    budget = table1.budget("smoke")
    rows = table1.vit_small_rows(budget)
    assert placement.ATTENTION_HEADLINE in rows and rows[placement.ATTENTION_HEADLINE].placement == "attention"
    names = [*budget.settings, placement.ATTENTION_HEADLINE, CONTROL]
    speed = pd.DataFrame(
        {
            "row": names,
            "setting": names,
            "speedup": 1.1,
            "speedup_low": 1.0,
            "speedup_high": 1.2,
            "ideal_speedup": 1.2,
            "measured_over_ideal": 0.92,
            "verdict": "within target",
            "note": "",
        }
    )
    ideals = placement.placement_ideals("vitstudy_tiny_patch4_28", (1, 28, 28), num_classes=10)
    table = placement.placement_table(speed, ideals)
    assert list(table["placement"]) == ["block", "attention", "A/A control"]
    assert table.loc[1, "flop_ideal_from_counts"] == pytest.approx(
        ideals.set_index("row").loc[HEADLINE, "ideal_speedup_attention"]
    )
    empty = pd.DataFrame(
        columns=[
            "row",
            "top1_dropping_on",
            "top1_dropping_on_std",
            "top1_dropping_on_diff",
            "top1_dropping_off",
            "top1_dropping_off_diff",
        ]
    )
    assert placement.ATTENTION_HEADLINE not in set(table1.table_1(empty, speed, speed[["row"]])["row"])
