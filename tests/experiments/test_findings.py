"""Every notebook's "What this run shows": findings(...) of each experiment module, on small hand-made tables with
the modules' real column names (vitstudy.experiments.*.findings, vitstudy.experiments.sentences)."""

from __future__ import annotations

import math

import pandas as pd

from vitstudy import bench
from vitstudy.experiments import baseline, sentences
from vitstudy.experiments.multiexit import common, cpu_vs_gpu, edge_latency, max_speed_exit, real_data_exit
from vitstudy.experiments.skipvit import from_scratch, layers_ratios, memory_and_size, warmup
from vitstudy.experiments.skipvit.common import CONTROL
from vitstudy.skipvit import HEADLINE

NAN = math.nan


def speed(value: float, low: float, high: float, verdict: str, **extra: object) -> dict[str, object]:
    """A speed row's columns (bench.speed_row's names)."""
    return {"speedup": value, "speedup_low": low, "speedup_high": high, "verdict": verdict, **extra}


def test_measured_writes_the_value_with_its_interval():
    """sentences.measured: the value and its 95% interval through bench.format_interval."""
    assert sentences.measured(speed(1.5, 1.4, 1.6, "x")) == bench.format_interval(1.5, 1.4, 1.6, unit="×")


def test_measured_nan_reads_the_rows_not_measured_note():
    """sentences.measured: a NaN row whose note says why reads that note (no CUDA device)."""
    row = speed(NAN, NAN, NAN, "not measured", note=bench.NOT_MEASURED_NO_CUDA)
    assert sentences.measured(row) == bench.NOT_MEASURED_NO_CUDA


def test_baseline_findings_give_top1_and_the_control():
    """baseline.findings: the test top-1 and the A/A control's interval and verdict."""
    summary = pd.DataFrame([{"test_top1": 87.25}])
    table = pd.DataFrame(
        [
            {"arm": baseline.BASELINE, "images_per_s": 1000.0, "device": "cpu: x", **speed(1.0, 1.0, 1.0, "baseline")},
            {
                "arm": "baseline (A/A copy)",
                "images_per_s": 990.0,
                "device": "cpu: x",
                **speed(0.99, 0.98, 1.01, "A/A control: within 1.00 ± 3%"),
            },
        ]
    )
    text = baseline.findings(summary, table)
    assert "87.25 %" in text and "reads 0.99× (0.98–1.01), inside 1.00 ± 3%" in text
    wide = baseline.findings(summary, table.assign(speedup_low=[1.0, 0.90]))  # a point inside, an interval out
    assert "is not trustworthy (A/A 0.99× (0.90–1.01)" in wide and "inside 1.00" not in wide


def max_speed_table(speedup: float, control: tuple[float, float, float] = (1.0, 0.99, 1.01)) -> pd.DataFrame:
    """Table 5.1 as beside_paper_5_1 saves it: original, exit 3, A/A control."""
    return pd.DataFrame(
        [
            {
                "setting": "original (all blocks)",
                "exit_block": 12,
                "ideal_speedup": 1.0,
                "measured_over_ideal": 1.0,
                "paper_speed_improvement": NAN,
                **speed(1.0, 1.0, 1.0, "baseline"),
            },
            {
                "setting": "forced exit after block 3",
                "exit_block": 3,
                "ideal_speedup": 3.9,
                "measured_over_ideal": speedup / 3.9,
                "measured_over_ideal_low": 0.9,
                "measured_over_ideal_high": 1.0,
                "paper_speed_improvement": 3.83,
                **speed(speedup, 3.5, 3.8, "within target (0.97–1.03)"),
            },
            {
                "setting": common.CONTROL_LABEL,
                "exit_block": None,
                "ideal_speedup": 1.0,
                **speed(*control, bench.control_verdict(control[0])),
            },
        ]
    ).astype({"exit_block": "Int64"})


def test_max_speed_findings_set_the_earliest_exit_beside_the_report():
    """max_speed_exit.findings: the report's 3.83× beside ours with its interval, the ideal and the verdict."""
    text = max_speed_exit.findings(max_speed_table(3.7))
    assert "3.83×" in text and "3.70× (3.50–3.80) of an ideal 3.90× = 0.95" in text and "within target" in text
    assert len(text.split(". ")) <= 6 and "bf16" in text


def test_max_speed_findings_under_a_failed_control_meet_no_target():
    """max_speed_exit.findings: an A/A control whose interval leaves 1.00 ± 3% turns the verdict into "not
    trustworthy (A/A …)", whatever the row's own verdict says."""
    text = max_speed_exit.findings(max_speed_table(3.7, control=(1.04, 1.01, 1.06)))
    assert "not trustworthy (A/A 1.04× (1.01–1.06)" in text and "within target" not in text


def test_max_speed_findings_read_a_nan_run_as_not_measured():
    """max_speed_exit.findings: a NaN speed-up reads "not measured" and does not raise."""
    assert "not measured" in max_speed_exit.findings(max_speed_table(NAN))


def test_real_data_exit_findings_give_the_report_batch_rule_and_per_sample():
    """real_data_exit.findings: the report's range, our batch-rule best and the per-sample row's verdict."""
    table52 = pd.DataFrame(
        [
            {
                "setting": "same/3/batch",
                "policy": "batch",
                "paper_speedup": 0.98,
                "batch_exited_pct": 0.0,
                **speed(1.01, 0.99, 1.02, "below target"),
            },
            {"setting": "same/3/sample", "policy": "sample", "paper_speedup": 1.02, **speed(1.8, 1.7, 1.9, "x")},
        ]
    )
    performance = pd.DataFrame(
        [
            {
                "measurement": "per-sample exit: separate, exits 3,6,9, threshold 0.9",
                "variant": "separate",
                "test_top1_loss": 0.3,
                "test_top1_loss_low": 0.1,
                "test_top1_loss_high": 0.45,
                "measured_over_ideal": 0.97,
                "ideal_speedup": 2.7,
                "test_ideal_speedup": 2.7,
                "speed_target": "met",
                **speed(2.6, 2.5, 2.7, "within target (0.9–1.03)"),
            },
            {"measurement": common.CONTROL_LABEL, **speed(1.0, 0.99, 1.01, "A/A control: within 1.00 ± 3%")},
        ]
    )
    text = real_data_exit.findings(table52, performance)
    assert "its speed-ups: 0.98×–1.02×" in text and "1.01× (0.99–1.02)" in text
    assert "2.60× (2.50–2.70) of an ideal 2.70× = 0.96" in text and "top-1 loses 0.30 points (0.10–0.45)" in text
    assert "is met by: separate, exits 3,6,9, threshold 0.9" in text and len(text.split(". ")) <= 6
    failed = performance.assign(speedup_high=[2.7, 1.05])  # the control's interval reaches outside 1.00 ± 3%
    text = real_data_exit.findings(table52, failed)
    assert "met by" not in text and "not trustworthy (A/A 1.00× (0.99–1.05)" in text


def cpu_vs_gpu_table(control: tuple[float, float, float], note: str = "") -> pd.DataFrame:
    """Table 5.3 as table_5_3 saves it: one exit setting and the A/A control, timed on the CPU only."""
    cuda = {f"cuda_{k}": NAN for k in ("speedup", "speedup_low", "speedup_high")}
    return pd.DataFrame(
        [
            {
                "setting": "same/3/sample",
                "variant": "same",
                "ideal_speedup": 1.4,
                "paper_cpu_speedup": 1.14,
                **{f"cpu_{k}": v for k, v in speed(1.3, 1.2, 1.4, "below target (0.9–1.03)").items()},
                **cuda,
                "cuda_verdict": "not measured",
                "note": note,
            },
            {
                "setting": common.CONTROL_LABEL,
                "variant": None,
                "ideal_speedup": 1.0,
                **{f"cpu_{k}": v for k, v in speed(*control, bench.control_verdict(control[0])).items()},
                **cuda,
                "cuda_verdict": "not measured",
                "note": note,
            },
        ]
    )


def test_cpu_vs_gpu_findings_read_an_absent_cuda_as_not_measured():
    """cpu_vs_gpu.findings: our best CPU row against its ideal and its verdict; no CUDA reads "not measured"; the
    CPU column said to be its own timing unless the note says it was read from notebook 02."""
    text = cpu_vs_gpu.findings(cpu_vs_gpu_table((1.0, 0.99, 1.01)))
    assert "1.14×" in text and "1.30× (1.20–1.40) of an ideal 1.40× = 0.93: below target (0.9–1.03)" in text
    assert bench.NOT_MEASURED_NO_CUDA in text and "a timing of its own" in text
    shared = cpu_vs_gpu.findings(cpu_vs_gpu_table((1.0, 0.99, 1.01), "timed once earlier in this report run (02)"))
    assert "notebook 02's Table 5.2 measurement read again" in shared


def test_cpu_vs_gpu_findings_under_a_failed_control_meet_no_target():
    text = cpu_vs_gpu.findings(cpu_vs_gpu_table((0.96, 0.79, 1.03)))
    assert "not trustworthy (A/A 0.96× (0.79–1.03)" in text and "below target" not in text


def test_layers_ratios_findings_set_the_headline_beside_the_paper():
    """layers_ratios.findings: the paper's gain and top-1 difference, our ViT-S speed-up with interval and verdict."""
    table = pd.DataFrame(
        [
            {
                "row": HEADLINE,
                "setting": "6 / 55% / skip 11",
                "paper_gain_pct": 13.2,
                "paper_top1_diff": -0.01,
                "vit_small_speedup": 1.1,
                "vit_small_speedup_low": 1.05,
                "vit_small_speedup_high": 1.15,
                "vit_small_ideal_speedup": 1.25,
                "vit_small_verdict": "below target (0.9–1.03)",
                "small_speedup": NAN,
                "small_verdict": "not measured",
                "top1_dropping_on_diff": -0.4,
            },
        ]
    )
    text = layers_ratios.findings(table)
    assert "13.2 % gain (1.13×)" in text and "(the paper's row loses 0.01 points)" in text
    assert "1.10× (1.05–1.15) of an ideal 1.25× = 0.88 (below target (0.9–1.03))" in text
    assert "loses 0.40 points against our baseline" in text and "not measured" in text
    control = {"row": CONTROL, "setting": "baseline (A/A control)", "vit_small_verdict": "A/A control: outside"}
    failed = pd.concat([table, pd.DataFrame([{**control, "vit_small_speedup": 1.05, "vit_small_speedup_low": 1.02}])])
    text = layers_ratios.findings(failed.assign(vit_small_speedup_high=[1.15, 1.08]))
    assert "(not trustworthy (A/A 1.05× (1.02–1.08)" in text and "below target" not in text


def test_warmup_findings_compare_the_gain_with_the_papers():
    """warmup.findings: the paper's and our top-1 gain of the warm-up, computed from Table 3."""
    table = pd.DataFrame(
        {
            "warmup": ["no", "yes"],
            "warmup_epochs": [0, 1],
            "epochs": 7,
            "seeds": 1,
            "top1_dropping_on": [60.0, 61.5],
            "top1_dropping_on_std": NAN,
            "paper_epochs": 100,
            "paper_warmup_epochs": [0, 15],
            "paper_top1": [67.18, 69.73],
        }
    )
    text = warmup.findings(table)
    assert "(15 of 100 epochs) gains 2.55 points" in text and "(1 of 7 epochs) gains 1.50 points" in text
    assert "the paper's direction" in text and "1 seed per row" in text
    worse = warmup.findings(table.assign(top1_dropping_on=[60.0, 59.0]))
    assert "loses 1.00 points" in worse and "not the paper's direction" in worse


def test_from_scratch_findings_give_each_claims_verdict():
    """from_scratch.findings: per claim the paper's difference, ours with its interval, the verdict."""
    verdicts = pd.DataFrame(
        [
            {
                "claim": "warm-up helps",
                "paper_diff": 2.55,
                "diff": 1.0,
                "diff_low": 0.2,
                "diff_high": 1.8,
                "resolvable": 0.8,
                "pairs": 3,
                "verdict": "reproduced",
            },
            {
                "claim": "ours: skip beats dropping",
                "paper_diff": NAN,
                "diff": 0.5,
                "diff_low": NAN,
                "diff_high": NAN,
                "resolvable": NAN,
                "pairs": 1,
                "verdict": "cannot tell (fewer than 2 seeds)",
            },
        ]
    )
    text = from_scratch.findings(verdicts)
    assert "On Fashion-MNIST (items on black), with 3 seeds per row" in text
    assert "reproduces 1 and contradicts 0 of 2" in text and "Reproduced: warm-up helps." in text
    assert "Not resolved: ours: skip beats dropping (fewer than 2 seeds)." in text and "Interim" not in text
    two = pd.concat([verdicts, verdicts.assign(dataset="fashion_mnist_cluttered", seeds_to_resolve=[NAN, 9.0])])
    text = from_scratch.findings(two.assign(dataset=two["dataset"].fillna("fashion_mnist")), 10, 54)
    assert text.startswith("Interim: 10 of 54 runs") and "cluttered Fashion-MNIST" in text
    assert "ours: skip beats dropping (about 9 seeds would tell it)" in text


def test_memory_and_size_findings_read_no_cuda_peak_as_not_measured():
    """memory_and_size.findings: the headline's saving and ideal; a NaN CUDA peak reads its note."""
    memory = pd.DataFrame(
        [
            {
                "model": memory_and_size.MODELS["ViT-S/16"],
                "row": HEADLINE,
                "setting": "6 / 55% / skip 11",
                "memory_saving_pct": 30.0,
                "saved_mib_per_image_off": 100.0,
                "saved_mib_per_image_on": 70.0,
                "ideal_speedup": 1.25,
                "cuda_peak_mib_per_image_on": NAN,
                "note": bench.NOT_MEASURED_NO_CUDA,
            },
        ]
    )
    sizes = pd.DataFrame(
        [
            {
                "model": "ViT-S/16",
                "setting": "a",
                "ideal_speedup": 1.25,
                "memory_saving_pct": 30.0,
                **speed(1.1, 1.0, 1.2, "below target"),
            },
            {
                "model": "ViT-L/16",
                "setting": "b",
                "ideal_speedup": 1.3,
                "memory_saving_pct": 31.0,
                **speed(NAN, NAN, NAN, "not measured"),
            },
        ]
    )
    text = memory_and_size.findings(memory, sizes)
    assert "30.0 % less activation memory" in text and bench.NOT_MEASURED_NO_CUDA in text
    assert "ViT-S/16 1.10× (1.00–1.20)" in text and "grows" not in text
    assert "ViT-L/16 takes another setting (b)" in text and "no trend in size follows" in text
    same = pd.concat([sizes.iloc[:1], sizes.iloc[:1].assign(model="ViT-B/16", ideal_speedup=1.3)])
    assert "a gain that grows with the model" in memory_and_size.findings(memory, same)
    assert "the same gain within 0.01×" in memory_and_size.findings(memory, same.assign(ideal_speedup=1.25))


def edge_tables(control: tuple[float, float, float]) -> tuple[pd.DataFrame, ...]:
    """Notebook 10's batch-1, sweep, ViT-B/16 and composition tables, one row each plus their A/A controls."""
    aa = {"arm": common.CONTROL_LABEL, **speed(*control, bench.control_verdict(control[0]))}
    latency = pd.DataFrame(
        [
            {
                "arm": edge_latency.EXIT_ARM,
                "setting": "finetune, exits 3,6,9, threshold 0.75",
                "images": 200,
                "exited_pct": 77.2,
                "ideal_speedup": 2.0,
                **speed(1.7, 1.6, 1.8, "below target (0.9–1.03)"),
            },
            {
                "arm": edge_latency.IDLE_ARM,
                "overhead_pct": 9.9,
                "overhead_pct_low": 9.2,
                "overhead_pct_high": 10.6,
                **speed(0.91, 0.9, 0.92, "x"),
            },
            aa,
        ]
    )
    sweep = pd.DataFrame(
        [
            {"arm": edge_latency.EXIT_ARM, "batch_size": 1, "ideal_speedup": 1.0, **speed(0.91, 0.9, 0.92, "x")},
            {"arm": edge_latency.EXIT_ARM, "batch_size": 64, "ideal_speedup": 2.0, **speed(1.8, 1.7, 1.9, "x")},
            {**aa, "batch_size": 1},
            {**aa, "batch_size": 64},
        ]
    )
    vit_b = pd.DataFrame(
        [
            {
                "setting": "forced exit after block 3",
                "exit_block": 3.0,
                "latency_ms": 46.9,
                "ideal_speedup": 3.92,
                **speed(3.93, 3.86, 4.12, "within target (0.97–1.03)"),
            },
            {"setting": common.CONTROL_LABEL, **speed(*control, bench.control_verdict(control[0]))},
        ]
    )
    both = {"arm": edge_latency.BOTH_ARM, "setting": "a + b", "product_of_ideals": 2.0, **speed(1.8, 1.7, 1.9, "x")}
    composition = pd.DataFrame([{**both, "top1_loss": -0.39, "top1_loss_low": -2.73, "top1_loss_high": 1.95}, aa])
    return latency, sweep, vit_b, composition


def test_edge_latency_findings_put_signs_in_words():
    """edge_latency.findings: costs and gains as words (never "-0.763 ms more"), ViT-B/16's block as an integer, a
    verdict where the controls pass."""
    text = edge_latency.findings(*edge_tables((1.0, 0.99, 1.01)), {"added_ms": -0.763})
    assert "costs 9.9 % (9.2–10.6) per image" in text and "0.763 ms less per call" in text
    assert "1.70× (1.60–1.80) of an ideal 2.00× = 0.85 on the mean: below target (0.9–1.03)" in text
    assert "from 0.91× at batch 1 to 1.80× at batch 64" in text and "forced out after block 3:" in text
    assert "within target (0.97–1.03)" in text and "top-1 on the timed images gains 0.39 points (-1.95–2.73)" in text


def test_edge_latency_findings_under_failed_controls_meet_no_target():
    text = edge_latency.findings(*edge_tables((1.04, 1.01, 1.06)), {})
    assert "within target" not in text and "below target" not in text
    assert text.count("not trustworthy") == 4 and "not trustworthy at batch 1, batch 64" in text
