"""RESULTS.md: every table of both documents beside ours, generated from the committed tables in ``figures/``.

One section per compared table (:data:`SECTIONS`): what is compared, then setting | paper | ours (95 % interval) |
verdict, and the machine and date of the run that wrote the table (from the manifest of its output folder). No
number is typed here: each comes from a CSV. ``python -m vitstudy results`` rewrites the file, ``--check`` tells
whether the committed one is current; the report rewrites it after a run into ``figures/``.

Reads pandas and JSON only, never torch, so the command answers in a second.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..files import atomic_write_text, project_root
from ..formatting import NOT_MEASURED, format_interval

__all__ = ["SECTIONS", "Measure", "Section", "is_current", "render", "results_path", "write_results"]

NOT_IN_PAPER = "—"


@dataclass(frozen=True)
class Measure:
    """One number of a cell: ``column`` (with ``low``/``high``, its 95% interval) written as ``label value``."""

    label: str
    column: str
    low: str | None = None
    high: str | None = None
    unit: str = ""
    digits: int = 2


@dataclass(frozen=True)
class Section:
    """One compared table: ``table`` (a CSV under figures/), rows named by ``label`` columns."""

    title: str
    compares: str
    table: str | None
    label: tuple[str, ...] = ("setting",)
    paper: tuple[Measure, ...] = ()
    ours: tuple[Measure, ...] = ()
    verdicts: tuple[tuple[str, str], ...] = (("", "verdict"),)  # (label, column)
    reference: str | None = None  # the reference table id (vitstudy.reference.TABLES) this section answers
    only_with: str | None = None  # show only the rows where this column holds a value


def speed(column: str, label: str = "speed-up") -> Measure:
    return Measure(label, column, f"{column}_low", f"{column}_high", "×")


TOP1 = "top-1"
SECTIONS: tuple[Section, ...] = (
    Section(
        "Multi-exit report, Table 5.1: forced exit",
        "Speed-up of an exit after block 3, 6 or 9 over the "
        "original model on random input: the report's GPU against our device.",
        "tables/01_max_speed_exit.csv",
        paper=(Measure("", "paper_speed_improvement", unit="×"),),
        ours=(speed("speedup", ""),),
        reference="multiexit_5.1",
    ),
    Section(
        "Multi-exit report, Table 5.2: exits on real data",
        "Top-1 and speed-up of each exit classifier and "
        "exit policy on the test set: the report's GPU against our device.",
        "tables/02_table_5_2.csv",
        paper=(Measure(TOP1, "paper_top1", unit="%"), Measure("speed-up", "paper_speedup", unit="×")),
        ours=(Measure(TOP1, "top1", unit="%"), speed("speedup")),
        reference="multiexit_5.2",
    ),
    Section(
        "Multi-exit: our speed targets",
        "Our targets for the exits (the report states none): measured speed-up "
        "and the per-sample exit's top-1 loss in points, each against its target.",
        "tables/02_performance.csv",
        label=("measurement",),
        ours=(
            speed("speedup"),
            Measure("top-1 loss", "test_top1_loss", "test_top1_loss_low", "test_top1_loss_high", " points"),
        ),
    ),
    Section(
        "Multi-exit report, Table 5.3: CPU against GPU",
        "Table 5.2's settings timed on the CPU and on the GPU; the report's CPU rows beside ours.",
        "tables/03_table_5_3.csv",
        paper=(
            Measure(TOP1, "paper_cpu_top1", unit="%"),
            Measure("CPU im/s", "paper_cpu_images_per_s"),
            Measure("CPU speed-up", "paper_cpu_speedup", unit="×"),
        ),
        ours=(
            Measure(TOP1, "top1", unit="%"),
            Measure("CPU im/s", "cpu_images_per_s"),
            speed("cpu_speedup", "CPU speed-up"),
            speed("cuda_speedup", "GPU speed-up"),
        ),
        verdicts=(("CPU", "cpu_verdict"), ("GPU", "cuda_verdict")),
        reference="multiexit_5.3",
    ),
    Section(
        "SkipViT paper, Table 1: token dropping and the skip",
        "Training throughput gain and top-1 of each "
        "setting: the paper's ViT-small (trained 100 epochs) against our timed ViT-S/16 and small model, and "
        "our small model's top-1.",
        "tables/04_table1.csv",
        paper=(Measure("gain", "paper_gain_pct", unit="%"), Measure(TOP1, "paper_top1", unit="%")),
        ours=(
            speed("vit_small_speedup", "ViT-S/16"),
            speed("small_speedup", "small model"),
            Measure(TOP1, "top1_dropping_on", unit="%"),
        ),
        verdicts=(("ViT-S/16", "vit_small_verdict"), ("small model", "small_verdict")),
        reference="skipvit_1",
    ),
    Section(
        "SkipViT paper, Table 1: re-insert at layer 10 or 11",
        "How much faster (%) and how much more accurate (points) re-inserting at layer 11 is than at layer 10.",
        "tables/04_skip10_vs_skip11.csv",
        label=("drop layers / ratios",),
        paper=(
            Measure("faster", "paper: 11 vs 10 (%)", unit="%"),
            Measure(TOP1, "paper top-1: 11 minus 10", unit=" points"),
        ),
        ours=(
            Measure("ViT-S/16 faster", "ours ViT-S/16: 11 vs 10 (%)", unit="%"),
            Measure("small model faster", "ours small model: 11 vs 10 (%)", unit="%"),
            Measure(TOP1, "ours top-1: 11 minus 10", unit=" points"),
        ),
        verdicts=(),
    ),
    Section(
        "SkipViT paper, Table 2: training parameters",
        "The paper's training settings, not a result: not compared.",
        None,
        reference="skipvit_2",
    ),
    Section(
        "SkipViT paper, Table 3: warm-up before dropping",
        "Top-1 with and without epochs of warm-up (no dropping) first: the paper's schedule against our shorter one.",
        "tables/05_table3.csv",
        label=("warmup",),
        paper=(
            Measure("warm-up epochs", "paper_warmup_epochs", digits=0),
            Measure("of", "paper_epochs", digits=0),
            Measure(TOP1, "paper_top1", unit="%"),
        ),
        ours=(
            Measure("warm-up epochs", "warmup_epochs", digits=0),
            Measure("of", "epochs", digits=0),
            Measure(TOP1, "top1_dropping_on", unit="%"),
        ),
        verdicts=(),
        reference="skipvit_3",
    ),
    Section(
        "SkipViT from scratch: the paper's claims",
        "Each claim per data set (Fashion-MNIST; cluttered "
        "Fashion-MNIST) as a paired top-1 difference (points) over seeds, against the paper's difference; "
        "`resolvable`: the interval's half-width.",
        "scratch/tables/08_verdicts.csv",
        label=("dataset", "claim"),
        paper=(Measure("", "paper_diff", unit=" points"),),
        ours=(
            Measure("", "diff", "diff_low", "diff_high", " points"),
            Measure("seeds", "pairs", digits=0),
            Measure("resolvable", "resolvable", unit=" points"),
        ),
    ),
    Section(
        "SkipViT from scratch: every setting",
        "Mean top-1 over seeds with dropping on, and its paired difference from the data set's baseline (points).",
        "scratch/tables/08_summary.csv",
        label=("dataset", "setting"),
        ours=(
            Measure(TOP1, "top1_dropping_on", unit="%"),
            Measure("difference", "diff_on", "diff_low_on", "diff_high_on", " points"),
        ),
        verdicts=(),
    ),
    Section(
        "Our question: memory",
        "Activation memory saved per image by each setting (saved tensors; the GPU "
        "peak where a GPU ran), beside its FLOP-ideal speed-up.",
        "tables/09_memory.csv",
        label=("model", "setting"),
        ours=(
            Measure("saved", "memory_saving_pct", unit="%"),
            Measure("GPU peak", "cuda_peak_mib_per_image_on", unit=" MiB"),
            Measure("FLOP-ideal", "ideal_speedup", unit="×"),
        ),
        verdicts=(),
    ),
    Section(
        "Our question: model size",
        "The headline setting's measured training speed-up and memory saving on ViTs of growing size.",
        "tables/09_model_size.csv",
        label=("model", "setting"),
        ours=(speed("speedup"), Measure("memory saved", "memory_saving_pct", unit="%")),
    ),
    Section(
        "Multi-exit at batch 1: the report's edge premise",
        "Each test image alone (the report's edge "
        "device): latency per image, and the per-sample exit's speed-up over the plain model on the mean and on "
        "the median latency (95 % interval paired by image) against its FLOP ideal; the exits' own cost when "
        "none fires; the A/A control.",
        "tables/10_batch1_latency.csv",
        label=("arm", "setting"),
        ours=(
            Measure("mean", "mean_ms", unit=" ms"),
            Measure("p99", "p99_ms", unit=" ms"),
            speed("speedup", "speed-up"),
            Measure("of medians", "speedup_of_medians", "speedup_of_medians_low", "speedup_of_medians_high", "×"),
            Measure("FLOP ideal", "ideal_speedup", unit="×"),
            Measure("overhead", "overhead_pct", "overhead_pct_low", "overhead_pct_high", " %"),
        ),
    ),
    Section(
        "Multi-exit: the same operating point across batch sizes",
        "Speed-up of the per-sample exit over the "
        "plain model on one batch of real test images, batch 1 to 256, against the FLOP ideal of that batch's "
        "exits.",
        "tables/10_batch_sweep.csv",
        label=("batch_size", "arm"),
        ours=(
            speed("speedup"),
            Measure("FLOP ideal", "ideal_speedup", unit="×"),
            Measure("÷ ideal", "measured_over_ideal", "measured_over_ideal_low", "measured_over_ideal_high"),
        ),
    ),
    Section(
        "Multi-exit and SkipViT at once",
        "The per-sample exit on a model that also drops tokens at inference: "
        "does the saving compose? Measured against the product of the two FLOP ideals.",
        "tables/10_composition.csv",
        label=("arm", "setting"),
        ours=(
            speed("speedup"),
            Measure("FLOP ideal", "ideal_speedup", unit="×"),
            Measure(
                "÷ product of ideals",
                "measured_over_product",
                "measured_over_product_low",
                "measured_over_product_high",
            ),
            Measure("top-1 loss", "top1_loss", "top1_loss_low", "top1_loss_high", " points"),
        ),
    ),
    Section(
        "Multi-exit beside the field",
        "Published speed-ups of LGViT, A-ViT and CF-ViT (each with what it "
        "measures, in the table) beside ours; never one column for both.",
        "tables/10_beside_the_field.csv",
        label=("block", "method"),
        paper=(
            Measure("speed-up", "published_speedup", unit="×"),
            Measure("top-1 change", "published_top1_change_points", unit=" points"),
        ),
        ours=(
            Measure("speed-up", "ours_speedup", "ours_speedup_low", "ours_speedup_high", "×"),
            Measure(
                "top-1 change", "ours_top1_change_points", "ours_top1_change_low", "ours_top1_change_high", " points"
            ),
        ),
        verdicts=(("", "measures"),),
    ),
    Section(
        "Our question: bf16 on the CPU",
        "Each SkipViT row's ViT-S/16 training step in bf16 autocast: speed-up "
        "over the same row in fp32, and measured ÷ FLOP ideal in bf16 beside fp32's (fp32 stays the headline); "
        "the fp32 baseline's share of the machine's fp32 peak. The rows timed in bf16 at this scale.",
        "tables/04_speed_vit_small.csv",
        label=("row",),
        ours=(
            speed("bf16_speedup_over_fp32", "bf16 over fp32"),
            Measure("fp32 ÷ ideal", "measured_over_ideal", "measured_over_ideal_low", "measured_over_ideal_high"),
            Measure(
                "bf16 ÷ ideal",
                "bf16_measured_over_ideal",
                "bf16_measured_over_ideal_low",
                "bf16_measured_over_ideal_high",
            ),
            Measure("fp32 share of peak", "baseline_fraction_of_peak"),
        ),
        verdicts=(("fp32", "verdict"), ("bf16", "bf16_verdict")),
        only_with="bf16_speedup_over_fp32",
    ),
    Section(
        "Our question: torch.compile",
        "Whether each wrapper compiles to eager's output, its graph breaks, and "
        "the compiled speed-up over eager (the same FLOPs: ideal 1.00) for an inference forward and a training "
        "step, each beside its A/A control (eager against its copy, in the same rounds): a speed-up reads only "
        "where its A/A is within 1.00 ± 3 %.",
        "tables/19_compile.csv",
        label=("model", "setting"),
        ours=(
            Measure("graph breaks", "graph_breaks", digits=0),
            speed("inference_speedup", "inference"),
            speed("inference_aa_speedup", "inference A/A"),
            speed("training_speedup", "training"),
            speed("training_aa_speedup", "training A/A"),
        ),
        verdicts=(("", "error"), ("inference", "inference_verdict"), ("training", "training_verdict")),
    ),
    Section(
        "Our question: two processes on the cores",
        "Images/s of two package processes training at once, "
        "with and without the sharing rule, against one process alone (per-round paired ratio, range over "
        "rounds; the lone process's A/A copy shows the protocol's spread).",
        "tables/19_core_sharing.csv",
        label=("arm",),
        ours=(
            Measure("total", "images_per_s_total", "total_low", "total_high", " im/s", 0),
            Measure("× alone", "total_over_alone", "total_over_alone_low", "total_over_alone_high"),
        ),
        verdicts=(),
    ),
)


def _number(row: pd.Series, column: str | None) -> float | None:
    if column is None or column not in row.index or pd.isna(row[column]):
        return None if column is None else math.nan
    return float(row[column])


def _cell(row: pd.Series, measures: tuple[Measure, ...], missing: str) -> str:
    parts = []
    for m in measures:
        value = _number(row, m.column)
        low, high = _number(row, m.low), _number(row, m.high)
        text = missing if math.isnan(value) else format_interval(value, low, high, m.digits, m.unit)
        parts.append(f"{m.label} {text}".strip())
    if all(p.endswith(missing) for p in parts):
        return missing
    return "; ".join(parts)


def _verdict(row: pd.Series, verdicts: tuple[tuple[str, str], ...]) -> str:
    found = [(label, row[c]) for label, c in verdicts if c in row.index and isinstance(row[c], str)]
    return "; ".join(f"{label}: {text}" if label else text for label, text in found) or NOT_IN_PAPER


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def run_line(figures: Path, table: str) -> str:
    """Which notebook wrote ``table``, when, on what: from the manifest of the folder above ``tables/``."""
    folder = (figures / table).parent.parent
    manifest = folder / "manifest.json"
    entries = json.loads(manifest.read_text()).get("notebooks", {}) if manifest.is_file() else {}
    wanted = str((figures / table).relative_to(folder))
    for name, entry in sorted(entries.items()):
        if wanted in entry.get("files", []):
            env = entry.get("environment", {})
            return (
                f"Run: notebook `{name}` at scale {entry.get('scale')}, {entry.get('date', '')[:10]}, "
                f"{env.get('device_name')} ({env.get('device_type')}, {env.get('cpu_threads')} threads), "
                f"torch {env.get('torch')}."
            )
    return f"Run: no manifest entry names `{table}`."


def render_section(figures: Path, section: Section) -> list[str]:
    lines = [f"## {section.title}", "", section.compares, ""]
    if section.table is None:
        return lines
    path = figures / section.table
    if not path.is_file():
        return [*lines, f"Not run yet: no `figures/{section.table}`.", ""]
    frame = pd.read_csv(path)
    if section.only_with is not None:
        frame = frame[frame[section.only_with].notna()] if section.only_with in frame else frame.iloc[:0]
    lines += [
        run_line(figures, section.table),
        "",
        "| setting | paper | ours (95 % interval) | verdict |",
        "|---|---|---|---|",
    ]
    for _, row in frame.iterrows():
        setting = ": ".join(str(row[c]) for c in section.label if c in row.index and pd.notna(row[c]))
        cells = [
            setting,
            _cell(row, section.paper, NOT_IN_PAPER) if section.paper else NOT_IN_PAPER,
            _cell(row, section.ours, NOT_MEASURED),
            _verdict(row, section.verdicts),
        ]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return [*lines, ""]


HEADER = """# Results

Generated by `python -m vitstudy results` from the committed tables in `figures/` (the report rewrites it after
a run into `figures/`): do not edit by hand. Each section compares one table of the two documents, or one of our
own questions, with our run: the paper's number, ours with its 95 % interval in brackets, and the verdict the
notebook gave. "{not_in_paper}" in the paper column: the paper prints no such number; "{not_measured}": the device
was absent or the run did not measure it. The notebooks (`notebooks/`) explain each table.
"""


def render(figures: str | Path | None = None) -> str:
    """The text of RESULTS.md from the tables in ``figures`` (default: the project's ``figures/``)."""
    figures = Path(figures) if figures is not None else project_root() / "figures"
    lines = [HEADER.format(not_in_paper=NOT_IN_PAPER, not_measured=NOT_MEASURED)]
    for section in SECTIONS:
        lines += render_section(figures, section)
    return "\n".join(lines).rstrip("\n") + "\n"


def results_path() -> Path:
    return project_root() / "RESULTS.md"


def write_results(figures: str | Path | None = None, path: str | Path | None = None) -> Path:
    """Rewrite RESULTS.md (or ``path``) from ``figures``; returns the path written."""
    path = Path(path) if path is not None else results_path()
    atomic_write_text(path, render(figures))
    return path


def is_current(figures: str | Path | None = None, path: str | Path | None = None) -> bool:
    """Whether the file at ``path`` (default RESULTS.md) equals a regeneration from ``figures``."""
    path = Path(path) if path is not None else results_path()
    return path.is_file() and path.read_text() == render(figures)
