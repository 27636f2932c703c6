"""SkipViT study: per-scale budgets, the accuracy summary, timing runs, run folders."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vitstudy import bench
from vitstudy import skipvit as sv


def test_quick_budgets_fit_their_warmup():
    """At quick scale Table 1 rows fine-tune the baseline without warm-up; Table 3 warms up 1 of 7 epochs."""
    table1 = sv.table1_budget("quick")
    assert (table1.start, table1.warmup_epochs) == ("baseline", 0)
    table3 = sv.table3_budget("quick")
    assert (table3.start, table3.warmup_epochs, table3.train.epochs) == ("scratch", 1, 7)


def test_full_budget_trains_from_scratch_with_three_seeds_and_warmup():
    """At full scale every row trains from scratch, 3 seeds, warm-up 15% of 30 epochs (5, rounded half up)."""
    budget = sv.table1_budget("full")
    assert (budget.start, budget.seeds, budget.warmup_epochs) == ("scratch", (0, 1, 2), 5)


def test_smoke_budget_shrinks_the_papers_input():
    """At smoke scale the paper's model is timed at 64 px: (3, 64, 64)."""
    assert sv.table1_budget("smoke").paper_input == (3, 64, 64)


def test_run_dir_depends_on_the_settings_and_the_warmup():
    """Two settings, or two warm-ups, of one row name never share a cache folder; the same run does."""
    budget = sv.table3_budget("smoke")
    one = sv.run_dir(budget, "row", sv.TABLE3, 0, 0)
    assert one == sv.run_dir(budget, "row", sv.TABLE3, 0, 0)
    assert one != sv.run_dir(budget, "row", sv.preset("skip_4_7_30_s11"), 0, 0)
    assert one != sv.run_dir(budget, "row", sv.TABLE3, 1, 0)


def test_accuracy_summary_averages_seeds_and_subtracts_the_baseline():
    """Per row: mean and std over seeds of top-1 with dropping on and off, and the mean minus the baseline's."""
    runs = pd.DataFrame({
        "row": ["baseline", "baseline", "skip", "skip"], "setting": "x", "seed": [0, 1, 0, 1],
        "top1_dropping_on": [80.0, 82.0, 78.0, 79.0], "top1_dropping_off": [80.0, 82.0, 81.0, 81.0],
        "loop_im_s": [1.0, 3.0, 2.0, 4.0],
    })  # fmt: skip
    summary = sv.accuracy_summary(runs).set_index("row")
    assert summary.loc["skip", "top1_dropping_on"] == 78.5 and summary.loc["skip", "seeds"] == 2
    assert summary.loc["skip", "top1_dropping_on_diff"] == -2.5 and summary.loc["skip", "top1_dropping_off_diff"] == 0
    assert summary.loc["baseline", "top1_dropping_on_std"] == pytest.approx(math.sqrt(2))


def test_timing_runs_gain_is_the_median_of_paired_ratios(monkeypatch):
    """gain = median over sweeps of baseline/row step time − 1; images/s and IQR from bench.timing_spread."""
    seconds = {"baseline": [1.0, 2.0, 4.0], "one_stage": [0.5, 1.0, 4.0]}  # ratios 2, 2, 1 → median 2
    monkeypatch.setattr(bench, "time_interleaved", lambda steps, device, settings: seconds)
    rows = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}
    budget = sv.table1_budget("smoke")
    table = sv.timing_runs("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 4, budget, rows, device="cpu", depth=2)
    row = table.iloc[0]
    assert list(table["row"]) == ["one_stage"] and row["gain_pct"] == pytest.approx(100)
    assert row["train_im_s"] == 4 / 1.0 and row["timed_steps"] == 3
    assert row["step_seconds_iqr"] == bench.timing_spread(seconds["one_stage"])["seconds_iqr"] == 1.75
    assert row["measured_over_ideal"] == pytest.approx(100 / row["ideal_gain_pct"])


def test_timing_runs_times_every_row_on_this_machine():
    """A real timing of a depth-2 model: numeric columns, one timed step per sweep and row."""
    rows = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}
    budget = sv.table1_budget("smoke")
    table = sv.timing_runs("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, budget, rows, device="cpu", depth=2)
    numeric = ["train_im_s", "gain_pct", "gflops_off", "gflops_on", "ideal_gain_pct", "step_seconds_iqr"]
    assert all(pd.api.types.is_float_dtype(table[c]) for c in numeric)
    assert table.loc[0, "train_im_s"] > 0 and table.loc[0, "timed_steps"] == budget.timing.runs
