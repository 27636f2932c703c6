"""SkipViT study: per-scale budgets, the accuracy summary, timing runs, run folders."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

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


def _timing(device="cpu"):
    rows = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}
    budget = sv.table1_budget("smoke")
    return sv.timing_runs("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, budget, rows, device=device, depth=2)


@pytest.fixture(scope="module")
def tiny_timing():
    """One real timing of a depth-2 model on this machine, shared by the tests that read it."""
    return _timing()


def test_timing_runs_times_the_baseline_every_row_and_an_aa_control(tiny_timing):
    """A real timing of a depth-2 model: baseline, the row and the A/A control, numeric interval columns, a note."""
    table, raw = tiny_timing
    assert list(table["row"]) == ["baseline", "one_stage", sv.CONTROL]
    numeric = ["train_im_s", "speedup", "speedup_low", "speedup_high", "gain_pct", "ideal_speedup",
               "measured_over_ideal"]  # fmt: skip
    assert all(pd.api.types.is_float_dtype(table[c]) for c in numeric)
    row = table.set_index("row").loc["one_stage"]
    assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"] and row["train_im_s"] > 0
    assert table["note"].nunique() == 1 and set(raw["arm"]) == set(table["row"])
    assert (raw.groupby("arm")["round"].nunique() == sv.table1_budget("smoke").timing.rounds).all()


def test_timing_runs_measured_over_ideal_is_a_ratio_of_speedups(tiny_timing):
    """measured_over_ideal = speed-up ÷ (gflops_off / gflops_on), gain_pct = 100·(speed-up − 1), verdict from it."""
    row = tiny_timing[0].set_index("row").loc["one_stage"]
    assert row["ideal_speedup"] == pytest.approx(row["gflops_off"] / row["gflops_on"]) and row["ideal_speedup"] > 1
    assert row["measured_over_ideal"] == pytest.approx(row["speedup"] / row["ideal_speedup"])
    assert row["gain_pct"] == pytest.approx(100 * (row["speedup"] - 1))
    assert row["verdict"] == bench.flop_bound_verdict(row["measured_over_ideal"], (0.90, 1.03))


def test_timing_runs_on_an_absent_device_is_nan_with_a_note():
    """Without CUDA every measured number is NaN (numeric columns) and note says it was not measured."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    table, raw = _timing(device="cuda")
    assert table[["speedup", "speedup_low", "train_im_s", "measured_over_ideal"]].isna().all().all()
    assert pd.api.types.is_float_dtype(table["speedup"]) and raw.empty
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_rows_to_profile_takes_the_headline_then_the_worst_flagged_row():
    """Rows outside 0.90–1.03: the headline row first, then the farthest from 1; none flagged → [] or the headline."""
    speed = pd.DataFrame({"row": ["baseline", "a", "skip_6_55_s11", "b", "c", sv.CONTROL],
                          "measured_over_ideal": [1.0, 1.2, 0.8, 0.5, 1.0, 1.5]})  # fmt: skip
    assert sv.rows_to_profile(speed, limit=2) == ["skip_6_55_s11", "b"]
    calm = speed.assign(measured_over_ideal=1.0)
    assert sv.rows_to_profile(calm) == [] and sv.rows_to_profile(calm, 1, always=True) == ["skip_6_55_s11"]


def test_profile_rows_breaks_down_the_baseline_and_the_row_by_operator():
    """profile_rows on a tiny model: operator × {baseline, row} self ms per call, with a positive total row."""
    rows = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}
    profiles = sv.profile_rows("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, rows, calls=1, device="cpu", depth=2)
    frame = profiles["one_stage"].set_index("operator")
    assert list(frame.columns) == ["baseline", "one_stage"] and (frame.loc["total"] > 0).all()


def test_profile_explains_only_an_excess_carried_by_attention_operators():
    """Ideal 1.2: the excess is explained when softmax's shrinking beyond the ideal covers the total's, else not."""
    by_softmax = pd.DataFrame({"operator": ["aten::mm", "aten::_softmax", "total"],
                               "baseline": [60.0, 60.0, 120.0], "row": [50.0, 20.0, 70.0]})  # fmt: skip
    assert sv.profile_explains(by_softmax, "row", 1.2)
    by_matmul = by_softmax.assign(row=[20.0, 50.0, 70.0])
    assert not sv.profile_explains(by_matmul, "row", 1.2)
    within = by_softmax.assign(row=[50.0, 48.0, 98.0])  # total ratio 1.22: no excess to explain
    assert not sv.profile_explains(within, "row", 1.2)


def test_explain_verdicts_rewrites_only_an_explained_row_above_the_bound():
    """A profiled row above 1.03 whose excess attention explains reads 'explained by profile'."""
    speed = pd.DataFrame({"row": ["row"], "measured_over_ideal": [1.4], "ideal_speedup": [1.2], "verdict": ["x"]})
    profile = pd.DataFrame({"operator": ["aten::_softmax", "total"], "baseline": [60.0, 120.0], "row": [0.0, 70.0]})
    assert sv.explain_verdicts(speed, {"row": profile}).loc[0, "verdict"].endswith("explained by profile")


def test_timing_runs_in_separate_processes():
    """The same table timed with every (round, row) in its own process: the arms are rebuilt there from specs."""
    rows = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}
    budget = dataclasses.replace(sv.table1_budget("smoke"),
                                 timing=dataclasses.replace(sv.table1_budget("smoke").timing, isolation="process"))
    table, raw = sv.timing_runs("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, budget, rows, depth=2)
    assert list(table["row"]) == ["baseline", "one_stage", sv.CONTROL]
    assert table["speedup"].notna().all() and (table["isolation"] == "process").all()
    assert (raw.groupby("arm")["round"].nunique() == budget.timing.rounds).all()
