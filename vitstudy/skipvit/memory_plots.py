"""Figures of the two open questions (data in, Figure out): memory saved per row, gain per model size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import new_figure


def memory_plot(memory: pd.DataFrame) -> Figure:
    """Activation memory saved for backward (%) beside the FLOP-ideal compute saving (%), per row and model."""
    fig = new_figure((11, 4))
    axes = fig.subplots(1, memory["model"].nunique(), sharey=True, squeeze=False)[0]
    for ax, (model, rows) in zip(axes, memory.groupby("model", sort=False)):
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["memory_saving_pct"], 0.4, label="activation memory saved (%)", color="tab:green")
        ax.bar(x + 0.2, 100 * (1 - 1 / rows["ideal_speedup"]), 0.4, label="FLOPs saved (%)", color="tab:gray")
        ax.set_xticks(x, rows["setting"], rotation=30, ha="right", fontsize=7)
        ax.set(title=f"{model} ({rows['input'].iloc[0]})", ylabel="saved vs dropping off (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def model_size_plot(sizes: pd.DataFrame) -> Figure:
    """Per model: FLOP-ideal and measured training-step speed-up (95 % interval), and memory saved."""
    fig = new_figure((9, 3.8))
    speed, memory = fig.subplots(1, 2)
    x = np.arange(len(sizes))
    speed.bar(x - 0.2, sizes["ideal_speedup"], 0.4, color="tab:gray", label="FLOP-ideal")
    measured = sizes["speedup"].to_numpy(dtype=float)
    error = [np.nan_to_num(measured - sizes["speedup_low"]), np.nan_to_num(sizes["speedup_high"] - measured)]
    speed.bar(x + 0.2, np.nan_to_num(measured), 0.4, yerr=error, capsize=3, color="tab:blue",
              label="measured (not timed: no bar)")  # fmt: skip
    speed.axhline(1, color="black", lw=0.8)
    speed.set_xticks(x, [f"{m}\n{s}" for m, s in zip(sizes["model"], sizes["setting"])], fontsize=7)
    speed.set(ylabel="training speed-up over baseline", title="headline setting scaled with depth")
    speed.legend(fontsize=7)
    memory.bar(x, sizes["memory_saving_pct"], color="tab:green")
    memory.set_xticks(x, sizes["model"], fontsize=8)
    memory.set(ylabel="activation memory saved (%)", title="memory kept for backward")
    for ax in (speed, memory):
        ax.grid(axis="y", alpha=0.3)
    return fig
