"""What SkipViT's notebooks share (vitstudy.experiments.skipvit.common): training one row (recipe, cache folders,
budgets) and timing rows' training steps (timing runs, profiles, verdicts, bf16 twins)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from vitstudy import bench, config
from vitstudy import skipvit as sv
from vitstudy.config import PAPER_SMOKE
from vitstudy.experiments.skipvit import common
from vitstudy.experiments.skipvit.common import RowTraining

# ----------------------------------------------------------------------------------------------------------
# Training one row


def test_run_dir_depends_on_the_settings_and_the_warmup():
    """Two settings, or two warm-ups, of one row name never share a cache folder; the same run does."""
    training = RowTraining("smoke", config.SCALES["smoke"].train)
    one = common.run_dir(training, "row", sv.TABLE3, 0, 0)
    assert one == common.run_dir(training, "row", sv.TABLE3, 0, 0)
    assert one != common.run_dir(training, "row", sv.preset("skip_4_7_30_s11"), 0, 0)
    assert one != common.run_dir(training, "row", sv.TABLE3, 1, 0)


def test_run_dir_depends_on_the_start():
    """A row fine-tuned from the baseline and the same row from scratch never share a cache folder."""
    scratch = RowTraining("smoke", config.SCALES["smoke"].train)
    tuned = RowTraining("smoke", config.SCALES["smoke"].train, start="baseline")
    assert common.run_dir(scratch, "row", sv.TABLE3, 0, 0) != common.run_dir(tuned, "row", sv.TABLE3, 0, 0)


def test_unknown_start_is_one_clear_line():
    """``start`` is scratch or baseline."""
    with pytest.raises(ValueError, match="start='imagenet' is not allowed"):
        RowTraining("smoke", config.SCALES["smoke"].train, start="imagenet")


@dataclass(frozen=True)
class Budget:
    training: RowTraining


BUDGETS = {
    "smoke": Budget(RowTraining("smoke", config.SCALES["smoke"].train)),
    "paper": Budget(RowTraining.of(config.SCALES["paper"])),
    PAPER_SMOKE: Budget(RowTraining.of(config.paper_smoke(config.SCALES["paper"]))),
}


def test_budget_for_picks_the_paper_smoke_budget_and_the_imagenet_folder(monkeypatch, tmp_path):
    """The paper scale reads its ImageNet folder from the environment; at smoke sizes it gets budgets[paper_smoke]."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    assert common.budget_for(BUDGETS, "paper").training.train.data_root == str(tmp_path)
    assert common.budget_for(BUDGETS, "paper").training.train.train_size is None
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    smoke_sizes = common.budget_for(BUDGETS, "paper").training.train
    assert smoke_sizes == dataclasses.replace(BUDGETS[PAPER_SMOKE].training.train, data_root=str(tmp_path))


def test_budget_for_refuses_a_scale_without_a_budget():
    """A scale the notebook does not run at is one line naming the ones it does (never the paper_smoke key)."""
    with pytest.raises(ValueError, match="scale='quick' is not allowed: expected one of smoke, paper$"):
        common.budget_for(BUDGETS, "quick")


# ----------------------------------------------------------------------------------------------------------
# Timing rows' training steps

ONE_STAGE = {"one_stage": sv.SkipViTSettings((1,), (0.5,), mode="drop")}


def _timing(device="cpu", timing=bench.SMOKE_TIMING):
    return common.timing_runs("vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, timing, ONE_STAGE, device=device, depth=2)


@pytest.fixture(scope="module")
def tiny_timing():
    """One real timing of a depth-2 model on this machine, shared by the tests that read it."""
    return _timing()


def test_timing_runs_times_the_baseline_every_row_and_an_aa_control(tiny_timing):
    """A real timing of a depth-2 model: baseline, the row and the A/A control, numeric interval columns, a note."""
    table, raw = tiny_timing
    assert list(table["row"]) == ["baseline", "one_stage", common.CONTROL]
    numeric = [
        "images_per_s",
        "speedup",
        "speedup_low",
        "speedup_high",
        "gain_pct",
        "ideal_speedup",
        "measured_over_ideal",
    ]
    assert all(pd.api.types.is_float_dtype(table[c]) for c in numeric)
    row = table.set_index("row").loc["one_stage"]
    assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"] and row["images_per_s"] > 0
    assert table["note"].nunique() == 1 and set(raw["arm"]) == set(table["row"])
    assert (raw.groupby("arm")["round"].nunique() == bench.SMOKE_TIMING.rounds).all()


def test_timing_runs_rows_are_bench_speed_rows(tiny_timing):
    """Every row carries bench.speed_row's columns and bench.protocol's; the control is named bench.control_arm."""
    table, _ = tiny_timing
    comparison_columns = [
        "seconds_per_call",
        "images_per_s",
        "speedup",
        "speedup_low",
        "speedup_high",
        "ideal_speedup",
        "measured_over_ideal",
        "measured_over_ideal_low",
        "measured_over_ideal_high",
        "verdict",
    ]
    protocol_columns = ["device", "threads", "rounds", "min_run_time_s", "order", "isolation", "torch", "timm"]
    assert set(comparison_columns + protocol_columns) <= set(table.columns)
    assert common.CONTROL == bench.control_arm("baseline")
    verdicts = table.set_index("row")["verdict"]
    assert verdicts["baseline"] == bench.BASELINE_VERDICT and verdicts[common.CONTROL].startswith("A/A control")


def test_timing_runs_measured_over_ideal_is_a_ratio_of_speedups(tiny_timing):
    """measured_over_ideal = speed-up ÷ (gflops_off / gflops_on), gain_pct = 100·(speed-up − 1), verdict from it."""
    row = tiny_timing[0].set_index("row").loc["one_stage"]
    assert row["ideal_speedup"] == pytest.approx(row["gflops_off"] / row["gflops_on"]) and row["ideal_speedup"] > 1
    assert row["measured_over_ideal"] == pytest.approx(row["speedup"] / row["ideal_speedup"])
    assert row["gain_pct"] == pytest.approx(100 * (row["speedup"] - 1))
    assert row["verdict"] == bench.flop_bound_verdict(row["measured_over_ideal"], bench.FLOP_IDEAL_TARGET)


def test_timing_runs_on_an_absent_device_is_nan_with_a_note(no_cuda):
    """Without CUDA every measured number is NaN (numeric columns) and note says it was not measured."""
    table, raw = _timing(device="cuda")
    assert table[["speedup", "speedup_low", "images_per_s", "measured_over_ideal"]].isna().all().all()
    assert pd.api.types.is_float_dtype(table["speedup"]) and raw.empty
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_training_step_arm_trains_the_model():
    """An arm is one plain training step: calling it twice gives two finite losses from changing weights."""
    step = common.training_step_arm(
        "vitstudy_tiny_patch4_28", sv.TABLE1[sv.HEADLINE], (1, 28, 28), 10, 2, "cpu", model_kwargs={"depth": 12}
    )
    first, second = step(), step()
    assert torch.isfinite(first) and torch.isfinite(second) and first != second


def test_rows_to_profile_takes_the_headline_then_the_worst_flagged_row():
    """Rows outside 0.90–1.03: the headline row first, then the farthest from 1; none flagged → [] or the headline."""
    table = pd.DataFrame(
        {
            "row": ["baseline", "a", "skip_6_55_s11", "b", "c", common.CONTROL],
            "measured_over_ideal": [1.0, 1.2, 0.8, 0.5, 1.0, 1.5],
        }
    )
    assert common.rows_to_profile(table, limit=2) == ["skip_6_55_s11", "b"]
    calm = table.assign(measured_over_ideal=1.0)
    assert common.rows_to_profile(calm) == [] and common.rows_to_profile(calm, 1, always=True) == ["skip_6_55_s11"]


def test_rows_to_profile_without_the_headline_takes_the_first_row():
    """``always`` with no flagged row and no headline row in the table: the first dropping row."""
    table = pd.DataFrame({"row": ["baseline", "a", "b", common.CONTROL], "measured_over_ideal": 1.0})
    assert common.rows_to_profile(table, 1, always=True) == ["a"]


def test_profile_rows_breaks_down_the_baseline_and_the_row_by_operator():
    """profile_rows on a tiny model: operator × {baseline, row} self ms per call, with a positive total row."""
    profiles = common.profile_rows(
        "vitstudy_tiny_patch4_28", (1, 28, 28), 10, 2, ONE_STAGE, calls=1, device="cpu", depth=2
    )
    frame = profiles["one_stage"].set_index("operator")
    assert list(frame.columns) == ["baseline", "one_stage"] and (frame.loc["total"] > 0).all()


def test_profile_explains_only_an_excess_carried_by_attention_operators():
    """Ideal 1.2: the excess is explained when softmax's shrinking beyond the ideal covers the total's, else not."""
    by_softmax = pd.DataFrame(
        {
            "operator": ["aten::mm", "aten::_softmax", "total"],
            "baseline": [60.0, 60.0, 120.0],
            "row": [50.0, 20.0, 70.0],
        }
    )
    assert common.profile_explains(by_softmax, "row", 1.2)
    by_matmul = by_softmax.assign(row=[20.0, 50.0, 70.0])
    assert not common.profile_explains(by_matmul, "row", 1.2)
    within = by_softmax.assign(row=[50.0, 48.0, 98.0])  # total ratio 1.22: no excess to explain
    assert not common.profile_explains(within, "row", 1.2)


def test_explain_verdicts_rewrites_only_an_explained_row_above_the_bound():
    """A profiled row above 1.03 whose excess attention explains reads 'explained by profile'."""
    table = pd.DataFrame({"row": ["row"], "measured_over_ideal": [1.4], "ideal_speedup": [1.2], "verdict": ["x"]})
    profile = pd.DataFrame({"operator": ["aten::_softmax", "total"], "baseline": [60.0, 120.0], "row": [0.0, 70.0]})
    assert common.explain_verdicts(table, {"row": profile}).loc[0, "verdict"].endswith("explained by profile")


def test_timing_runs_in_separate_processes():
    """The same table timed with every arm in its own worker process: the arms (their model arguments too) are
    rebuilt there from specs."""
    timing = dataclasses.replace(bench.SMOKE_TIMING, isolation="process")
    table, raw = _timing(timing=timing)
    assert list(table["row"]) == ["baseline", "one_stage", common.CONTROL]
    assert table["speedup"].notna().all() and (table["isolation"] == "process").all()
    assert (raw.groupby("arm")["round"].nunique() == timing.rounds).all()


# ----------------------------------------------------------------------------------------------------------
# bf16 twins and how close the baseline runs to the machine


@pytest.fixture(scope="module")
def bf16_timing():
    """The depth-2 timing with the baseline and the row also timed in bf16 (smoke timing), on any CPU."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITSTUDY_BF16", "1")
        return common.timing_runs(
            "vitstudy_tiny_patch4_28",
            (1, 28, 28),
            10,
            2,
            bench.SMOKE_TIMING,
            ONE_STAGE,
            device="cpu",
            bf16_rows=("baseline", "one_stage"),
            depth=2,
        )


def test_bf16_twins_are_timed_in_the_same_rounds_and_fill_their_rows_bf16_columns(bf16_timing):
    """One row per fp32 arm; the bf16 twins are raw arms whose numbers sit in their row's bf16 columns."""
    table, raw = bf16_timing
    assert list(table["row"]) == ["baseline", "one_stage", common.CONTROL]
    assert set(raw["arm"]) == {*table["row"], "baseline (bf16)", "one_stage (bf16)"}
    rows = table.set_index("row")
    assert (rows.loc[["baseline", "one_stage"], "bf16_speedup_over_fp32"] > 0).all()
    assert rows.loc["baseline", "bf16_verdict"] == bench.BASELINE_VERDICT
    one = rows.loc["one_stage"]
    assert one["bf16_verdict"] == bench.flop_bound_verdict(
        one["bf16_measured_over_ideal"],
        bench.FLOP_IDEAL_TARGET,
        interval=(one["bf16_measured_over_ideal_low"], one["bf16_measured_over_ideal_high"]),
    )
    assert pd.isna(rows.loc[common.CONTROL, "bf16_verdict"])  # the A/A control has no bf16 twin


def test_every_row_carries_the_baselines_training_flop_rate(bf16_timing):
    """The baseline's GFLOP/s count a training step as 3 x forward: 3 x gflops_off x its images/s, on every row,
    beside the fp32 and bf16 peaks measured in this process."""
    table, _ = bf16_timing
    base = table.set_index("row").loc["baseline"]
    expected = 3 * base["gflops_off"] * base["images_per_s"]
    assert table["baseline_gflop_per_s"].to_numpy() == pytest.approx([expected] * 3)
    assert (table["flops_counted"] == bench.TRAINING_STEP).all() and (table["peak_gflop_per_s"] > 0).all()
    assert table["baseline_fraction_of_peak"].iloc[0] == pytest.approx(expected / base["peak_gflop_per_s"])
    assert table["bf16_baseline_gflop_per_s"].iloc[0] == pytest.approx(
        3 * base["gflops_off"] * base["bf16_images_per_s"]
    )


def test_bf16_rows_must_include_the_baseline_and_be_rows_of_the_table():
    with pytest.raises(ValueError, match=r"bf16_rows=\('one_stage',\) is not allowed"):
        common.timing_runs(
            "vitstudy_tiny_patch4_28",
            (1, 28, 28),
            10,
            2,
            bench.SMOKE_TIMING,
            ONE_STAGE,
            bf16_rows=("one_stage",),
            depth=2,
        )


def test_a_bf16_training_step_arm_trains_under_autocast(monkeypatch):
    """precision="bf16": the forward runs under a CPU bf16 autocast, the weights change, the losses are finite."""
    entered = []
    original = torch.autocast

    def recording_autocast(device_type, dtype=None, **kwargs):
        entered.append((device_type, dtype))
        return original(device_type, dtype=dtype, **kwargs)

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    step = common.training_step_arm(
        "vitstudy_tiny_patch4_28",
        sv.TABLE1[sv.HEADLINE],
        (1, 28, 28),
        10,
        2,
        "cpu",
        model_kwargs={"depth": 12},
        precision="bf16",
    )
    first, second = step(), step()
    assert torch.isfinite(first) and torch.isfinite(second) and first != second
    assert entered == [("cpu", torch.bfloat16)] * 2
