"""experiments.multiexit.common and real_data_exit (notebook 02): the real-data budgets, Table 5.2 (numbers stay
numbers: NaN + note when not measured), the report beside ours, the threshold sweep and the operating point,
the measured points."""

import dataclasses

import pandas as pd
import pytest

from vitstudy import bench, multiexit
from vitstudy.config import SCALES, Scale, TrainConfig
from vitstudy.experiments.multiexit import common, real_data_exit
from vitstudy.reference import load_reference
from vitstudy.report.runner import STUDY_SCALES

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100, peak_size=64)
SPEED = ["images_per_s", "speedup", "speedup_low", "speedup_high", "measured_over_ideal"]


def test_every_report_scale_has_a_budget_and_study_scales_are_refused():
    """Every scale the report runs notebook 02 at has a budget; the from-scratch study's scale is refused."""
    assert set(common.REAL_DATA_BUDGETS) - {"paper_smoke"} == set(SCALES) - set(STUDY_SCALES)
    with pytest.raises(ValueError, match=r"scale='scratch' is not allowed"):
        common.real_data_budget("scratch")
    with pytest.raises(ValueError, match=r"scale='custom' is not allowed: expected one of smoke, quick, full, paper"):
        common.real_data_budget(Scale("custom", TrainConfig()))


def test_a_bad_budget_is_refused_at_construction():
    """Budgets validate like every other setting: the value and what is allowed."""
    with pytest.raises(ValueError, match=r"batch_size=0 is not allowed: expected an integer >= 1"):
        dataclasses.replace(common.real_data_budget("smoke"), batch_size=0)
    with pytest.raises(ValueError, match=r"threshold=1\.5 is not allowed"):
        dataclasses.replace(common.real_data_budget("smoke"), threshold=1.5)


def test_gpu_cells_say_not_measured_without_cuda(digits_study, no_cuda):
    """Timing on an absent CUDA device leaves NaN in every speed cell, numeric columns, and the reason in ``note``."""
    table, _ = common.table_5_2(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"], "cuda")
    assert table[SPEED].isna().all().all() and all(pd.api.types.is_float_dtype(table[c]) for c in SPEED)
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all() and len(table) == 2
    assert 0 <= table["top1"].iloc[0] <= 100


def test_table_5_2_rows_are_bench_speed_rows_against_the_timed_batchs_ideal(digits_study):
    """Each setting's measured ÷ ideal divides by its timed batch's FLOP ideal; the last row is the A/A control."""
    table, comparison = common.table_5_2(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)])
    row = table.iloc[0]
    assert row["measured_over_ideal"] == pytest.approx(row["speedup"] / row["batch_ideal_speedup"])
    assert row["setting"] == "separate/1/batch" and comparison.control == bench.control_arm("plain")
    assert table["setting"].iloc[-1] == common.CONTROL_LABEL
    control = table.iloc[-1]
    interval = control["speedup_low"], control["speedup_high"]
    assert control["verdict"] == bench.control_verdict(control["speedup"], *interval)


def test_batch_rule_settings_that_never_leave_are_timed_once_per_exit_set(digits_study, monkeypatch):
    """At threshold 1.0 no batch leaves: every batch-rule setting runs the same operations, so one arm per exit
    set is timed (the first variant's) and the others read it (``timed_as``); per-sample settings are all timed."""
    timed = {}
    real = bench.compare_models

    def spy(models, *args, **kwargs):
        timed.update(models)
        return real(models, *args, **kwargs)

    monkeypatch.setattr(bench, "compare_models", spy)
    variants = ["same", "finetune", "separate"]
    table, _ = common.table_5_2(digits_study, 1.0, 16, NO_TIMING, variants, [(1,), (1, 2)])
    settings = table[table["variant"].notna()].set_index("setting")
    batch = settings[settings["policy"] == "batch"]
    assert (batch["batch_exited_pct"] == 0).all()
    assert batch["timed_as"].tolist() == ["same/1/batch", "same/1,2/batch"] * 3
    sample = settings[settings["policy"] == "sample"]
    assert (sample["timed_as"] == sample.index).all()
    assert set(timed) == {"plain", *settings["timed_as"]}
    # a shared row reads its arm's speed-up
    assert batch["speedup"].tolist() == settings.loc[batch["timed_as"], "speedup"].tolist()


def test_paper_numbers_sit_beside_matching_rows():
    """The report's Table 5.2 top-1 and speed-up join our rows by variant and exit; ours keep their own values."""
    ours = pd.DataFrame({"variant": ["finetune", "separate"], "exits": ["3", "3"], "top1": [90.0, 91.0]})
    table = common.beside_paper(ours, load_reference("multiexit_5.2"))
    assert table["paper_top1"].iloc[0] == pytest.approx(83.52) and table["paper_top1"].isna().iloc[1]
    assert table["top1"].tolist() == [90.0, 91.0]


def _operating_point_from_the_whole_sweep(study, max_loss, thresholds, exit_sets):
    """The rule computed the long way: every validation setting's interval, then the best allowed one."""
    sweep = common.threshold_sweep(study, thresholds, exit_sets=exit_sets, split="val")
    sweep["high"] = [
        study.top1_loss_interval(r.variant, multiexit.parse_exits(r.exits), r.threshold, "sample", "val")[2]
        for r in sweep.itertuples()
    ]
    allowed = sweep[sweep["high"] <= max_loss]
    allowed = sweep[sweep["threshold"] == max(thresholds)] if allowed.empty else allowed
    best = allowed.sort_values(["ideal_speedup", "top1"], ascending=False).iloc[0]
    return {
        "variant": best["variant"],
        "exits": multiexit.parse_exits(best["exits"]),
        "threshold": float(best["threshold"]),
    }


@pytest.mark.parametrize("max_loss", [0.0, 0.5, 5.0])
def test_operating_point_is_the_fastest_whose_validation_upper_bound_is_within_bounds(digits_study, max_loss):
    """Trying settings fastest first picks what ranking the whole validation sweep by its intervals picks."""
    thresholds, exit_sets = (0.5, 0.9, 1.0), [(1,), (1, 2)]
    point = common.choose_operating_point(digits_study, max_loss, thresholds, exit_sets=exit_sets)
    assert point == _operating_point_from_the_whole_sweep(digits_study, max_loss, thresholds, exit_sets)
    _, _, high = digits_study.top1_loss_interval(**point, policy="sample", split="val")
    assert high <= max_loss or point["threshold"] == 1.0


def test_measured_points_time_each_point_per_sample_with_the_a_a_row(depth12_study):
    """Each point is one per-sample arm with its offline row and speed row; the A/A control row comes last."""
    points = real_data_exit.sweep_points({"variant": "separate", "exits": (3, 6, 9), "threshold": 0.9})
    assert [p["threshold"] for p in points] == [0.9, 1.0, 0.99]
    both = real_data_exit.sweep_points(points[0], ("separate", "joint"))
    assert [p["variant"] for p in both[2:]] == ["separate", "joint"] and both[3]["threshold"] == 0.99
    table, comparison = real_data_exit.measured_points(depth12_study, points, 16, NO_TIMING)
    assert table["policy"].iloc[:3].tolist() == ["sample"] * 3
    assert table["variant"].iloc[-1] == common.CONTROL_LABEL
    assert set(comparison.raw["arm"]) == {"plain", "0", "1", "2", bench.control_arm("plain")}
    assert (table["images_per_s"] > 0).all() and (table["timed_batch_size"] == 16).all()


def test_sweep_curves_draw_one_panel_per_variant(digits_study):
    """The accuracy / speed-up figure has a panel per variant and a line per exit set."""
    sweep = common.threshold_sweep(digits_study, (0.5, 1.0), ["same", "separate"], [(1,), (1, 2)])
    fig = real_data_exit.accuracy_speed_curves(sweep, plain_top1=digits_study.plain_top1)
    assert [ax.get_title() for ax in fig.axes] == ["Same", "separate (ours)"] and len(fig.axes[0].lines) == 4
