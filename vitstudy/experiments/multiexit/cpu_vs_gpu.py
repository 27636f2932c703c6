"""Notebook 03: CPU vs GPU (the report's Table 5.3): the Table 5.2 measurements once per device, side by side.

Top-1 and exit shares do not depend on the device (they are computed once, offline); images/s does. A device that
is not present has NaN in its columns and the ``note`` says why. Budgets are notebook 02's
(:func:`.common.real_data_budget`: the same batch, threshold, settings and table timing), so within one report run a
device's column reads notebook 02's Table 5.2 measurement of the same arms (:mod:`vitstudy.bench.shared`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from ... import bench
from ...bench import NOT_MEASURED_NO_CUDA
from ...formatting import NOT_MEASURED
from ...multiexit import POLICIES, ExitStudy
from ...plots import grouped_bars, new_figure
from ..sentences import judged, number, paragraph
from .common import table_5_2

VARIANTS_5_3 = ("same", "finetune", "separate")  # the report's Table 5.3 variants, and our separate heads
DEVICES = ("cpu", "cuda")
# Columns that are the same on every device (offline), and the timed ones each device gets a copy of.
OFFLINE_COLUMNS = (
    "setting",
    "variant",
    "exits",
    "policy",
    "threshold",
    "top1",
    "top1_loss",
    "exited_pct",
    "ideal_speedup",
    "timed_as",
)
TIMED_COLUMNS = (
    "images_per_s",
    "plain_images_per_s",
    "speedup",
    "speedup_low",
    "speedup_high",
    "measured_over_ideal",
    "verdict",
    "baseline_gflop_per_s",
    "peak_gflop_per_s",
    "baseline_fraction_of_peak",
    "device",
    "threads",
    "rounds",
)


def table_5_3(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.CompareSettings,
    variants: Sequence[str] = VARIANTS_5_3,
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = POLICIES,
    devices: Sequence[str] = DEVICES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5.3: the Table 5.2 measurements once per device, side by side (``cpu_*``, ``cuda_*`` columns), and
    the raw times of every device's comparison (a ``device`` column tells them apart).

    A device that is not present has NaN in its columns, and ``note`` names its columns and says why.
    """
    parts, raws = [], []
    for device in devices:
        part, comparison = table_5_2(study, threshold, batch_size, settings, variants, exit_sets, policies, device)
        parts.append(part.assign(timed_on=device))
        raws.append(bench.raw_times(comparison))
    # One row per setting, one column per (timed column, device): `{device}_{column}`.
    wide = pd.concat(parts).pivot(index="setting", columns="timed_on", values=[*TIMED_COLUMNS, "note"])
    wide.columns = [f"{device}_{column}" for column, device in wide.columns]
    wide = wide.infer_objects()  # pivot of mixed columns gives objects: numbers stay numbers
    table = parts[0][list(OFFLINE_COLUMNS)].merge(
        wide[[f"{d}_{c}" for d in devices for c in TIMED_COLUMNS]], left_on="setting", right_index=True
    )
    notes = wide.loc[table["setting"], [f"{d}_note" for d in devices]].to_numpy()
    table["note"] = ["; ".join(f"{d} columns: {n}" for d, n in zip(devices, row) if n) for row in notes]
    return table, pd.concat(raws, ignore_index=True)


def machine_table(
    table: pd.DataFrame, settings: bench.CompareSettings, devices: Sequence[str] = DEVICES
) -> pd.DataFrame:
    """How close each device runs to its peak, side by side: the fp32 and bf16 matmul peaks measured in this
    process at the timed thread count (:func:`vitstudy.bench.settings_peak`: cached when :func:`table_5_3` timed
    with the same ``settings``), the plain model's achieved GFLOP/s (forward FLOPs × images/s) and its
    share of the fp32 peak. A device that is absent reads NaN with the ``note`` saying why."""
    out = []
    for device in devices:
        threads = table[f"{device}_threads"].iloc[0]
        present = bench.device_available(device) and table[f"{device}_baseline_gflop_per_s"].notna().any()
        peak = bench.settings_peak(device, int(threads), settings) if present else {}
        out.append(
            {
                "timed_on": device,
                "device": table[f"{device}_device"].iloc[0],
                "threads": threads,
                "peak_fp32_gflop_per_s": peak.get("fp32", math.nan),
                "peak_bf16_gflop_per_s": peak.get("bf16", math.nan),
                "plain_model_gflop_per_s": table[f"{device}_baseline_gflop_per_s"].iloc[0],
                "plain_model_fraction_of_fp32_peak": table[f"{device}_baseline_fraction_of_peak"].iloc[0],
                "flops_counted": "forward",
                "note": "" if present else NOT_MEASURED_NO_CUDA,
            }
        )
    return pd.DataFrame(out)


def device_speedup_bars(table: pd.DataFrame, devices: Sequence[str] = DEVICES) -> Figure:
    """Measured speed-up per setting, one bar per device; a device that was not measured is named, not drawn."""
    table = table[table["variant"].notna()]  # settings only: the A/A control row has no variant
    fig = new_figure((max(6.0, 0.45 * len(table)), 3.6))
    ax = fig.subplots()
    missing = [d for d in devices if table[f"{d}_speedup"].isna().all()]
    series = [(d, table[f"{d}_speedup"]) for d in devices]
    grouped_bars(ax, [f"{r.variant} {r.exits} {r.policy}" for r in table.itertuples()], series)
    for bars in list(ax.containers):
        if bars.get_label() in missing:
            bars.remove()  # its slot stays empty, so bars line up whichever devices ran; nor is it in the legend
    for label in ax.get_xticklabels():
        label.set(rotation=60, ha="right", fontsize=7)
    ax.axhline(1.0, color="grey", lw=1)
    title = "speed-up over the plain model on real test images"
    if missing:
        title += f"\n{', '.join(missing)}: {bench.NOT_MEASURED_NO_CUDA}"
    ax.set(ylabel="speed-up (x)", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def findings(table: pd.DataFrame, devices: Sequence[str] = DEVICES) -> str:
    """What notebook 03 shows, in a few sentences computed from :func:`table_5_3` beside the report's CPU rows
    (Markdown): the report's CPU speed-ups, per device our best exit setting against its FLOP ideal (judged only
    under that device's passing A/A control, :func:`vitstudy.bench.table_trust`), and whether the CPU column is
    notebook 02's measurement read again or a timing of its own."""
    paper = table["paper_cpu_speedup"].dropna() if "paper_cpu_speedup" in table else pd.Series(dtype=float)
    sentences = ["Does an early exit speed up inference on a CPU but not on a GPU, as the report saw?"]
    if len(paper):
        sentences.append(
            f"The report's CPU speed-ups ({number(paper.min(), unit='×')}–{number(paper.max(), unit='×')}) came "
            "with unchanged accuracy, so no image left early: timing variation, not exits."
        )
    exits = table[table["variant"].notna()] if "variant" in table else table
    for device in devices:
        speed = exits[f"{device}_speedup"] if f"{device}_speedup" in exits else pd.Series(dtype=float)
        if not speed.notna().any():
            sentences.append(f"On {device.upper()}: {NOT_MEASURED_NO_CUDA if device == 'cuda' else NOT_MEASURED}.")
            continue
        best = exits.loc[speed.idxmax()]
        row = {k.removeprefix(f"{device}_"): v for k, v in best.items()}
        phrase = bench.speed_phrase(row["speedup"], row["speedup_low"], row["speedup_high"], row["ideal_speedup"])
        verdict = judged(row.get("verdict"), bench.table_trust(table, f"{device}_"))
        sentences.append(f"On {device.upper()} our best setting, {best['setting']}, reads {phrase}: {verdict}.")
    notes = " ".join(str(n) for n in table.get("note", pd.Series(dtype=str)).dropna())
    source = (
        "The CPU column is notebook 02's Table 5.2 measurement read again (same rounds, same A/A control)."
        if "timed once earlier" in notes
        else "The CPU column is a timing of its own, not Table 5.2's: the two differ by run-to-run variation, so "
        "compare them only through their intervals and A/A controls."
    )
    sentences.append(
        f"Top-1 and exit shares are the same on every device; only the cost of the skipped blocks differs. {source}"
    )
    return paragraph(sentences)
