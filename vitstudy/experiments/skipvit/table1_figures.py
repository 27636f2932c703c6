"""Notebook 04's figures: Table 1's gains (measured with intervals, FLOP-ideal, the paper's) and accuracy vs speed.

Data in (a :func:`.table1.table_1` frame), Figure out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...plots import grouped_bars, new_figure
from .skipvit_speed import CONTROL

# Table 1 columns of gain_plot's bars: (column, legend label, colour).
GAIN_BARS = (
    ("paper_gain_pct", "paper (Ascend 910A)", "tab:gray"),
    ("vit_small_gain_pct", "ours ViT-S/16 measured", "tab:blue"),
    ("vit_small_ideal_gain_pct", "ours ViT-S/16 FLOP-ideal", "lightsteelblue"),
    ("small_gain_pct", "ours small model measured", "tab:orange"),
    ("small_ideal_gain_pct", "ours small model FLOP-ideal", "navajowhite"),
)


def _dropping_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["row"].isin(["baseline", CONTROL])]


def gain_plot(table: pd.DataFrame) -> Figure:
    """Per row of :func:`table_1`: measured training-throughput gain (with its 95% interval as an error bar) vs
    the FLOP-ideal gain (ViT-S/16 and the small model) and the paper's gain."""
    fig = new_figure((10, 4))
    ax = fig.subplots()
    rows = _dropping_rows(table)
    series = [(label, rows[column]) for column, label, _ in GAIN_BARS]
    grouped_bars(ax, list(rows["setting"]), series, colors=[color for *_, color in GAIN_BARS])
    width = 0.8 / len(GAIN_BARS)  # grouped_bars' bar positions
    for i, (column, *_) in enumerate(GAIN_BARS):
        prefix = column.removesuffix("gain_pct")
        if column.endswith("ideal_gain_pct") or f"{prefix}speedup_low" not in rows:
            continue
        gain = rows[column].to_numpy(dtype=float)
        low = 100 * (rows[f"{prefix}speedup_low"].to_numpy(dtype=float) - 1)
        high = 100 * (rows[f"{prefix}speedup_high"].to_numpy(dtype=float) - 1)
        x = np.arange(len(rows)) + (i - (len(GAIN_BARS) - 1) / 2) * width
        ax.errorbar(x, gain, yerr=[gain - low, high - gain], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    for tick in ax.get_xticklabels():
        tick.set(rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="training throughput gain (%)", title="Table 1: speed-up over the baseline")
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return fig


def accuracy_plot(table: pd.DataFrame) -> Figure:
    """Top-1 difference from the baseline vs throughput gain: ours (small model, dropping on) and the paper's."""
    fig = new_figure((6.5, 4.5))
    ax = fig.subplots()
    rows = _dropping_rows(table)
    ax.errorbar(
        rows["small_gain_pct"],
        rows["top1_dropping_on_diff"],
        yerr=rows["top1_dropping_on_std"].fillna(0),
        fmt="o",
        color="tab:orange",
        label="ours: small model, Fashion-MNIST",
    )
    ax.scatter(
        rows["paper_gain_pct"], rows["paper_top1_diff"], marker="s", color="tab:gray", label="paper: ViT-S, ImageNet"
    )
    for _, row in rows.iterrows():
        ax.annotate(row["setting"], (row["small_gain_pct"], row["top1_dropping_on_diff"]), fontsize=6, alpha=0.8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="training throughput gain (%)", ylabel="top-1 minus baseline (points)", title="accuracy vs speed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
