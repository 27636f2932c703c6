"""RESULTS.md: the answers first, then every table of both documents beside ours, generated from the committed tables.

The file opens with "What the study found": one line per claim of both documents (the document's number, ours with
its 95 % interval, the verdict), the vocabulary of the verdicts, and one figure (top-1 against measured speed-up of
every SkipViT row and every exit operating point, written beside the tables as ``results_findings.png`` / ``.svg``).
Then one section per compared table (:data:`SECTIONS`), the reproductions in the documents' order, then our own
questions: what was run (data set, model, image size), the run (notebook, scale, date, machine: CPU or GPU model,
CPU capability, bf16 kernels, "not recorded" where the run did not record it), one metric per column, and every
caveat of the table's notes below its numbers.

Every verdict is derived here from the numeric columns through :mod:`vitstudy.verdicts` (speed-up, its interval and
its FLOP ideal; the A/A control's interval; a top-1 difference and its interval), never read from a stored verdict
string, so RESULTS.md judges the committed tables and a re-run's alike. No number is typed here.

Reads pandas, JSON and matplotlib, never torch, so ``python -m vitstudy results`` answers in seconds;
``--check`` tells whether the committed file is current; the report rewrites it after a run into ``figures/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..files import atomic_write_text, project_root
from ..formatting import NOT_MEASURED, format_interval
from ..verdicts import (
    BASELINE_VERDICT,
    FLOP_IDEAL_TARGET,
    IDLE_TARGET,
    NO_OVERHEAD_TARGET,
    NOT_TRUSTWORTHY,
    RESOLVED_BAND,
    accuracy_verdict,
    control_passes,
    control_rows,
    control_trust,
    speed_verdict,
    table_trust,
)
from .outputs import write_figure

__all__ = [
    "FINDINGS_FIGURE",
    "SECTIONS",
    "Measure",
    "NoTables",
    "Section",
    "Speed",
    "findings",
    "findings_figure",
    "is_current",
    "render",
    "results_path",
    "write_results",
]

NOT_IN_PAPER = "—"
NOT_RECORDED = "not recorded"
FINDINGS_FIGURE = "results_findings"  # written into the figures folder beside tables/, as .png and .svg
Target = tuple[tuple[float, float], tuple[float, float] | None]  # (target, band the interval must lie inside)


class NoTables(ValueError):
    """The figures folder holds no committed tables: nothing to generate RESULTS.md from."""


@dataclass(frozen=True)
class Measure:
    """One column: ``column`` (with ``low``/``high``, its 95% interval) under the header ``label``."""

    label: str
    column: str
    low: str | None = None
    high: str | None = None
    unit: str = ""
    digits: int = 2


def _flop_ideal(_: pd.Series) -> Target:
    return FLOP_IDEAL_TARGET, None


def _by_policy(row: pd.Series) -> Target:
    """The report's batch rule is machinery that (almost) never fires: no excuse to miss its ideal either way."""
    return (NO_OVERHEAD_TARGET, None) if row.get("policy") == "batch" else (FLOP_IDEAL_TARGET, None)


def _forced_exit(_: pd.Series) -> Target:
    """A forced exit runs only the blocks the FLOP count counts: no overhead, and a resolved interval."""
    return NO_OVERHEAD_TARGET, RESOLVED_BAND


def _by_measurement(row: pd.Series) -> Target:
    name = str(row.get("measurement", ""))
    if name.startswith("forced exit"):
        return _forced_exit(row)
    return (IDLE_TARGET, None) if name.startswith("exit machinery") else (FLOP_IDEAL_TARGET, None)


def _by_arm(row: pd.Series) -> Target:
    return (IDLE_TARGET, None) if str(row.get("arm", "")).startswith("exit machinery") else (FLOP_IDEAL_TARGET, None)


@dataclass(frozen=True)
class Speed:
    """A measured speed-up judged on measured ÷ FLOP ideal: columns ``{prefix}speedup`` (``_low``, ``_high``) over
    ``ideal``, against ``target(row)``. The A/A control is the table's control row (:func:`control_rows`, its
    ``{prefix}speedup`` columns) or, with ``control``, the row's own ``{control}speedup`` columns."""

    label: str = "speed-up"
    prefix: str = ""
    ideal: str = "ideal_speedup"
    target: Callable[[pd.Series], Target] = _flop_ideal
    control: str | None = None


@dataclass(frozen=True)
class Section:
    """One compared table: ``table`` (a CSV under figures/), rows named by ``label`` columns; what was run
    (``setup``: data set, model, image size); the document's numbers, ours, and the speed-ups judged."""

    title: str
    compares: str
    table: str | None
    setup: str = ""
    label: tuple[str, ...] = ("setting",)
    paper: tuple[Measure, ...] = ()
    ours: tuple[Measure, ...] = ()
    speeds: tuple[Speed, ...] = ()
    groups: tuple[str, ...] = ()  # columns that split the table into separately timed comparisons
    reference: str | None = None  # the reference table id (vitstudy.reference.TABLES) this section answers
    only_with: str | None = None  # show only the rows where this column holds a value (and the A/A control)
    ours_first: bool = False  # our own question: no document column


TOP1 = "top-1 (%)"
QUOTIENT = "measured ÷ ideal"  # what every speed verdict reads
SMALL_MODEL = "the small model (depth-12 ViT, 28×28 px)"
FASHION = "Fashion-MNIST test split"
SECTIONS: tuple[Section, ...] = (
    Section(
        "Multi-exit report, Table 5.1: forced exit",
        "Speed-up of an exit after block 3, 6 or 9 over the original model on random input: the report's GPU "
        "against our device.",
        "tables/01_max_speed_exit.csv",
        setup="random input; timm's `vit_base_patch16_224` (ViT-B/16, 224×224 px), random weights; batch 8",
        paper=(Measure("paper speed-up", "paper_speed_improvement", unit="×"),),
        speeds=(Speed(target=_forced_exit),),
        reference="multiexit_5.1",
    ),
    Section(
        "Multi-exit report, Table 5.2: exits on real data",
        "Top-1 and speed-up of each exit classifier and exit policy on the test set: the report's ImageNet and GPU "
        "against our data and device (the top-1 columns are not comparable across data sets). The report's variants; "
        "our `separate` and `joint`: notebook 02.",
        "tables/02_table_5_2.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; batch 256",
        paper=(Measure("paper top-1 (%)", "paper_top1"), Measure("paper speed-up", "paper_speedup", unit="×")),
        ours=(Measure(TOP1, "top1"),),
        speeds=(Speed(target=_by_policy),),
        reference="multiexit_5.2",
        only_with="paper_top1",
    ),
    Section(
        "Multi-exit report, Table 5.3: CPU against GPU",
        "Table 5.2's settings timed on the CPU and on the GPU; the report's CPU rows beside ours (our `separate`: "
        "notebook 03).",
        "tables/03_table_5_3.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; batch 256",
        paper=(
            Measure("paper top-1 (%)", "paper_cpu_top1"),
            Measure("paper CPU speed-up", "paper_cpu_speedup", unit="×"),
        ),
        ours=(Measure(TOP1, "top1"),),
        speeds=(Speed("CPU speed-up", "cpu_", target=_by_policy), Speed("GPU speed-up", "cuda_", target=_by_policy)),
        reference="multiexit_5.3",
        only_with="paper_cpu_top1",
    ),
    Section(
        "SkipViT paper, Table 1: token dropping and the skip",
        "Training-step speed-up of each setting (the paper: throughput gain on its ViT-small) and top-1 (the paper: "
        "100 ImageNet epochs; ours: a short Fashion-MNIST run, one seed).",
        "tables/04_table1.csv",
        setup="speed: training steps on random data, timm's `vit_small_patch16_224` (ViT-S/16, 224×224 px, batch "
        f"16) and {SMALL_MODEL} (batch 64); top-1: the small model on the {FASHION}",
        paper=(
            Measure("paper gain (%)", "paper_gain_pct"),
            Measure("paper top-1 (%)", "paper_top1"),
        ),
        ours=(Measure(TOP1, "top1_dropping_on"),),
        speeds=(
            Speed("ViT-S/16 speed-up", "vit_small_", "vit_small_ideal_speedup"),
            Speed("small model speed-up", "small_", "small_ideal_speedup"),
        ),
        reference="skipvit_1",
    ),
    Section(
        "SkipViT paper, Table 1: re-insert at layer 10 or 11",
        "How much faster (%) and how much more accurate (points) re-inserting at layer 11 is than at layer 10.",
        "tables/04_skip10_vs_skip11.csv",
        setup="as Table 1 above",
        label=("drop layers / ratios",),
        paper=(
            Measure("paper faster (%)", "paper: 11 vs 10 (%)"),
            Measure("paper top-1 (points)", "paper top-1: 11 minus 10"),
        ),
        ours=(
            Measure("ViT-S/16 faster (%)", "ours ViT-S/16: 11 vs 10 (%)"),
            Measure("small model faster (%)", "ours small model: 11 vs 10 (%)"),
            Measure("FLOP-ideal faster (%)", "FLOP-ideal ViT-S/16: 11 vs 10 (%)"),
            Measure("top-1 (points)", "ours top-1: 11 minus 10"),
        ),
    ),
    Section(
        "SkipViT paper, Table 2: training parameters",
        "The paper's training settings, not a result: not compared.",
        None,
        reference="skipvit_2",
    ),
    Section(
        "SkipViT paper, Table 3: warm-up before dropping",
        "Top-1 with and without epochs of warm-up (no dropping) first: the paper's schedule against our shorter "
        "one (one seed; the seeded answer is the from-scratch claims below).",
        "tables/05_table3.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; 4,7 / 30%,30% / skip 10",
        label=("warmup",),
        paper=(
            Measure("paper warm-up epochs", "paper_warmup_epochs", digits=0),
            Measure("paper epochs", "paper_epochs", digits=0),
            Measure("paper top-1 (%)", "paper_top1"),
        ),
        ours=(
            Measure("warm-up epochs", "warmup_epochs", digits=0),
            Measure("epochs", "epochs", digits=0),
            Measure(TOP1, "top1_dropping_on"),
        ),
        reference="skipvit_3",
    ),
    Section(
        "SkipViT from scratch: the paper's claims",
        "Each claim per data set as a paired top-1 difference (points) over seeds, against the paper's difference; "
        "the verdict from the interval (the vocabulary above).",
        "scratch/tables/08_verdicts.csv",
        setup=f"{SMALL_MODEL} trained from scratch; Fashion-MNIST (28×28 px) and cluttered Fashion-MNIST (56×56 px, "
        "49 tokens)",
        label=("dataset", "claim"),
        paper=(Measure("paper (points)", "paper_diff"),),
        ours=(Measure("ours (points)", "diff", "diff_low", "diff_high"), Measure("seeds", "pairs", digits=0)),
    ),
    Section(
        "Our targets for the exits",
        "The report states none: measured speed-up against the FLOP ideal, and the per-sample exit's top-1 loss.",
        "tables/02_performance.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; batch 256",
        label=("measurement",),
        ours=(Measure("top-1 loss (points)", "test_top1_loss", "test_top1_loss_low", "test_top1_loss_high"),),
        speeds=(Speed(target=_by_measurement),),
        ours_first=True,
    ),
    Section(
        "Memory",
        "Activation memory saved per image by each setting (saved tensors; the GPU peak where a GPU ran), beside "
        "its FLOP-ideal speed-up.",
        "tables/09_memory.csv",
        setup="one training step on random data; the `model` column; batch 2",
        label=("model", "setting"),
        ours=(
            Measure("saved (%)", "memory_saving_pct"),
            Measure("GPU peak (MiB)", "cuda_peak_mib_per_image_on"),
            Measure("FLOP ideal", "ideal_speedup", unit="×"),
        ),
        ours_first=True,
    ),
    Section(
        "Model size",
        "The headline setting's measured training speed-up and memory saving on ViTs of growing size.",
        "tables/09_model_size.csv",
        setup="training steps on random data, 224×224 px; the `model` column",
        label=("model", "setting"),
        ours=(Measure("memory saved (%)", "memory_saving_pct"),),
        speeds=(Speed(),),
        ours_first=True,
    ),
    Section(
        "Multi-exit at batch 1: the report's edge premise",
        "Each test image alone: latency per image, and the per-sample exit's speed-up on the mean latency (95 % "
        "interval paired by image) against its FLOP ideal; the exits' own cost when none fires; the A/A control.",
        "tables/10_batch1_latency.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; batch 1",
        label=("arm", "setting"),
        ours=(Measure("mean (ms)", "mean_ms"), Measure("p99 (ms)", "p99_ms")),
        speeds=(Speed(target=_by_arm),),
        ours_first=True,
    ),
    Section(
        "Multi-exit: one operating point across batch sizes",
        "The per-sample exit over the plain model on one batch of test images, batch 1 to 256, against the FLOP "
        "ideal of that batch's exits; each batch size is its own comparison with its own A/A control.",
        "tables/10_batch_sweep.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; the `batch_size` column",
        label=("batch_size", "arm"),
        speeds=(Speed(),),
        groups=("batch_size",),
        ours_first=True,
    ),
    Section(
        "ViT-B/16 forced exits at batch 1",
        "Table 5.1's forced exits with one image per call.",
        "tables/10_vit_b_batch1.csv",
        setup="random input; `vit_base_patch16_224` (224×224 px); batch 1",
        speeds=(Speed(target=_forced_exit),),
        ours_first=True,
    ),
    Section(
        "Multi-exit and SkipViT at once",
        "The per-sample exit on a model that also drops tokens at inference, against the product of the two FLOP "
        "ideals (`ideal_speedup` of the `both` row).",
        "tables/10_composition.csv",
        setup=f"{FASHION}; {SMALL_MODEL}; batch 256",
        label=("arm", "setting"),
        ours=(Measure("top-1 loss (points)", "top1_loss", "top1_loss_low", "top1_loss_high"),),
        speeds=(Speed(),),
        ours_first=True,
    ),
    Section(
        "Multi-exit beside the field",
        "Published speed-ups of LGViT, A-ViT and CF-ViT (each measures something else: the `measures` column of "
        "the table) beside ours; never one column for both.",
        "tables/10_beside_the_field.csv",
        setup="theirs: their papers' models and data (the table's columns); ours: as at batch 1 above",
        label=("block", "method"),
        paper=(
            Measure("published speed-up", "published_speedup", unit="×"),
            Measure("published top-1 change (points)", "published_top1_change_points"),
        ),
        ours=(
            Measure("our speed-up", "ours_speedup", "ours_speedup_low", "ours_speedup_high", "×"),
            Measure(
                "our top-1 change (points)", "ours_top1_change_points", "ours_top1_change_low", "ours_top1_change_high"
            ),
        ),
        ours_first=True,
    ),
    *(
        Section(
            f"Token rules at equal cost, off the shelf: {name}",
            "Every token rule (SkipViT's skip, EViT's fused token, plain dropping, ToMe, PatchDropout) removing "
            "tokens from the same trained baseline at five FLOP-ideal levels, none of them trained with its tokens "
            "gone: top-1 and the measured inference speed-up, all arms timed in one comparison with the A/A control "
            "(notebook 11).",
            f"tables/11_token_rules_{dataset}.csv",
            setup=f"{name} test split; {baseline}; one seed",
            label=("rule", "parameter"),
            ours=(Measure(TOP1, "top1"), Measure("top-1 change (points)", "top1_change")),
            speeds=(Speed("inference speed-up"),),
            ours_first=True,
        )
        for dataset, name, baseline in (
            ("fashion_mnist", "Fashion-MNIST", f"notebook 00's baseline, {SMALL_MODEL}"),
            (
                "fashion_mnist_cluttered",
                "cluttered Fashion-MNIST",
                "a baseline trained once on the cluttered canvases (depth-12 ViT, patch 8, 56×56 px)",
            ),
        )
    ),
    Section(
        "Token rules at equal cost, fine-tuned: top-1",
        "Every token rule at three FLOP-ideal levels (the same for every rule, within 2 %), fine-tuned from the "
        "trained baseline with its tokens gone, six seeds per arm: top-1 with the rule on (as trained) and off, and "
        "the change against the baseline fine-tuned the same way with its 95 % paired interval over seeds "
        '(notebook 11 at scale scratch). The verdict per level is in "What the study found"; the speed-ups below.',
        "scratch/tables/11_trained_summary.csv",
        setup="Fashion-MNIST and its cluttered version (the `dataset` column); the runs' recipe in notebook 11",
        label=("dataset", "arm", "parameter"),
        ours=(
            Measure("seeds", "seeds", digits=0),
            Measure("top-1, rule on (%)", "top1_rule_on"),
            Measure("top-1, rule off (%)", "top1_rule_off"),
            Measure("top-1 change, rule on (points)", "diff", "diff_low", "diff_high"),
        ),
        ours_first=True,
    ),
    *(
        Section(
            f"Token rules at equal cost, fine-tuned: training-step speed on {name}",
            "The training step of every arm of the fine-tuned curve (the baseline, each rule at each level) timed in "
            "one comparison with the A/A control, beside its FLOP ideal (notebook 11 at scale scratch).",
            f"scratch/tables/11_trained_speed_{dataset}.csv",
            setup=f"{name}; the fine-tuning recipe and test images in the table's note",
            label=("arm", "parameter"),
            speeds=(Speed("training-step speed-up"),),
            ours_first=True,
        )
        for dataset, name in (
            ("fashion_mnist", "Fashion-MNIST"),
            ("fashion_mnist_cluttered", "cluttered Fashion-MNIST"),
        )
    ),
    Section(
        "bf16 on the CPU",
        "Table 5.1's forced exits (ViT-B/16 inference) and Table 1's SkipViT rows (ViT-S/16 training steps) in bf16 "
        "autocast: speed-up over the same arm in fp32 (timed in the same rounds), and measured ÷ FLOP ideal in bf16 "
        "(fp32 stays the report's headline). A hand-run table (`python -m vitstudy measure bf16`), kept with the "
        "machine it ran on, which may differ from the report's.",
        "tables/19_bf16.csv",
        setup="random data; `vit_base_patch16_224` (inference), `vit_small_patch16_224` (training); 224×224 px",
        label=("table", "setting"),
        ours=(
            Measure(
                "bf16 over fp32",
                "bf16_speedup_over_fp32",
                "bf16_speedup_over_fp32_low",
                "bf16_speedup_over_fp32_high",
                "×",
            ),
            Measure(
                "bf16 ÷ ideal",
                "bf16_measured_over_ideal",
                "bf16_measured_over_ideal_low",
                "bf16_measured_over_ideal_high",
            ),
            Measure("fp32 share of peak", "baseline_fraction_of_peak"),
        ),
        speeds=(Speed("fp32 speed-up"),),
        only_with="bf16_speedup_over_fp32",
        ours_first=True,
    ),
    Section(
        "torch.compile",
        "Each wrapper compiled against eager (the same FLOPs: ideal 1.00), for an inference forward and a training "
        "step, each judged under its own A/A control (eager against its copy, in the same rounds).",
        "tables/19_compile.csv",
        setup="random input; the `model` column",
        label=("model", "setting"),
        ours=(Measure("graph breaks", "graph_breaks", digits=0),),
        speeds=(
            Speed("inference", "inference_", "inference_ideal_speedup", control="inference_aa_"),
            Speed("training", "training_", "training_ideal_speedup", control="training_aa_"),
        ),
        ours_first=True,
    ),
)


# Reading a table ---------------------------------------------------------------------------------------------------


def _number(row: pd.Series, column: str | None) -> float:
    if column is None or column not in row.index or pd.isna(row[column]):
        return math.nan
    try:
        return float(row[column])
    except (TypeError, ValueError):
        return math.nan


def _value(row: pd.Series, m: Measure, missing: str) -> str:
    value = _number(row, m.column)
    if math.isnan(value):
        return missing
    low, high = (_number(row, m.low), _number(row, m.high)) if m.low else (None, None)
    if low is not None and (math.isnan(low) or math.isnan(high)):
        low = high = None
    return format_interval(value, low, high, m.digits, m.unit)


def _speed_numbers(row: pd.Series, speed: Speed) -> tuple[float, float, float, float]:
    """(speed-up, low, high, FLOP ideal) of ``speed`` in ``row``."""
    p = speed.prefix
    ideal = _number(row, speed.ideal if speed.ideal in row.index else "ideal_speedup")
    return _number(row, f"{p}speedup"), _number(row, f"{p}speedup_low"), _number(row, f"{p}speedup_high"), ideal


def _is_baseline(speedup: float, low: float, high: float) -> bool:
    return speedup == low == high == 1.0


def row_speed_verdict(row: pd.Series, speed: Speed, trust: str, is_control: bool) -> str:
    """The verdict of one row's speed-up, derived from its numbers: the baseline, the A/A control by its interval,
    or measured ÷ ideal against the row's target (``trust``: the table's control, when it failed)."""
    speedup, low, high, ideal = _speed_numbers(row, speed)
    if speed.control is not None:
        trust = control_trust(*(_number(row, f"{speed.control}speedup{end}") for end in ("", "_low", "_high")))
        trust = "" if trust == NOT_MEASURED and math.isnan(speedup) else trust
    if math.isnan(speedup):
        return NOT_MEASURED
    if is_control:
        passes = control_passes(low, high)
        return f"A/A {format_interval(speedup, low, high, unit='×')}: {'passes' if passes else 'fails'} 1.00 ± 3%"
    if _is_baseline(speedup, low, high):
        return BASELINE_VERDICT
    target, within = speed.target(row)
    over_low, over_high = low / ideal, high / ideal
    return speed_verdict(speedup / ideal, over_low, over_high, target, trust, within)


def _groups(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[pd.DataFrame]:
    if not columns or not set(columns) <= set(frame.columns):
        return [frame]
    return [group for _, group in frame.groupby(list(columns), sort=False, dropna=False)]


def trust_by_row(frame: pd.DataFrame, speed: Speed, groups: tuple[str, ...]) -> pd.Series:
    """Each row's table trust for ``speed`` (:func:`table_trust` of its timed group): "" or "not trustworthy …"."""
    out = pd.Series("", index=frame.index, dtype=object)
    if speed.control is not None:  # each row carries its own A/A: row_speed_verdict reads it
        return out
    for group in _groups(frame, groups):
        trust = table_trust(group, speed.prefix) if f"{speed.prefix}speedup" in group else ""
        out[group.index] = "" if trust == NOT_MEASURED else trust
    return out


def read_table(figures: Path, section: Section) -> pd.DataFrame | None:
    path = figures / str(section.table)
    if section.table is None or not path.is_file():
        return None
    frame = pd.read_csv(path)
    if section.only_with is not None:
        # The A/A control stays: the rows shown are judged by it.
        keep = frame[section.only_with].notna() if section.only_with in frame else False
        frame = frame[keep | control_rows(frame)]
    return frame


def notes(frame: pd.DataFrame) -> list[str]:
    """Every distinct caveat the table's notes carry, in order."""
    found: list[str] = []
    for column in [c for c in frame.columns if c == "note" or c.endswith("_note")]:
        for text in frame[column].dropna().astype(str).str.strip():
            if text and text not in found:
                found.append(text)
    return found


# The run and its machine -------------------------------------------------------------------------------------------


def manifest_entry(figures: Path, table: str) -> tuple[str, dict] | None:
    """The manifest entry (notebook name, entry) of the run that wrote ``table``."""
    folder = (figures / table).parent.parent
    manifest = folder / "manifest.json"
    entries = json.loads(manifest.read_text()).get("notebooks", {}) if manifest.is_file() else {}
    wanted = str((figures / table).relative_to(folder))
    for name, entry in sorted(entries.items()):
        if wanted in entry.get("files", []):
            return name, entry
    return None


def machine(env: dict, bf16_timed: bool = False) -> str:
    """The machine a run recorded: device, threads, CPU capability, bf16 kernels, and the matmul peaks it measured
    ("not recorded" where absent). Two machines with one CPU name differ here. ``bf16_timed``: the table holds bf16
    arms' numbers, which are timed only where the device has bf16 kernels."""
    capability = env.get("cpu_capability") or NOT_RECORDED
    native = env.get("bf16_native")
    bf16 = ("yes (its bf16 arms were timed)" if bf16_timed else NOT_RECORDED) if native is None else "no"
    bf16 = "yes" if native else bf16
    peaks = {p.get("dtype"): p.get("gflop_per_s") for p in env.get("machine_peak", []) if isinstance(p, dict)}
    peak = " / ".join(f"{dtype} {value:.0f}" for dtype, value in peaks.items() if isinstance(value, (int, float)))
    return (
        f"{env.get('device_name', NOT_RECORDED)} ({env.get('device_type', NOT_RECORDED)}, "
        f"{env.get('cpu_threads', NOT_RECORDED)} threads; CPU capability {capability}; bf16 kernels {bf16}"
        + (f"; matmul peak {peak} GFLOP/s" if peak else "")
        + ")"
    )


def bf16_timed(frame: pd.DataFrame | None) -> bool:
    """Whether ``frame`` holds a timed bf16 arm's number (a ``bf16_speedup…`` column with a value)."""
    columns = [c for c in (frame.columns if frame is not None else []) if "bf16_speedup" in c]
    return bool(columns) and bool(frame[columns].notna().any().any())


def run_line(figures: Path, table: str, frame: pd.DataFrame | None = None) -> str:
    """Which notebook wrote ``table``, when, on what: from the manifest of the folder above ``tables/`` (and from
    ``frame``, the table, whether bf16 arms were timed)."""
    found = manifest_entry(figures, table)
    if found is None:
        return f"Run: no manifest entry names `{table}` (machine {NOT_RECORDED})."
    name, entry = found
    env = entry.get("environment", {})
    return (
        f"Run: notebook `{name}`, scale {entry.get('scale')}, {entry.get('date', '')[:10]}; machine "
        f"{machine(env, bf16_timed(frame))}; torch {env.get('torch')}."
    )


# Sections ----------------------------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _setting(row: pd.Series, label: tuple[str, ...]) -> str:
    return ": ".join(str(row[c]) for c in label if c in row.index and pd.notna(row[c]))


def section_table(frame: pd.DataFrame, section: Section) -> list[str]:
    """The rows of one section: label, the document's columns, ours, and each speed-up with its FLOP ideal and
    derived verdict; an accuracy verdict for a claims table."""
    header = ["setting", *(m.label for m in section.paper), *(m.label for m in section.ours)]
    for speed in section.speeds:
        verdict = QUOTIENT + " verdict" if len(section.speeds) == 1 else f"{speed.label}: {QUOTIENT} verdict"
        header += [speed.label, "FLOP ideal", verdict]
    claims = "paper_diff" in frame.columns
    if claims:
        header.append("verdict")
    # A table whose rows carry their own A/A columns has no control row (its "A/A control: …" cells are verdicts).
    own_controls = bool(section.speeds) and all(speed.control is not None for speed in section.speeds)
    is_control = control_rows(frame) & (not own_controls)
    trusts = [trust_by_row(frame, speed, section.groups) for speed in section.speeds]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = [_setting(row, section.label)]
        cells += [_value(row, m, NOT_IN_PAPER) for m in section.paper]
        cells += [NOT_IN_PAPER if is_control[index] else _value(row, m, NOT_MEASURED) for m in section.ours]
        for speed, trust in zip(section.speeds, trusts, strict=True):
            speedup, low, high, ideal = _speed_numbers(row, speed)
            short = f"{NOT_TRUSTWORTHY} (A/A)" if trust[index] else ""
            cells += [
                format_interval(speedup, low, high, unit="×"),
                format_interval(ideal, unit="×"),
                # The header says what the verdict reads; the cell keeps the quotient and the judgement.
                row_speed_verdict(row, speed, short, bool(is_control[index])).removeprefix(QUOTIENT + " "),
            ]
        if claims:
            cells.append(claim_accuracy(row))
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return lines


def claim_accuracy(row: pd.Series) -> str:
    seeds = _number(row, "seeds_to_resolve")
    return accuracy_verdict(
        _number(row, "diff"),
        _number(row, "diff_low"),
        _number(row, "diff_high"),
        _number(row, "paper_diff"),
        None if math.isnan(seeds) else int(seeds),
    )


def render_section(figures: Path, section: Section) -> list[str]:
    lines = [f"### {section.title}", "", section.compares, ""]
    if section.table is None:
        return lines
    frame = read_table(figures, section)
    if frame is None:
        return [*lines, f"Not run yet: no `figures/{section.table}`.", ""]
    lines += [f"What ran: {section.setup}. " + run_line(figures, section.table, frame), ""]
    lines += section_table(frame, section)
    caveats = notes(frame)
    for speed in section.speeds:
        if speed.control is not None:
            failed = [
                c
                for _, row in frame.iterrows()
                if (c := control_trust(*(_number(row, f"{speed.control}speedup{e}") for e in ("", "_low", "_high"))))
                not in ("", NOT_MEASURED)
            ]
            if failed:
                caveats.append(f"{speed.label}: {NOT_TRUSTWORTHY} in {len(failed)} of {len(frame)} rows (their A/A)")
            continue
        for group in _groups(frame, section.groups):
            trust = table_trust(group, speed.prefix) if f"{speed.prefix}speedup" in group else ""
            where = ", ".join(f"{c} {group[c].iloc[0]}" for c in section.groups)
            if trust.startswith(NOT_TRUSTWORTHY):
                caveats.append(f"{speed.label}{' at ' + where if where else ''}: {trust}")
    if caveats:
        lines += ["", *(f"- Caveat: {_escape(c)}" for c in caveats)]
    return [*lines, ""]


# What the study found ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    document: str
    claim: str
    paper: str
    ours: str
    verdict: str
    ideal: str  # the FLOP ideal of the claim's arm(s), "arm · compared with"
    measured: str  # their measured speed-ups
    trust: str = ""  # the A/A reading the speed-ups were judged under: "" when it passed
    on_speed: bool = False  # the claim is a speed-up (its verdict is a speed verdict), not a top-1 difference


def _speed_finding(
    document: str, claim: str, paper: str, row: pd.Series, speed: Speed, trust: str, compared: str = "1.00×"
) -> Finding:
    speedup, low, high, ideal = _speed_numbers(row, speed)
    return Finding(
        document,
        claim,
        paper,
        format_interval(speedup, low, high, unit="×"),
        row_speed_verdict(row, speed, trust, False),
        f"{format_interval(ideal, unit='×')} · {compared}",
        f"{format_interval(speedup, low, high, unit='×')} · {compared}",
        trust,
        True,
    )


def _load(figures: Path, table: str, *columns: str) -> pd.DataFrame | None:
    """The table at ``figures/table``; None when it is absent or lacks one of ``columns``."""
    path = figures / table
    frame = pd.read_csv(path) if path.is_file() else None
    return frame if frame is not None and set(columns) <= set(frame.columns) else None


def findings(figures: Path) -> list[Finding]:
    """One line per claim of both documents, each derived from its table's numbers."""
    found: list[Finding] = []
    report, skipvit = "Multi-exit report", "SkipViT paper"
    forced = _load(figures, "tables/01_max_speed_exit.csv", "paper_speed_improvement")
    if forced is not None:
        speed = SECTIONS[0].speeds[0]
        trust = table_trust(forced)
        for _, row in forced[forced["paper_speed_improvement"].notna() & ~control_rows(forced)].iterrows():
            if _is_baseline(*_speed_numbers(row, speed)[:3]):
                continue
            claim = f"5.1: {row['setting']} speeds up (GPU)"
            paper = format_interval(float(row["paper_speed_improvement"]), unit="×")
            found.append(_speed_finding(report, claim, paper, row, Speed(target=_forced_exit), trust))
    exits = _load(figures, "tables/02_table_5_2.csv", "paper_speedup", "policy")
    if exits is not None:
        trust = table_trust(exits)
        rows = exits[exits["paper_speedup"].notna() & (exits["policy"] == "batch")]
        for _, row in rows.iterrows():
            claim = f"5.2: {row['setting']}, the report's rule, no speed-up (GPU)"
            paper = format_interval(float(row["paper_speedup"]), unit="×")
            found.append(_speed_finding(report, claim, paper, row, Speed(target=_by_policy), trust))
    cpu = _load(figures, "tables/03_table_5_3.csv", "paper_cpu_speedup", "policy")
    if cpu is not None:
        speed = Speed("CPU", "cpu_", target=_by_policy)
        trust = table_trust(cpu, "cpu_")
        rows = cpu[cpu["paper_cpu_speedup"].notna() & (cpu["policy"] == "batch")]
        for _, row in rows.iterrows():
            claim = f"5.3: {row['setting']} slightly faster on a CPU"
            paper = format_interval(float(row["paper_cpu_speedup"]), unit="×")
            found.append(_speed_finding(report, claim, paper, row, speed, trust))
    table1 = _load(figures, "tables/04_table1.csv", "paper_gain_pct", "row")
    vit_small = Speed("ViT-S/16", "vit_small_", "vit_small_ideal_speedup")
    if table1 is not None:
        trust = table_trust(table1, "vit_small_")
        for _, row in table1[table1["paper_gain_pct"].notna()].iterrows():
            claim = f"Table 1: {row['setting']} trains faster (ViT-S/16)"
            paper = format_interval(1 + float(row["paper_gain_pct"]) / 100, unit="×")
            found.append(_speed_finding(skipvit, claim, paper, row, vit_small, trust))
    verdicts = _load(figures, "scratch/tables/08_verdicts.csv", "paper_diff", "row", "compared_with", "claim")
    if verdicts is not None:
        arms = table1.set_index("row") if table1 is not None else pd.DataFrame()
        trust = table_trust(table1, "vit_small_") if table1 is not None else ""
        for _, row in verdicts.iterrows():
            ours_only = pd.isna(row["paper_diff"])
            ideal, measured = _arm_speeds(arms, vit_small, (row["row"], row["compared_with"]), trust)
            found.append(
                Finding(
                    "our question" if ours_only else skipvit,
                    f"{row['claim']} ({DATASET_NAMES.get(row['dataset'], row['dataset'])}, top-1)",
                    NOT_IN_PAPER if ours_only else format_interval(float(row["paper_diff"])),
                    format_interval(_number(row, "diff"), _number(row, "diff_low"), _number(row, "diff_high")),
                    claim_accuracy(row),
                    ideal,
                    measured,
                    trust,
                )
            )
    found += _token_rule_findings(figures)
    return found


TOKEN_RULES = {
    "skip": "SkipViT's skip",
    "fused": "EViT's fused token",
    "drop": "plain dropping",
    "tome": "ToMe",
    "patch_dropout": "PatchDropout",
}


def _token_rule_findings(figures: Path) -> list[Finding]:
    """Notebook 11's trained curve: per data set and FLOP-ideal level, the rule that keeps the most top-1 after
    fine-tuning, judged on its paired lead over the runner-up (seeds as pairs); its measured training-step
    speed-up and the runner-up's from the data set's timed table."""
    verdicts = _load(
        figures, "scratch/tables/11_trained_verdicts.csv", "dataset", "level", "best", "runner_up", "lead", "pairs"
    )
    if verdicts is None:
        return []
    found = []
    for _, row in verdicts.iterrows():
        dataset = str(row["dataset"])
        speed = _load(figures, f"scratch/tables/11_trained_speed_{dataset}.csv", "arm", "speedup", "ideal_speedup")
        arms = speed.set_index("arm") if speed is not None else pd.DataFrame()
        trust = table_trust(speed) if speed is not None else ""
        level = float(row["level"])
        names = (f"{row['best']} {level:.2f}×", f"{row['runner_up']} {level:.2f}×")
        ideal, measured = _arm_speeds(arms, Speed("training step"), names, trust)
        seeds = _number(row, "seeds_to_resolve")
        lead = (_number(row, "lead"), _number(row, "lead_low"), _number(row, "lead_high"))
        told = accuracy_verdict(*lead, math.nan, None if math.isnan(seeds) else int(seeds))
        best, second = TOKEN_RULES.get(row["best"], row["best"]), TOKEN_RULES.get(row["runner_up"], row["runner_up"])
        found.append(
            Finding(
                "our question",
                f"at {level:.2f}× FLOP ideal, fine-tuned: {best} keeps more top-1 than {second}, the runner-up "
                f"({DATASET_NAMES.get(dataset, dataset)}, {int(row['pairs'])} seeds, top-1 lead)",
                NOT_IN_PAPER,
                format_interval(*lead),
                "resolved" if told == "higher" else told,
                ideal,
                measured,
                trust,
            )
        )
    return found


DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "fashion_mnist_cluttered": "cluttered Fashion-MNIST"}


def _arm_speeds(arms: pd.DataFrame, speed: Speed, names: tuple[str, str], trust: str) -> tuple[str, str]:
    """The FLOP ideal and measured speed-up of both arms of a claim (" · " between them), from Table 1's timing."""
    ideals, measured = [], []
    for name in names:
        if name not in arms.index:
            ideals.append(NOT_MEASURED)
            measured.append(NOT_MEASURED)
            continue
        speedup, low, high, ideal = _speed_numbers(arms.loc[name], speed)
        ideals.append(format_interval(ideal, unit="×"))
        baseline = _is_baseline(speedup, low, high)
        measured.append(
            format_interval(speedup, unit="×") if baseline else format_interval(speedup, low, high, unit="×")
        )
    return " · ".join(ideals), " · ".join(measured) + (f"; {NOT_TRUSTWORTHY} (A/A)" if trust else "")


VOCABULARY = """The verdicts, once. A speed verdict reads measured ÷ FLOP-ideal speed-up (the quotient, with its 95 %
interval, is printed in the verdict) against a target: "within target (lo–hi)" (for a forced exit also its interval
inside 0.95–1.05), "below" or "above target", "exceeds the FLOP bound — measurement suspect" (above 1.03: faster
than the FLOPs allow). Every table is timed with an A/A control, the baseline against its own copy; it passes when
its whole interval lies inside 1.00 ± 3 %. Where it does not, every speed verdict of that table reads "not
trustworthy (A/A …)" instead, whatever its numbers. An accuracy verdict reads our top-1 difference in points (95 %
interval over seeds) against the document's: "reproduced" (the document's value inside our interval, which excludes
0; for a claim of no change: a loss beyond 1 point excluded), "direction reproduced, smaller/larger" (our interval
excludes 0 on the document's side but not its value), "contradicted" (the other side), "contradicted in size" (our
interval holds 0 but not the document's value), "cannot tell" (it holds both; with the seeds that would resolve it
where the notebook estimated them). "{not_in_paper}": the document prints no such number; "{not_measured}": the
device was absent or the run did not measure it."""


DOCUMENTS = (
    ("Multi-exit report", "the course report on multi-exit ViT"),
    ("SkipViT paper", "Ataiefard et al."),
    ("our question", "our own questions on the same data"),
)


def render_findings(figures: Path, figure: str | None) -> list[str]:
    lines = ["## What the study found", "", VOCABULARY.format(not_in_paper=NOT_IN_PAPER, not_measured=NOT_MEASURED)]
    if figure is not None:
        lines += ["", f"![top-1 against measured speed-up]({figure})"]
    lines += [
        "",
        "Speed-ups are ratios (×), top-1 differences points. The last two columns: the FLOP-ideal and measured "
        "speed-up of the claim's arm · of what it is compared with (for the SkipViT top-1 claims, the ViT-S/16 "
        "training step of Table 1), so a difference in cost shows beside a difference in top-1.",
    ]
    found = findings(figures)
    for document, about in DOCUMENTS:
        rows = [f for f in found if f.document == document]
        if not rows:
            continue
        lines += [
            "",
            f"**{document[0].upper() + document[1:]}** ({about}; [sources](docs/sources.md))",
            "",
            "| claim | paper | ours (95 % interval) | verdict | FLOP ideal | measured speed-up |",
            "|---|---|---|---|---|---|",
        ]
        for f in rows:
            cells = (f.claim, f.paper, f.ours, f.verdict, f.ideal, f.measured)
            lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return [*lines, ""]


# The figure --------------------------------------------------------------------------------------------------------


def findings_figure(figures: Path) -> Figure | None:
    """Top-1 against measured speed-up: every SkipViT row (Table 1, the small model's training step) and every exit
    operating point (Table 5.2: colour the variant, square the report's batch rule, circle per sample). Hollow
    markers: the table's A/A control failed, so its speed-ups are not trustworthy. None without either table."""
    skip, exits = _figure_tables(figures)
    if skip is None and exits is None:
        return None
    fig = Figure(figsize=(10, 4.2))
    left, right = fig.subplots(1, 2)
    panels = (
        (left, skip, "small_", "SkipViT rows (small model, training step)"),
        (right, exits, "", "exit operating points (inference, batch 256)"),
    )
    for ax, frame, prefix, title in panels:
        failed = frame is not None and table_trust(frame, prefix) != ""
        title += f"\nhollow: A/A control failed, speed-ups {NOT_TRUSTWORTHY}" if failed else ""
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="measured speed-up (95 % interval)", ylabel="top-1 (%)")
        ax.grid(alpha=0.3)
    if skip is not None:
        rows = skip[~control_rows(skip) & skip["top1_dropping_on"].notna()]
        _points(left, rows, "small_", "top1_dropping_on", "tab:blue", "o", table_trust(skip, "small_"), "SkipViT")
        for x, y, text in zip(rows["small_speedup"], rows["top1_dropping_on"], rows["row"], strict=True):
            left.annotate(str(text), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        left.legend(fontsize=7)
    if exits is not None:
        trust = table_trust(exits)
        rows = exits[~control_rows(exits) & exits["top1"].notna()]
        colours = dict(zip(rows["variant"].unique(), ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
        for (variant, policy), part in rows.groupby(["variant", "policy"], sort=False):
            marker = "s" if policy == "batch" else "o"
            _points(right, part, "", "top1", colours.get(variant, "tab:gray"), marker, trust, f"{variant}, {policy}")
        right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _figure_tables(figures: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The findings figure's two tables (SkipViT's Table 1, the exits' Table 5.2), None where absent."""
    skip = _load(figures, "tables/04_table1.csv", "top1_dropping_on", "row", "small_speedup_low", "small_speedup_high")
    exits = _load(figures, "tables/02_table_5_2.csv", "top1", "variant", "policy", "speedup_low", "speedup_high")
    return skip, exits


def _points(ax, rows: pd.DataFrame, prefix: str, top1: str, colour: str, marker: str, trust: str, label: str) -> None:
    speedup, low, high = (rows[f"{prefix}speedup{end}"].to_numpy(float) for end in ("", "_low", "_high"))
    ax.errorbar(
        speedup,
        rows[top1].to_numpy(float),
        xerr=[speedup - low, high - speedup],
        fmt=marker,
        color=colour,
        mfc="none" if trust else colour,
        capsize=2,
        label=label,
    )


# The file ----------------------------------------------------------------------------------------------------------


HEADER = """# Results

Generated by `python -m vitstudy results` from the committed tables in `figures/` (the report rewrites it after a
run into `figures/`): do not edit by hand. It opens with the answers, one line per claim of the two documents
([docs/sources.md](docs/sources.md)); then the reproductions in the documents' order, then our own questions, each
with what ran, on which machine, and every caveat of its table beside its numbers. The notebooks (`notebooks/`)
explain each table.
"""


NO_TABLES = "{figures} holds none of the tables RESULTS.md is made from (expected tables/*.csv, e.g. figures/)"


def has_tables(figures: Path) -> bool:
    """Whether ``figures`` holds any committed table (``tables/*.csv``, or a scale folder's): a report run that wrote
    one notebook still regenerates the file; a mistyped folder does not overwrite it."""
    return any(figures.glob("tables/*.csv")) or any(figures.glob("*/tables/*.csv"))


def render(figures: str | Path | None = None, figure: str | None = f"figures/{FINDINGS_FIGURE}.png") -> str:
    """The text of RESULTS.md from the tables in ``figures`` (default: the project's ``figures/``); ``figure``:
    the findings figure's link, None for none."""
    figures = Path(figures) if figures is not None else project_root() / "figures"
    lines = [HEADER, *render_findings(figures, figure), "## The documents' tables, reproduced", ""]
    mine = [s for s in SECTIONS if s.ours_first]
    for section in [s for s in SECTIONS if not s.ours_first]:
        lines += render_section(figures, section)
    lines += ["## Our own questions", ""]
    for section in mine:
        lines += render_section(figures, section)
    return "\n".join(lines).rstrip("\n") + "\n"


def results_path() -> Path:
    return project_root() / "RESULTS.md"


def write_results(figures: str | Path | None = None, path: str | Path | None = None) -> Path:
    """Rewrite RESULTS.md (or ``path``) and the findings figure from ``figures``; returns the path written.
    Raises :class:`NoTables` (writing nothing) when ``figures`` holds none of the tables."""
    figures = Path(figures) if figures is not None else project_root() / "figures"
    if not has_tables(figures):
        raise NoTables(NO_TABLES.format(figures=figures))
    path = Path(path) if path is not None else results_path()
    fig = findings_figure(figures)
    if fig is not None:
        write_figure(fig, figures / FINDINGS_FIGURE)
    atomic_write_text(path, render(figures, _figure_link(figures, path) if fig is not None else None))
    return path


def _figure_link(figures: Path, path: Path) -> str:
    target = (figures / f"{FINDINGS_FIGURE}.png").resolve()
    try:
        return str(target.relative_to(path.resolve().parent))
    except ValueError:
        return str(target)


def is_current(figures: str | Path | None = None, path: str | Path | None = None) -> bool:
    """Whether the file at ``path`` (default RESULTS.md) equals a regeneration from ``figures``; :class:`NoTables`
    when ``figures`` holds none of the tables."""
    figures = Path(figures) if figures is not None else project_root() / "figures"
    if not has_tables(figures):
        raise NoTables(NO_TABLES.format(figures=figures))
    path = Path(path) if path is not None else results_path()
    has_figure = any(table is not None for table in _figure_tables(figures))
    link = _figure_link(figures, path) if has_figure else None
    return path.is_file() and path.read_text() == render(figures, link)
