"""SkipViT tables: the paper's Table 1 and Table 3 beside ours, skip 10 vs 11."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vitstudy import skipvit as sv


def test_table_1_puts_the_papers_numbers_beside_ours(table_1_of):
    """table_1 has one row per preset with the paper's throughput and top-1 next to our columns."""
    table = table_1_of()
    assert list(table["row"]) == [*sv.TABLE1, sv.CONTROL]
    assert table.loc[8, "paper_gain_pct"] == 13.23 and table.loc[8, "top1_dropping_on_diff"] == 0


def test_table_1_keeps_the_aa_control_row_and_the_interval_columns(table_1_of):
    """The A/A control row stays (no paper or accuracy numbers); both models' intervals and verdicts are columns."""
    table = table_1_of().set_index("row")
    assert math.isnan(table.loc[sv.CONTROL, "paper_gain_pct"]) and table.loc[sv.CONTROL, "small_speedup"] == 1.0
    for column in ("speedup_low", "speedup_high", "ideal_speedup", "measured_over_ideal", "verdict", "note"):
        assert f"vits_{column}" in table and f"small_{column}" in table


def test_skip_layer_comparison_compares_11_with_10(table_1_of):
    """Skip 11 vs 10 in %: the paper's table (4,7: 5,227 vs 5,092 im/s) and ours from the speed columns."""
    speeds = [100.0] * len(sv.TABLE1)
    speeds[list(sv.TABLE1).index("skip_4_7_30_s11")] = 110.0
    pairs = sv.skip_layer_comparison(table_1_of(speeds))
    assert list(pairs["drop layers / ratios"]) == ["4,7 / 30%,30%", "6,8 / 35%,35%"]
    assert pairs.loc[0, "ours ViT-S/16: 11 vs 10 (%)"] == pytest.approx(10)
    assert pairs.loc[1, "ours small model: 11 vs 10 (%)"] == 0
    assert round(pairs.loc[0, "paper: 11 vs 10 (%)"], 2) == 2.65


def test_skip_layer_comparison_keeps_not_measured_as_nan(table_1_of):
    """A speed that was not measured (NaN) gives NaN, and the column stays numeric."""
    pairs = sv.skip_layer_comparison(table_1_of(math.nan))
    assert pairs["ours ViT-S/16: 11 vs 10 (%)"].isna().all()
    assert pd.api.types.is_float_dtype(pairs["ours ViT-S/16: 11 vs 10 (%)"])


def test_table_3_puts_warmup_or_not_beside_the_papers_rows():
    """table_3: one row without and one with warm-up, the paper's 67.18 / 69.73 beside them."""
    runs = pd.DataFrame({"warmup_epochs": [0, 0, 1, 1], "epochs": 7, "seed": [0, 1, 0, 1],
                         "top1_dropping_on": [60.0, 62.0, 63.0, 63.0], "top1_dropping_off": 59.0})  # fmt: skip
    table = sv.table_3(runs)
    assert list(table["warmup"]) == ["no", "yes"] and list(table["top1_dropping_on"]) == [61.0, 63.0]
    assert list(table["paper_top1"]) == [67.18, 69.73] and list(table["seeds"]) == [2, 2]
