"""experiments.multiexit.real_data_exit (notebook 02): the speed targets in one comparison, the per-sample controls."""

import pandas as pd
import pytest
import torch

from vitstudy import bench
from vitstudy.experiments.multiexit import common, real_data_exit

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100, peak_size=64)
ONE_POINT = {"variant": "separate", "exits": (3, 6, 9), "threshold": 0.5}


# Timed once per module, read by every test that checks a different part of the same table.
@pytest.fixture(scope="module")
def one_point_performance(depth12_study) -> pd.DataFrame:
    """The speed-target table of the study at :data:`ONE_POINT`."""
    return real_data_exit.performance_table(depth12_study, [ONE_POINT], 16, NO_TIMING)[0]


@pytest.fixture(scope="module")
def controls(depth12_study) -> tuple[pd.DataFrame, bench.Comparison]:
    """The per-sample controls at a batch of 16, and their comparison."""
    return real_data_exit.per_sample_controls(depth12_study, 16, NO_TIMING)


def test_performance_table_reports_points_lost_with_its_interval(depth12_study, one_point_performance):
    """The speed-target table states the per-sample test top-1 loss in points, with a paired interval around it."""
    table = one_point_performance
    test = depth12_study.evaluate("separate", (3, 6, 9), 0.5, "sample")
    row = table[table["test_top1_loss"].notna()].iloc[0]
    assert row["test_top1_loss"] == pytest.approx(test["top1_loss"])
    assert row["test_top1_loss_low"] <= row["test_top1_loss"] <= row["test_top1_loss_high"]
    assert table["measurement"].iloc[-1] == common.CONTROL_LABEL and len(table) == 6
    assert (table["images_per_s"] > 0).all() and table["verdict"].notna().all()


def test_performance_table_judges_each_forced_exit_against_its_flop_ratio(depth12_study, one_point_performance):
    """A forced exit's ideal is the plain model's FLOPs over the exit path's; the idle row reports its overhead."""
    table = one_point_performance
    ideal = [depth12_study.costs.plain() / depth12_study.costs.forced(b) for b in (3, 6, 9)]
    assert table["ideal_speedup"].iloc[:3].tolist() == pytest.approx(ideal)
    idle = table.iloc[4]
    assert idle["overhead_pct"] == pytest.approx(100 * (1 / idle["speedup"] - 1)) and idle["batch_exited_pct"] == 0


def test_per_sample_controls_time_smaller_batches_and_a_keep_all_compaction(controls):
    """The controls table: plain per-image speed-up at b, b-3, 0.86 b, b/2, the keep-all compaction, the A/A row."""
    table, comparison = controls
    assert table["batch_size"].tolist()[:4] == [16, 13, 14, 8]
    assert real_data_exit.control_batch_sizes(256) == (256, 253, 220, 128)
    assert {"compaction keeping every row", common.CONTROL_LABEL} <= set(table["arm"])
    assert table["per_image_speedup"].iloc[0] == pytest.approx(1.0)
    plain13 = comparison.speedup("plain, batch 13")
    assert table["per_image_speedup"].iloc[1] == pytest.approx(plain13["speedup"] * 13 / 16)
    assert table["ms_per_image"].iloc[1] == pytest.approx(1e3 * plain13["seconds"] / 13)
    assert (table["per_image_speedup_low"] <= table["per_image_speedup_high"]).all()


def test_the_compaction_control_is_the_idle_model_keeping_every_row(depth12_study):
    """The compaction arm is a configured MultiExitViT (keep_every_row) whose output is the plain model's."""
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    control = real_data_exit.idle_model(depth12_study.vit, keep_every_row=True)
    with torch.inference_mode():
        torch.testing.assert_close(control(x).logits, depth12_study.vit(x))
    assert control.keep_every_row and control.exits == (3, 6, 9) and control.threshold == 1.0


def test_performance_table_times_each_operating_point_once(depth12_study):
    """One per-sample row per distinct point (each judged against the study's target), between the forced exits and
    the idle row."""
    points = [{"variant": "separate", "exits": (3, 6, 9), "threshold": t} for t in (0.5, 0.9, 0.5)]
    table, comparison = real_data_exit.performance_table(depth12_study, points, 16, NO_TIMING)
    per_sample = table[table["measurement"].str.startswith(real_data_exit.PER_SAMPLE)]
    assert per_sample.index.tolist() == [3, 4] and len(table) == 7
    assert per_sample["measurement"].tolist() == [real_data_exit.per_sample_label(p) for p in points[:2]]
    assert (per_sample["variant"] == "separate").all() and per_sample["speed_target"].str.len().gt(0).all()
    assert set(per_sample["measurement"]) <= set(comparison.raw["arm"])


def _row(**changes):
    row = dict(
        speedup=2.7,
        speedup_low=2.6,
        speedup_high=2.8,
        test_top1_loss=0.2,
        test_top1_loss_low=-0.1,
        test_top1_loss_high=0.45,
        verdict="within target (0.9–1.03)",
    )
    return {**row, **changes}


def test_target_verdict_needs_speed_accuracy_and_the_flop_bound():
    """>= 2.5x at <= 0.5 points lost, within 0.90-1.03 of the ideal: intervals decide between met and point-only."""
    verdict = real_data_exit.target_verdict
    assert verdict(_row()).startswith("met (") and "both intervals inside" in verdict(_row())
    assert verdict(_row(speedup_low=2.4)).startswith("met at the point estimates")
    assert verdict(_row(test_top1_loss_high=0.7)).startswith("met at the point estimates")
    assert verdict(_row(speedup=1.9)).endswith("speed-up below 2.5x")
    assert verdict(_row(test_top1_loss=0.6)).endswith("loses more than 0.5 points")
    assert "measured / ideal off target" in verdict(_row(verdict="exceeds the FLOP bound — measurement suspect"))
    assert verdict(_row(speedup=float("nan"))) == "not measured"


def _performance(rows):
    frame = pd.DataFrame(rows)
    frame["speed_target"] = [real_data_exit.target_verdict(r) for r in rows]
    return frame


def test_findings_say_how_far_the_best_accuracy_preserving_ideal_is_from_the_target():
    """Nobody meets the target: the best measured accuracy-preserving point and its ideal's shortfall, computed."""
    label = real_data_exit.PER_SAMPLE
    table = _performance(
        [
            _row(
                measurement=f"{label}: separate, a",
                variant="separate",
                speedup=1.9,
                speedup_low=1.8,
                test_ideal_speedup=1.93,
                measured_over_ideal=0.98,
            ),
            _row(
                measurement=f"{label}: joint, b",
                variant="joint",
                speedup=2.2,
                speedup_low=2.1,
                test_ideal_speedup=2.25,
                measured_over_ideal=0.98,
            ),
            _row(
                measurement=f"{label}: scratch, c",
                variant="scratch",
                speedup=3.0,
                test_top1_loss=2.0,
                test_ideal_speedup=3.1,
                measured_over_ideal=0.97,
            ),
        ]
    )
    text = " ".join(real_data_exit.target_findings(table))
    assert "No operating point meets the target" in text and "the best accuracy-keeping one, joint, b" in text
    assert "0.25× short of 2.5×" in text and "The exits trained with the backbone (joint, b)" in text
    met = _performance(
        [_row(measurement=f"{label}: joint, b", variant="joint", test_ideal_speedup=2.75, measured_over_ideal=0.98)]
    )
    assert "is met by: joint, b." in " ".join(real_data_exit.target_findings(met))
    failed = " ".join(real_data_exit.target_findings(met, "not trustworthy (A/A x)"))
    assert "met by" not in failed and failed.endswith("is not trustworthy (A/A x).")
    nothing = _performance(
        [
            _row(
                measurement=f"{label}: joint, b",
                variant="joint",
                speedup=float("nan"),
                test_ideal_speedup=2.75,
                measured_over_ideal=float("nan"),
            )
        ]
    )
    assert real_data_exit.target_findings(nothing)[-1] == "Against the 2.5× target: not measured."


def test_per_sample_controls_say_how_close_the_plain_model_runs_to_the_peak(controls):
    """Every row carries the plain model's achieved GFLOP/s at the full batch, the fp32 peak and their quotient."""
    table, comparison = controls
    assert set(bench.MACHINE_USE_COLUMNS) <= set(table.columns)
    plain = comparison.work.flops_per_image * 16 / comparison.speedup("plain")["seconds"] / 1e9
    assert table["baseline_gflop_per_s"].tolist() == pytest.approx([plain] * len(table))
    assert (table["peak_gflop_per_s"] > 0).all()
    quotient = table["baseline_gflop_per_s"] / table["peak_gflop_per_s"]
    assert table["baseline_fraction_of_peak"].tolist() == pytest.approx(quotient.tolist())


def test_table_5_2_keeps_the_machine_use_columns():
    """Notebook 02 saves Table 5.2 through TABLE_5_2_COLUMNS: the achieved rate and the peak are among them."""
    assert set(bench.MACHINE_USE_COLUMNS) <= set(real_data_exit.TABLE_5_2_COLUMNS)
