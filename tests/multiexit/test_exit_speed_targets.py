"""experiments.exit_speed_targets (notebook 02): the speed targets in one comparison, the per-sample controls."""

import pytest
import torch

from vitstudy import bench
from vitstudy.experiments import exit_speed_targets, real_data_exit

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100)


def test_performance_table_reports_points_lost_with_its_interval(depth12_study):
    """The speed-target table states the per-sample test top-1 loss in points, with a paired interval around it."""
    point = {"variant": "separate", "exits": (3, 6, 9), "threshold": 0.5}
    table, _ = exit_speed_targets.performance_table(depth12_study, point, 16, NO_TIMING)
    test = depth12_study.evaluate("separate", (3, 6, 9), 0.5, "sample")
    row = table[table["test_top1_loss"].notna()].iloc[0]
    assert row["test_top1_loss"] == pytest.approx(test["top1_loss"])
    assert row["test_top1_loss_low"] <= row["test_top1_loss"] <= row["test_top1_loss_high"]
    assert table["measurement"].iloc[-1] == real_data_exit.CONTROL_LABEL and len(table) == 6
    assert (table["images_per_s"] > 0).all() and table["verdict"].notna().all()


def test_performance_table_judges_each_forced_exit_against_its_flop_ratio(depth12_study):
    """A forced exit's ideal is the plain model's FLOPs over the exit path's; the idle row reports its overhead."""
    point = {"variant": "separate", "exits": (3, 6, 9), "threshold": 0.5}
    table, _ = exit_speed_targets.performance_table(depth12_study, point, 16, NO_TIMING)
    ideal = [depth12_study.costs.plain() / depth12_study.costs.forced(b) for b in (3, 6, 9)]
    assert table["ideal_speedup"].iloc[:3].tolist() == pytest.approx(ideal)
    idle = table.iloc[4]
    assert idle["overhead_pct"] == pytest.approx(100 * (1 / idle["speedup"] - 1)) and idle["batch_exited_pct"] == 0


def test_per_sample_controls_time_smaller_batches_and_a_keep_all_compaction(depth12_study):
    """The controls table: plain per-image speed-up at b, b-3, 0.86 b, b/2, the keep-all compaction, the A/A row."""
    table, comparison = exit_speed_targets.per_sample_controls(depth12_study, 16, NO_TIMING)
    assert table["batch_size"].tolist()[:4] == [16, 13, 14, 8]
    assert exit_speed_targets.control_batch_sizes(256) == (256, 253, 220, 128)
    assert {"compaction keeping every row", real_data_exit.CONTROL_LABEL} <= set(table["arm"])
    assert table["per_image_speedup"].iloc[0] == pytest.approx(1.0)
    plain13 = comparison.speedup("plain, batch 13")
    assert table["per_image_speedup"].iloc[1] == pytest.approx(plain13["speedup"] * 13 / 16)
    assert table["ms_per_image"].iloc[1] == pytest.approx(1e3 * plain13["seconds"] / 13)
    assert (table["per_image_speedup_low"] <= table["per_image_speedup_high"]).all()


def test_the_compaction_control_is_the_idle_model_keeping_every_row(depth12_study):
    """The compaction arm is a configured MultiExitViT (keep_every_row) whose output is the plain model's."""
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    control = exit_speed_targets.idle_model(depth12_study.vit, keep_every_row=True)
    with torch.inference_mode():
        torch.testing.assert_close(control(x).logits, depth12_study.vit(x))
    assert control.keep_every_row and control.exits == (3, 6, 9) and control.threshold == 1.0
