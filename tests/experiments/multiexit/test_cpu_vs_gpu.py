"""experiments.cpu_vs_gpu (notebook 03): Table 5.3 side by side per device, its figure."""

import math

import pandas as pd
import pytest

from vitstudy import bench
from vitstudy.experiments.multiexit import common, cpu_vs_gpu
from vitstudy.reference import load_reference

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100, peak_size=64)


def test_table_5_3_keeps_cpu_numbers_and_notes_the_missing_device(digits_study, no_cuda):
    """Table 5.3 has CPU speeds as numbers, NaN CUDA columns, a note naming the CUDA columns, raw CPU times."""
    table, raw = cpu_vs_gpu.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"])
    assert (table["cpu_speedup"] > 0).all() and table["cuda_speedup"].isna().all()
    assert pd.api.types.is_float_dtype(table["cpu_speedup"]) and pd.api.types.is_float_dtype(table["cuda_speedup"])
    assert table["note"].str.contains(f"cuda columns: {bench.NOT_MEASURED_NO_CUDA}", regex=False).all()
    assert table["setting"].tolist() == ["separate/1/sample", common.CONTROL_LABEL]
    assert set(raw["device"].str.split(":").str[0]) == {"cpu"}


def _merged_per_device(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 5.3 built the long way (the former per-device merge loop): the reference for the pivot."""
    keys, timed = list(cpu_vs_gpu.OFFLINE_COLUMNS), list(cpu_vs_gpu.TIMED_COLUMNS)
    merged, notes = None, []
    for device, part in parts.items():
        notes.append(part["note"].map(lambda note, d=device: f"{d} columns: {note}" if note else ""))
        part = part[[*keys, *timed]].rename(columns={c: f"{device}_{c}" for c in timed})
        merged = part if merged is None else merged.merge(part.drop(columns=keys[1:]), on="setting")
    merged["note"] = ["; ".join(n for n in row if n) for row in zip(*notes)]
    return merged


def test_table_5_3_pivot_equals_the_per_device_merge(digits_study, no_cuda, monkeypatch):
    """DataFrame.pivot gives exactly the table the per-device merge loop gave, on the same measurements."""
    runs = {
        d: common.table_5_2(digits_study, 0.9, 16, NO_TIMING, ["same", "separate"], [(1,)], device=d)
        for d in cpu_vs_gpu.DEVICES
    }
    monkeypatch.setattr(cpu_vs_gpu, "table_5_2", lambda *args: runs[args[-1]])
    table, _ = cpu_vs_gpu.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["same", "separate"], [(1,)])
    pd.testing.assert_frame_equal(table, _merged_per_device({d: part for d, (part, _) in runs.items()}))


def test_device_bars_name_a_device_that_was_not_measured():
    """CPU bars are drawn and in the legend; the unmeasured CUDA device is only named in the title."""
    table = pd.DataFrame(
        {
            "variant": ["same", "separate"],
            "exits": ["3", "3"],
            "policy": ["sample", "batch"],
            "cpu_speedup": [1.5, 0.9],
            "cuda_speedup": [math.nan, math.nan],
        }
    )
    ax = cpu_vs_gpu.device_speedup_bars(table).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpu"]
    assert f"cuda: {bench.NOT_MEASURED_NO_CUDA}" in ax.get_title()
    assert sorted(p.get_height() for p in ax.patches if not math.isnan(p.get_height())) == [0.9, 1.5]


def test_paper_cpu_numbers_sit_beside_ours_with_their_prefix():
    """Table 5.3's report rows join ours under ``paper_cpu_*`` columns."""
    paper = load_reference("multiexit_5.3")
    paper = paper[(paper["label_status"] != "ambiguous") & (paper["device"] == "CPU")]
    ours = pd.DataFrame({"variant": ["same"], "exits": ["3"]})
    table = common.beside_paper(ours, paper, prefix="paper_cpu_")
    assert {"paper_cpu_top1", "paper_cpu_speedup"} <= set(table.columns)


@pytest.mark.usefixtures("bf16_kernels")
def test_machine_table_sets_the_cpu_peak_beside_its_use_and_the_gpu_not_measured(digits_study, no_cuda):
    """Per device: fp32 and bf16 peaks, the plain model's GFLOP/s and share of the fp32 peak; CUDA: NaN and why."""
    table, _ = cpu_vs_gpu.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"])
    assert (table["cpu_baseline_gflop_per_s"] > 0).all() and table["cuda_baseline_gflop_per_s"].isna().all()
    machine = cpu_vs_gpu.machine_table(table, NO_TIMING).set_index("timed_on")
    cpu, cuda = machine.loc["cpu"], machine.loc["cuda"]
    assert cpu["peak_fp32_gflop_per_s"] == table["cpu_peak_gflop_per_s"].iloc[0] > 0 and cpu["note"] == ""
    assert cpu["peak_bf16_gflop_per_s"] > 0
    assert cpu["plain_model_fraction_of_fp32_peak"] == pytest.approx(
        cpu["plain_model_gflop_per_s"] / cpu["peak_fp32_gflop_per_s"]
    )
    assert math.isnan(cuda["peak_fp32_gflop_per_s"]) and cuda["note"] == bench.NOT_MEASURED_NO_CUDA
    assert f"On CUDA: {bench.NOT_MEASURED_NO_CUDA}" in cpu_vs_gpu.findings(table)


def test_table_5_3_reads_table_5_2_of_the_same_report_run(digits_study, no_cuda, monkeypatch, tmp_path):
    """Inside a report run, Table 5.3's CPU column is Table 5.2's measurement of the same arms: nothing is timed
    again, the speed-ups are Table 5.2's and the note says where they were timed. Other knobs: timed again."""
    monkeypatch.setenv(bench.SHARED_TIMINGS_ENV, str(tmp_path))
    variants = ["same", "finetune", "separate"]
    table52, _ = common.table_5_2(digits_study, 0.9, 16, NO_TIMING, variants, [(1,)])
    timed = []
    monkeypatch.setattr(bench, "compare_models", lambda *args, **kwargs: timed.append(args) or pytest.fail("timed"))
    table53, raw = cpu_vs_gpu.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["same", "separate"], [(1,)], devices=["cpu"])
    assert not timed
    ours = table53.set_index("setting")["cpu_speedup"]
    assert ours.to_dict() == table52.set_index("setting").loc[ours.index, "speedup"].to_dict()
    assert table53["note"].str.contains("timed once earlier in this report run").all()
    settings = table53[table53["variant"].notna()]
    assert set(raw["arm"]) == {"plain", "plain (A/A copy)", *settings["timed_as"]}
    # a later notebook whose arms differ (another threshold) times them itself
    with pytest.raises(pytest.fail.Exception, match="timed"):
        common.table_5_2(digits_study, 0.5, 16, NO_TIMING, ["separate"], [(1,)])
