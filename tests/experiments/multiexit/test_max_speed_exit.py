"""experiments.multiexit.max_speed_exit (notebook 01): its budgets, Table 5.1 (common.table_5_1) from bench's
speed rows, the report beside it."""

import dataclasses

import pandas as pd
import pytest

from vitstudy import bench
from vitstudy.config import PAPER_SMOKE, SCALES, Scale, TrainConfig
from vitstudy.experiments.multiexit import common, max_speed_exit
from vitstudy.reference import load_reference
from vitstudy.report.runner import STUDY_SCALES

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100, peak_size=64)
SPEED = ["images_per_s", "speedup", "speedup_low", "speedup_high", "measured_over_ideal"]


# Timed once per module, read by every test that checks a different part of the same table.
@pytest.fixture(scope="module")
def fp32_table(tiny_vit) -> tuple[pd.DataFrame, bench.Comparison]:
    """Table 5.1 of the tiny ViT at batch 2 on the CPU, and its comparison."""
    return common.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cpu")


@pytest.fixture(scope="module")
def bf16_table(tiny_vit) -> tuple[pd.DataFrame, bench.Comparison]:
    """The same with bf16 twins, timed whatever the CPU (conftest's ``bf16_kernels``, for the whole module)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITSTUDY_BF16", "1")
        return common.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, bf16=True)


def test_every_report_scale_has_a_budget_and_study_scales_are_refused():
    """Every scale the report runs notebook 01 at has a budget; the from-scratch study's scale has none."""
    assert set(max_speed_exit.BUDGETS) - {PAPER_SMOKE} == set(SCALES) - set(STUDY_SCALES)
    with pytest.raises(ValueError, match=r"scale='scratch' is not allowed: expected one of smoke, quick, full, paper$"):
        max_speed_exit.budget("scratch")


def test_budget_resolves_from_a_scale_its_name_or_the_environment(monkeypatch):
    """A Scale, its name and VITSTUDY_SCALE give the same budget."""
    monkeypatch.setenv("VITSTUDY_SCALE", "smoke")
    assert max_speed_exit.budget() == max_speed_exit.budget("smoke") == max_speed_exit.budget(SCALES["smoke"])


def test_a_scale_without_a_budget_is_refused_by_name():
    """A custom scale has no budget: the error names it and the scales that have one."""
    with pytest.raises(ValueError, match=r"scale='custom' is not allowed: expected one of smoke, quick, full, paper"):
        max_speed_exit.budget(Scale("custom", TrainConfig()))


def test_a_bad_budget_is_refused_at_construction():
    """Budgets validate like every other setting: the value and what is allowed."""
    with pytest.raises(ValueError, match=r"batch_cpu=0 is not allowed: expected an integer >= 1"):
        dataclasses.replace(max_speed_exit.budget("smoke"), batch_cpu=0)
    with pytest.raises(ValueError, match=r"exits=\(12,\) is not allowed"):
        dataclasses.replace(max_speed_exit.budget("smoke"), exits=(12,))


def test_table_5_1_has_intervals_a_verdict_and_the_a_a_row(fp32_table):
    """Table 5.1 on a tiny ViT: interval columns, a verdict per exit, the A/A control row, the protocol, a note."""
    table, comparison = fp32_table
    assert table["setting"].iloc[-1] == common.CONTROL_LABEL and pd.isna(table["exit_block"].iloc[-1])
    assert (table["speedup_low"] <= table["speedup"]).all() and (table["speedup"] <= table["speedup_high"]).all()
    assert table["verdict"].iloc[0] == bench.BASELINE_VERDICT
    control = table.iloc[-1]
    interval = control["speedup_low"], control["speedup_high"]
    assert control["verdict"] == bench.control_verdict(control["speedup"], *interval)
    assert table["note"].iloc[0] == bench.table_note(comparison) and (table["rounds"] == 2).all()
    assert {"device", "threads", "note"} <= set(table.columns) and not comparison.raw.empty


def test_forced_exit_verdicts_need_the_interval_inside_0_95_to_1_05(fp32_table):
    """A forced exit's verdict is bench's FLOP-bound verdict against 0.97-1.03 with its interval inside 0.95-1.05."""
    table, _ = fp32_table
    for row in table.iloc[1:4].itertuples():
        interval = (row.measured_over_ideal_low, row.measured_over_ideal_high)
        assert row.verdict == bench.flop_bound_verdict(
            row.measured_over_ideal, (0.97, 1.03), interval=interval, interval_within=(0.95, 1.05)
        )


def test_table_5_1_without_cuda_keeps_flop_ratios_and_notes_the_timing(tiny_vit, no_cuda):
    """Forced exits on an absent device: FLOP-ideal speed-ups are numbers, measured ones NaN with a note."""
    table, _ = common.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cuda")
    assert table["exit_block"].tolist()[:4] == [12, 3, 6, 9]
    assert table["ideal_speedup"].iloc[1] == pytest.approx(4.0, rel=0.02)
    assert table[SPEED].isna().all().all() and (table["verdict"] == "not measured").all()
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_paper_5_1_numbers_sit_beside_each_exit_block(fp32_table):
    """The report's Table 5.1 speed-up and images/s join our rows by exit block, in the saved column order."""
    ours, _ = fp32_table
    table = max_speed_exit.beside_paper_5_1(ours, load_reference("multiexit_5.1"))
    assert list(table.columns) == list(max_speed_exit.TABLE_5_1_COLUMNS)
    at = table.iloc[:4].set_index("exit_block")
    assert at.loc[3, "paper_speed_improvement"] == pytest.approx(3.83)
    assert at.loc[12, "paper_inference_speed_im_s"] == pytest.approx(447.10)
    assert table["speedup"].tolist() == ours["speedup"].tolist()


def test_speed_bars_put_the_report_beside_ours():
    """Table 5.1's bars: ours measured, ours FLOP-ideal and the report's, one group per exit block."""
    table = pd.DataFrame({"exit_block": [12, 3], "speedup": [1.0, 3.5], "ideal_speedup": [1.0, 3.9]})
    ax = max_speed_exit.speed_bars(table, load_reference("multiexit_5.1")).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["exit 3", "original"]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "report, measured (RTX A6000)"
    assert 3.83 in [round(p.get_height(), 2) for p in ax.patches]


def test_table_5_1_in_bf16_sets_each_row_beside_its_fp32_twin(bf16_table):
    """bf16=True: the plain model and every exit get a bf16 twin in the same rounds; the plain row's bf16 speed-up
    is over its fp32 self, each exit's bf16 measured ÷ ideal is over the bf16 plain model; the A/A row has none."""
    table, comparison = bf16_table
    assert {"plain (bf16)", "3 (bf16)", "6 (bf16)", "9 (bf16)"} <= set(comparison.raw["arm"])
    assert table["bf16_verdict"].iloc[0] == bench.BASELINE_VERDICT and pd.isna(table["bf16_verdict"].iloc[-1])
    assert (table["bf16_speedup_over_fp32"].iloc[:4] > 0).all()
    exit_3 = table.iloc[1]
    bf16_speedup = comparison.speedup("3 (bf16)", over="plain (bf16)")["speedup"]
    assert exit_3["bf16_measured_over_ideal"] == pytest.approx(bf16_speedup / exit_3["ideal_speedup"])


def test_table_5_1_rows_say_how_close_the_plain_model_runs_to_the_machine(bf16_table):
    """Every row: the plain model's forward GFLOP/s (its FLOPs per image x images/s) against the fp32 peak (the bf16
    twins beside them change neither)."""
    table, comparison = bf16_table
    plain = table.iloc[0]
    expected = plain["gflops_per_image"] * plain["images_per_s"]
    assert table["baseline_gflop_per_s"].to_numpy() == pytest.approx([expected] * len(table))
    assert plain["peak_gflop_per_s"] == comparison.environment["peak_fp32_gflop_per_s"] > 0
    assert (table["flops_counted"] == bench.FORWARD).all()


def test_findings_give_the_share_of_the_peak_and_point_to_the_bf16_measurement(fp32_table):
    """The closing names the plain model's share of the fp32 peak and sends bf16 to its hand-run table."""
    ours, _ = fp32_table
    text = max_speed_exit.findings(max_speed_exit.beside_paper_5_1(ours, load_reference("multiexit_5.1")))
    assert "of this machine's fp32 matmul peak" in text and "measure bf16" in text


def test_the_reports_table_5_1_carries_no_bf16_column():
    """bf16 is timed by `python -m vitstudy measure bf16`, not by the report: Table 5.1 has fp32 columns only."""
    assert not [c for c in max_speed_exit.TABLE_5_1_COLUMNS if "bf16" in c]
    assert "bf16" not in {f.name for f in dataclasses.fields(max_speed_exit.MaxSpeedBudget)}
