"""The multi-exit figures: data in, a matplotlib Figure out (saved by ``report.save_figure``)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from .. import bench
from ..plots import grouped_bars, new_figure
from .study import VARIANT_LABELS


def speed_bars(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """Table 5.1 as bars: measured and FLOP-ideal speed-up per exit block, the report's measured beside them."""
    fig = new_figure((7, 3.4))
    ax = fig.subplots()
    table = table[table["exit_block"].notna()].sort_values("exit_block")  # the A/A control row has no block
    series = [("ours, measured", table["speedup"]), ("ours, FLOP-ideal", table["ideal_speedup"])]
    if reference is not None:
        ref = reference[reference["metric"] == "speed_improvement"].set_index("exit_block")["value"].astype(float)
        series.append(("report, measured (RTX A6000)", table["exit_block"].map(ref)))
    last = table["exit_block"].max()
    groups = [f"exit {b}" if b < last else "original" for b in table["exit_block"]]
    grouped_bars(ax, groups, series, value_format="%.2f")
    ax.set(ylabel="speed-up over the original model (x)", title="every image forced out at one block")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_speed_curves(
    sweep: pd.DataFrame, measured: pd.DataFrame | None = None, plain_top1: float | None = None
) -> Figure:
    """Top-1 vs FLOP-ideal speed-up per variant (one panel each), a line per exit set; measured points on top."""
    variants = list(dict.fromkeys(sweep["variant"]))
    fig = new_figure((3.2 * len(variants), 3.4))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, variants):
        part = sweep[sweep["variant"] == variant]
        for exits, curve in part.groupby("exits", sort=False):
            curve = curve.sort_values("ideal_speedup")
            ax.plot(curve["ideal_speedup"], curve["top1"], "-o", ms=3, label=f"exits {exits}")
        if measured is not None:
            points = measured[measured["variant"] == variant]  # the A/A control row matches no variant
            ax.scatter(points["speedup"], points["top1"], marker="*", s=90, color="black", zorder=5, label="measured")
        if plain_top1 is not None:
            ax.axhline(plain_top1, color="grey", ls="--", lw=1)
            ax.axhline(plain_top1 - 0.5, color="grey", ls=":", lw=1)
        ax.set(title=VARIANT_LABELS.get(variant, variant), xlabel="speed-up (x; lines: FLOP-ideal)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    axes[0].legend(fontsize=7)
    return fig


def batch_rule_plot(rates: pd.DataFrame) -> Figure:
    """Exit rate of the ``batch`` rule vs batch size, one line per threshold, with the independence model dashed."""
    fig = new_figure((6, 3.4))
    ax = fig.subplots()
    for threshold, part in rates.groupby("threshold"):
        line = ax.plot(part["batch_size"], part["batch_exited_pct"], "-o", ms=3, label=f"threshold {threshold:g}")
        ax.plot(part["batch_size"], part["independent_pct"], "--", color=line[0].get_color(), lw=1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size", ylabel="images that exited early (%)",
           title="the report's rule: a batch exits only when its least confident image does")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def device_speedup_bars(table: pd.DataFrame, devices: Sequence[str] = ("cpu", "cuda")) -> Figure:
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
