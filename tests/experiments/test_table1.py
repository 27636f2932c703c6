"""Notebook 04's experiment (vitstudy.experiments.skipvit.table1): budgets, accuracy, Table 1, skip 10 vs 11, plots."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from vitstudy import config
from vitstudy import skipvit as sv
from vitstudy.experiments.skipvit import table1
from vitstudy.experiments.skipvit.skipvit_speed import CONTROL


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
        return table1.table_1(table1.accuracy_summary(runs), speed, speed)

    return make


# ----------------------------------------------------------------------------------------------------------
# Budgets


def test_quick_budget_fine_tunes_the_baseline_without_warmup():
    """At quick scale Table 1 rows fine-tune the baseline without warm-up."""
    training = table1.budget("quick").training
    assert (training.start, training.warmup_epochs) == ("baseline", 0)


def test_full_budget_trains_from_scratch_with_three_seeds_and_warmup():
    """At full scale every row trains from scratch, 3 seeds, warm-up 15% of 30 epochs (5, rounded half up)."""
    training = table1.budget("full").training
    assert (training.start, training.seeds, training.warmup_epochs) == ("scratch", (0, 1, 2), 5)


def test_smoke_budget_shrinks_the_papers_input():
    """At smoke scale the paper's model is timed at 64 px: (3, 64, 64)."""
    assert table1.budget("smoke").vit_small_input == (3, 64, 64)


def test_every_budget_is_one_frozen_dataclass_per_scale():
    """BUDGETS holds one Table1Budget per scale notebook 04 runs at, plus the paper path at smoke sizes."""
    assert set(table1.BUDGETS) == {"smoke", "quick", "full", "paper", "paper_smoke"}
    assert all(isinstance(b, table1.Table1Budget) for b in table1.BUDGETS.values())


def test_unsupported_scale_is_one_clear_line():
    """The scratch protocol is notebook 08's: notebook 04 refuses it, naming the scales it runs at."""
    with pytest.raises(ValueError, match="scale='scratch' is not allowed: expected one of smoke, quick, full, paper"):
        table1.budget("scratch")


def test_paper_smoke_budget_runs_every_path_at_the_fewest_rows(monkeypatch, tmp_path):
    """VITSTUDY_PAPER_SMOKE=1: the baseline and a skip 10 / 11 pair, ViT-S/16 timed at 64 px, two rounds, data
    from the ImageNet folder."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    budget = table1.budget("paper")
    assert budget.rows == ("baseline", "skip_4_7_30_s10", "skip_4_7_30_s11")
    assert budget.vit_small_input == (3, 64, 64) and budget.timing.rounds == 2 and budget.profile_always
    paper_smoke = config.paper_smoke(config.get_scale("paper")).train
    assert budget.training.train == paper_smoke and budget.training.train.data_root == str(tmp_path)


def test_rows_must_be_table_1_rows_with_the_baseline():
    """A budget's rows name Table 1 presets and include the baseline, or one clear line."""
    with pytest.raises(ValueError, match="rows=.*is not allowed"):
        table1.Table1Budget(table1.BUDGETS["smoke"].training, table1.BUDGETS["smoke"].timing, rows=("skip_6_55_s11",))


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
    summary = table1.accuracy_summary(runs).set_index("row")
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
    pairs = table1.skip_layer_comparison(table_1_of(speeds))
    assert list(pairs["drop layers / ratios"]) == ["4,7 / 30%,30%", "6,8 / 35%,35%"]
    assert pairs.loc[0, "ours ViT-S/16: 11 vs 10 (%)"] == pytest.approx(10)
    assert pairs.loc[1, "ours small model: 11 vs 10 (%)"] == 0
    assert round(pairs.loc[0, "paper: 11 vs 10 (%)"], 2) == 2.65


def test_skip_layer_comparison_keeps_not_measured_as_nan(table_1_of):
    """A speed that was not measured (NaN) gives NaN, and the column stays numeric."""
    pairs = table1.skip_layer_comparison(table_1_of(math.nan))
    assert pairs["ours ViT-S/16: 11 vs 10 (%)"].isna().all()
    assert pd.api.types.is_float_dtype(pairs["ours ViT-S/16: 11 vs 10 (%)"])


def test_skip_layer_comparison_leaves_out_a_pair_not_run(table_1_of):
    """A budget that runs only the 4,7 pair (the paper path at smoke sizes) compares that pair alone."""
    table = table_1_of()
    pairs = table1.skip_layer_comparison(table[~table["row"].str.startswith("skip_6_8")])
    assert list(pairs["drop layers / ratios"]) == ["4,7 / 30%,30%"]


# ----------------------------------------------------------------------------------------------------------
# Figures


def test_gain_plot_draws_five_bars_per_setting(table_1_of):
    """gain_plot: five bars (paper, two models measured and ideal) per dropping row (no baseline, no A/A control),
    labelled by setting, and an interval error bar on each measured series."""
    table = table_1_of()
    ax = table1.gain_plot(table).axes[0]
    assert len(ax.patches) == 5 * (len(sv.TABLE1) - 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table["setting"][1:-1])
    assert len(ax.containers) == 5 + 2  # five bar series, two error-bar series


def test_accuracy_plot_labels_every_setting(table_1_of):
    """accuracy_plot annotates one point per non-baseline row with its setting."""
    ax = table1.accuracy_plot(table_1_of()).axes[0]
    assert len(ax.texts) == len(sv.TABLE1) - 1


# ----------------------------------------------------------------------------------------------------------
# bf16 beside fp32, and how close the baseline runs to the machine


def test_quick_times_the_baseline_and_the_headline_row_in_bf16():
    """quick: bf16 twins of the baseline and the headline row on ViT-S/16, of the baseline on the small model;
    full and paper: every row on ViT-S/16."""
    quick = table1.budget("quick")
    assert quick.vit_small_bf16_rows == ("baseline", sv.HEADLINE) and quick.small_bf16_rows == ("baseline",)
    assert table1.budget("full").vit_small_bf16_rows == tuple(sv.TABLE1)
    for budget in table1.BUDGETS.values():
        assert set(budget.vit_small_bf16_rows) <= set(budget.rows) and "baseline" in budget.vit_small_bf16_rows


def test_bf16_rows_outside_the_budgets_rows_are_refused():
    smoke = table1.BUDGETS["smoke"]
    with pytest.raises(ValueError, match=r"vit_small_bf16_rows=\('skip_6_55_s11',\) is not allowed"):
        table1.Table1Budget(smoke.training, smoke.timing, vit_small_bf16_rows=("skip_6_55_s11",))


BF16_AND_MACHINE = {
    "bf16_speedup_over_fp32": 1.7,
    "bf16_speedup_over_fp32_low": 1.6,
    "bf16_speedup_over_fp32_high": 1.8,
    "bf16_measured_over_ideal": 0.8,
    "bf16_measured_over_ideal_low": 0.7,
    "bf16_measured_over_ideal_high": 0.9,
    "bf16_verdict": "v",
    "baseline_gflop_per_s": 70.0,
    "peak_gflop_per_s": 140.0,
    "baseline_fraction_of_peak": 0.5,
    "bf16_baseline_gflop_per_s": 120.0,
    "bf16_peak_gflop_per_s": 400.0,
    "bf16_baseline_fraction_of_peak": 0.3,
    "flops_counted": "training step = 3 × forward",
}


def test_table_1_carries_the_bf16_and_machine_columns_of_both_models():
    """The speed tables' bf16 and peak columns reach Table 1 under vit_small_* and small_*; findings read them."""
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
            **BF16_AND_MACHINE,
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
    table = table1.table_1(table1.accuracy_summary(runs), speed, speed)
    for column in BF16_AND_MACHINE:
        assert f"vit_small_{column}" in table and f"small_{column}" in table
    text = table1.findings(table)
    assert "1.70× (1.60–1.80) faster than in fp32" in text
    assert "70.0 GFLOP/s, 50% of this machine's fp32 matmul peak (140.0 GFLOP/s)" in text
    assert "120.0 GFLOP/s, 30% of this machine's bf16 matmul peak" in text
