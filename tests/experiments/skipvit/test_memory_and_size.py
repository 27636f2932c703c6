"""Notebook 09's experiment (vitstudy.experiments.skipvit.memory_and_size): activation memory, model-size rows."""

import dataclasses
import math

import pytest

from vitstudy import bench
from vitstudy import skipvit as sv
from vitstudy.experiments.skipvit import memory_and_size as mas
from vitstudy.experiments.skipvit.common import CONTROL


def test_dropping_saves_memory_and_no_cuda_is_nan(no_cuda):
    """The headline row keeps less for backward than the plain model; without CUDA the peak is NaN + bench's note."""
    rows = mas.memory_rows(
        "vitstudy_tiny_patch4_28", (1, 28, 28), 10, {"h": sv.TABLE1[sv.HEADLINE]}, device="cuda", depth=12
    )
    row = rows.iloc[0]
    assert row["saved_mib_per_image_on"] < row["saved_mib_per_image_off"]
    assert 0 < row["memory_saving_pct"] < 100 * (1 - 1 / row["ideal_speedup"]) + 5
    assert math.isnan(row["cuda_peak_mib_per_image_on"]) and row["note"] == bench.NOT_MEASURED_NO_CUDA
    assert row["device"] == "cpu"  # counted on the CPU instead: saved bytes do not depend on the device


def test_headline_scales_with_depth():
    """12 blocks: 6 / skip 11 (the paper's); 24 blocks: drop after 12, re-insert at 22."""
    assert mas.scaled_headline(12) == sv.TABLE1[sv.HEADLINE]
    assert (mas.scaled_headline(24).drop_layers, mas.scaled_headline(24).skip_layer) == ((12,), 22)


def test_unknown_scale_model_and_memory_row_are_one_clear_line():
    """budget() names the scales; a budget naming a model outside MODELS names the models, a memory row outside
    the presets (or the baseline, which saves nothing) names the rows."""
    with pytest.raises(ValueError, match="scale='scratch' is not allowed"):
        mas.budget("scratch")
    with pytest.raises(ValueError, match="model='ViT-H/14' is not allowed"):
        mas.MemoryAndSizeBudget(models=("ViT-H/14",))
    for row in ("skip_9_99", "baseline"):
        with pytest.raises(ValueError, match=f"memory_rows='{row}' is not allowed: expected one of .*drop_6_55"):
            mas.MemoryAndSizeBudget(memory_rows=(row,))


def test_memory_table_counts_the_budgets_rows_on_both_models():
    """The memory table has the budget's rows, in the presets' order, on the paper's model and the small model."""
    budget = dataclasses.replace(mas.budget("smoke"), memory_rows=("drop_6_55", "fused_6_45"))
    table = mas.memory_table(budget)
    assert list(table["model"]) == [mas.MODELS["ViT-S/16"]] * 2 + [mas.SMALL_MODEL] * 2
    assert list(table["row"]) == ["fused_6_45", "drop_6_55"] * 2 and (table["memory_saving_pct"] > 0).all()


def test_model_size_rows_time_the_scaled_headline_beside_an_aa_control():
    """The row is bench's speed row of the scaled headline with the A/A control's speed-up, at the budget's
    isolation. (The default, a process per arm, rebuilds timing_runs' arms with their model arguments in a child:
    tests/experiments/skipvit/test_common.py times those arms in their own processes.)"""
    smoke = mas.budget("smoke")
    budget = dataclasses.replace(smoke, timing=dataclasses.replace(smoke.timing, isolation="in_process"))
    table, raw = mas.model_size_rows(budget)
    assert (table["isolation"] == "in_process").all()
    assert table["speedup"].notna().all() and table["control_speedup"].notna().all()
    assert {"seconds_per_call", "measured_over_ideal_low", "verdict", "threads"} <= set(table.columns)
    assert set(raw["arm"]) == {"baseline", "headline", CONTROL}


def test_model_not_timed_is_nan_and_not_measured():
    """A model outside ``timed`` keeps its FLOP and memory columns; its speed is NaN, verdict "not measured"."""
    budget = dataclasses.replace(mas.budget("smoke"), models=("ViT-S/16",), timed=())
    table, raw = mas.model_size_rows(budget)
    row = table.iloc[0]
    assert row["ideal_speedup"] > 1 and row["memory_saving_pct"] > 0
    assert row["verdict"] == "not measured" and row["note"].startswith("not timed") and raw.empty
