"""Figures of the from-scratch study (data in, Figure out): top-1 per row and seed, paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import new_figure


def scratch_plot(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Left: test top-1 (dropping on) of every seed and the row mean. Right: paired difference to the
    baseline with its 95 % interval, dropping on (filled) and off (open) at test time."""
    fig = new_figure((11, 4.2))
    left, right = fig.subplots(1, 2)
    names = list(summary["row"])
    y = np.arange(len(names))
    for i, name in enumerate(names):
        seeds = runs[runs["row"] == name]["top1_dropping_on"].to_numpy(dtype=float)
        left.scatter(seeds, np.full(len(seeds), i), color="tab:gray", s=14, zorder=2)
    left.errorbar(summary["top1_dropping_on"], y, xerr=summary["top1_dropping_on_std"].fillna(0), fmt="D",
                  color="tab:blue", capsize=3, label="mean ± std over seeds")  # fmt: skip
    left.set_yticks(y, summary["setting"], fontsize=7)
    left.invert_yaxis()
    left.set(xlabel="test top-1 (%), dropping on", title="every seed (grey) and the mean")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=7)
    for tag, offset, face in (("on", -0.12, "tab:orange"), ("off", 0.12, "none")):
        diff = summary[f"diff_{tag}"].to_numpy(dtype=float)
        low = diff - summary[f"diff_low_{tag}"].to_numpy(dtype=float)
        high = summary[f"diff_high_{tag}"].to_numpy(dtype=float) - diff
        right.errorbar(diff, y + offset, xerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="o", capsize=3,
                       color="tab:orange", mfc=face, label=f"dropping {tag} at test")  # fmt: skip
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(y, [""] * len(y))
    right.invert_yaxis()
    right.set(xlabel="minus baseline (points), paired by seed, 95% interval", title="difference to the baseline")
    right.grid(axis="x", alpha=0.3)
    right.legend(fontsize=7)
    return fig
