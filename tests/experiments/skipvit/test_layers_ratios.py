"""Notebook 04's experiment (vitstudy.experiments.skipvit.layers_ratios): budgets, accuracy, Table 1, skip 10 vs 11,
the placement question, figures, bf16 beside fp32."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pandas as pd
import pytest

from vitstudy import config
from vitstudy import skipvit as sv
from vitstudy.experiments.skipvit import layers_ratios
from vitstudy.experiments.skipvit.common import CONTROL
from vitstudy.skipvit import HEADLINE, TABLE1


@pytest.fixture
def table_1_of() -> Callable[..., pd.DataFrame]:
    """``table_1_of(speed_im_s=1.0)``: a Table 1 frame from made-up speeds (every row, or one value per row)
    and top-1 80 / 81 with dropping on / off; the A/A control row last."""

    def make(speed_im_s: float | list[float] = 1.0) -> pd.DataFrame:
        names = [*sv.TABLE1, CONTROL]
        speeds = speed_im_s if isinstance(speed_im_s, list) else [speed_im_s] * len(sv.TABLE1)
        speed = pd.DataFrame(
            {
                "row": names,
                "setting": [sv.TABLE1[n].label for n in sv.TABLE1] + ["baseline (A/A)"],
                "images_per_s": [*speeds, speeds[0]],
                "speedup": 1.0,
                "speedup_low": 0.9,
                "speedup_high": 1.1,
                "gain_pct": 0.0,
                "ideal_speedup": 1.01,
                "ideal_gain_pct": 1.0,
                "measured_over_ideal": 0.99,
                "verdict": "x",
                "note": "",
            }
        )
        runs = pd.DataFrame(
            {
                "row": list(sv.TABLE1),
                "setting": "x",
                "seed": 0,
                "top1_dropping_on": 80.0,
                "top1_dropping_off": 81.0,
                "loop_im_s": 1.0,
            }
        )
        return layers_ratios.table_1(layers_ratios.accuracy_summary(runs), speed, speed)

    return make


# ----------------------------------------------------------------------------------------------------------
# Budgets


def test_unsupported_scale_is_one_clear_line():
    """The scratch protocol is notebook 08's: notebook 04 refuses it, naming the scales it runs at."""
    with pytest.raises(ValueError, match="scale='scratch' is not allowed: expected one of smoke, quick, full, paper"):
        layers_ratios.budget("scratch")


def test_paper_smoke_budget_runs_every_path(monkeypatch, tmp_path):
    """VITSTUDY_PAPER_SMOKE=1: the paper's recipe at smoke sizes, data from the ImageNet folder, and rows that run
    every path (the baseline, a skip 10 / 11 pair for the comparison, a profile even when none is flagged)."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    budget = layers_ratios.budget("paper")
    assert "baseline" in budget.rows and {"skip_4_7_30_s10", "skip_4_7_30_s11"} <= set(budget.rows)
    assert budget.profile_always
    paper_smoke = config.paper_smoke(config.get_scale("paper")).train
    assert budget.training.train == paper_smoke and budget.training.train.data_root == str(tmp_path)


def test_rows_must_be_table_1_rows_with_the_baseline():
    """A budget's rows name Table 1 presets and include the baseline, or one clear line."""
    smoke = layers_ratios.BUDGETS["smoke"]
    with pytest.raises(ValueError, match="rows=.*is not allowed"):
        layers_ratios.Table1Budget(smoke.training, smoke.timing, rows=("skip_6_55_s11",))


# ----------------------------------------------------------------------------------------------------------
# Accuracy and tables


def test_accuracy_summary_averages_seeds_and_subtracts_the_baseline():
    """Per row: mean and std over seeds of top-1 with dropping on and off, and the mean minus the baseline's."""
    runs = pd.DataFrame(
        {
            "row": ["baseline", "baseline", "skip", "skip"],
            "setting": "x",
            "seed": [0, 1, 0, 1],
            "top1_dropping_on": [80.0, 82.0, 78.0, 79.0],
            "top1_dropping_off": [80.0, 82.0, 81.0, 81.0],
            "loop_im_s": [1.0, 3.0, 2.0, 4.0],
        }
    )
    summary = layers_ratios.accuracy_summary(runs).set_index("row")
    assert summary.loc["skip", "top1_dropping_on"] == 78.5 and summary.loc["skip", "seeds"] == 2
    assert summary.loc["skip", "top1_dropping_on_diff"] == -2.5 and summary.loc["skip", "top1_dropping_off_diff"] == 0
    assert summary.loc["baseline", "top1_dropping_on_std"] == pytest.approx(math.sqrt(2))


def test_table_1_puts_the_papers_numbers_beside_ours(table_1_of):
    """table_1 has one row per preset with the paper's throughput and top-1 next to our columns."""
    table = table_1_of()
    assert list(table["row"]) == [*sv.TABLE1, CONTROL]
    assert table.loc[8, "paper_gain_pct"] == 13.23 and table.loc[8, "top1_dropping_on_diff"] == 0


def test_table_1_keeps_the_aa_control_row_and_the_interval_columns(table_1_of):
    """The A/A control row stays (no paper or accuracy numbers); both models' intervals and verdicts are columns."""
    table = table_1_of().set_index("row")
    assert math.isnan(table.loc[CONTROL, "paper_gain_pct"]) and table.loc[CONTROL, "small_speedup"] == 1.0
    for column in ("speedup_low", "speedup_high", "ideal_speedup", "measured_over_ideal", "verdict", "note"):
        assert f"vit_small_{column}" in table and f"small_{column}" in table


def test_skip_layer_comparison_compares_11_with_10(table_1_of):
    """Skip 11 vs 10 in %: the paper's table (4,7: 5,227 vs 5,092 im/s) and ours from the speed columns."""
    speeds = [100.0] * len(sv.TABLE1)
    speeds[list(sv.TABLE1).index("skip_4_7_30_s11")] = 110.0
    pairs = layers_ratios.skip_layer_comparison(table_1_of(speeds))
    assert list(pairs["drop layers / ratios"]) == ["4,7 / 30%,30%", "6,8 / 35%,35%"]
    assert pairs.loc[0, "ours ViT-S/16: 11 vs 10 (%)"] == pytest.approx(10)
    assert pairs.loc[1, "ours small model: 11 vs 10 (%)"] == 0
    assert round(pairs.loc[0, "paper: 11 vs 10 (%)"], 2) == 2.65


def test_skip_layer_comparison_keeps_not_measured_as_nan(table_1_of):
    """A speed that was not measured (NaN) gives NaN, and the column stays numeric."""
    pairs = layers_ratios.skip_layer_comparison(table_1_of(math.nan))
    assert pairs["ours ViT-S/16: 11 vs 10 (%)"].isna().all()
    assert pd.api.types.is_float_dtype(pairs["ours ViT-S/16: 11 vs 10 (%)"])


def test_skip_layer_comparison_leaves_out_a_pair_not_run(table_1_of):
    """A budget that runs only the 4,7 pair (the paper path at smoke sizes) compares that pair alone."""
    table = table_1_of()
    pairs = layers_ratios.skip_layer_comparison(table[~table["row"].str.startswith("skip_6_8")])
    assert list(pairs["drop layers / ratios"]) == ["4,7 / 30%,30%"]


# ----------------------------------------------------------------------------------------------------------
# The placement question


@pytest.fixture(scope="module")
def tiny_ideals() -> pd.DataFrame:
    """Both placements' FLOP ideals of every Table 1 row on the small model, counted once for this module."""
    return layers_ratios.placement_ideals("vitstudy_tiny_patch4_28", (1, 28, 28), num_classes=10)


def test_dropping_after_the_attention_saves_the_dropped_tokens_mlp(tiny_ideals):
    """Every dropping row: the after-attention reading counts fewer FLOPs (the dropped tokens skip block L's MLP)
    and so has the larger ideal; the fused row's default is EViT's placement, SkipViT's rows' the block."""
    ideals = tiny_ideals
    assert set(ideals["row"]) == set(TABLE1) - {"baseline"}
    assert (ideals["gflops_attention"] < ideals["gflops_block"]).all()
    assert (ideals["ideal_speedup_attention"] > ideals["ideal_speedup_block"]).all()
    defaults = ideals.set_index("row")["default_placement"]
    assert defaults["fused_6_45"] == "attention" and defaults[HEADLINE] == "block"


def test_headline_is_timed_in_both_placements_and_table1_keeps_its_rows(tiny_ideals):
    """The ViT-S/16 comparison gets one more arm (the headline after the attention); Table 1 leaves it out and
    the placement table shows both readings beside the A/A control."""
    budget = layers_ratios.budget("smoke")
    rows = layers_ratios.vit_small_rows(budget)
    assert layers_ratios.ATTENTION_HEADLINE in rows and rows[layers_ratios.ATTENTION_HEADLINE].placement == "attention"
    names = [*budget.settings, layers_ratios.ATTENTION_HEADLINE, CONTROL]
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
    ideals = tiny_ideals
    table = layers_ratios.placement_table(speed, ideals)
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
    assert layers_ratios.ATTENTION_HEADLINE not in set(layers_ratios.table_1(empty, speed, speed[["row"]])["row"])


# ----------------------------------------------------------------------------------------------------------
# Figures


def test_gain_plot_draws_five_bars_per_setting(table_1_of):
    """gain_plot: five bars (paper, two models measured and ideal) per dropping row (no baseline, no A/A control),
    labelled by setting, and an interval error bar on each measured series."""
    table = table_1_of()
    ax = layers_ratios.gain_plot(table).axes[0]
    assert len(ax.patches) == 5 * (len(sv.TABLE1) - 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table["setting"][1:-1])
    assert len(ax.containers) == 5 + 2  # five bar series, two error-bar series


def test_accuracy_plot_labels_every_setting(table_1_of):
    """accuracy_plot annotates one point per non-baseline row with its setting."""
    ax = layers_ratios.accuracy_plot(table_1_of()).axes[0]
    assert len(ax.texts) == len(sv.TABLE1) - 1


# ----------------------------------------------------------------------------------------------------------
# bf16 beside fp32, and how close the baseline runs to the machine


def test_the_reports_table_1_times_no_bf16():
    """bf16 is timed by `python -m vitstudy measure bf16`, not by the report: no budget names bf16 rows and the
    speed columns Table 1 keeps are fp32 only."""
    fields = {f.name for f in dataclasses.fields(layers_ratios.Table1Budget)}
    assert not [name for name in fields if "bf16" in name]
    assert not [c for c in layers_ratios.SPEED_COLUMNS if "bf16" in c]


MACHINE = {
    "baseline_gflop_per_s": 70.0,
    "peak_gflop_per_s": 140.0,
    "baseline_fraction_of_peak": 0.5,
    "flops_counted": "training step = 3 × forward",
}


def test_table_1_carries_the_machine_columns_of_both_models():
    """The speed tables' peak columns reach Table 1 under vit_small_* and small_*; findings read them."""
    names = [*sv.TABLE1, CONTROL]
    speed = pd.DataFrame(
        {
            "row": names,
            "setting": names,
            "images_per_s": 1.0,
            "speedup": 1.0,
            "speedup_low": 0.9,
            "speedup_high": 1.1,
            "gain_pct": 0.0,
            "ideal_speedup": 1.2,
            "ideal_gain_pct": 20.0,
            "measured_over_ideal": 0.9,
            "verdict": "x",
            "note": "",
            **MACHINE,
        }
    )
    runs = pd.DataFrame(
        {
            "row": list(sv.TABLE1),
            "setting": "x",
            "seed": 0,
            "top1_dropping_on": 80.0,
            "top1_dropping_off": 81.0,
            "loop_im_s": 1.0,
        }
    )
    table = layers_ratios.table_1(layers_ratios.accuracy_summary(runs), speed, speed)
    for column in MACHINE:
        assert f"vit_small_{column}" in table and f"small_{column}" in table
    text = layers_ratios.findings(table)
    assert "50% of this machine's fp32 matmul peak" in text and "measure bf16" in text
