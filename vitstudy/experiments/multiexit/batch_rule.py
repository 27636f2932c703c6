"""Notebook 02, offline: why the report's real-data exit never sped anything up.

The report's rule lets a batch leave only when its least confident image reaches the threshold. Two facts make
it a non-starter: the max-softmax of C classes is never below 1/C (:func:`chance_floor_table`), and if a share p
of images is confident on its own, a batch of b independent images leaves with probability p^b
(:func:`batch_rule_exit_rates`, :func:`required_confident_share`). Nothing here is timed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from ...multiexit import ExitStudy, exits_label
from ...plots import new_figure


def batch_rule_exit_rates(
    study: ExitStudy,
    variant: str,
    exits: tuple[int, ...],
    thresholds: Sequence[float],
    batch_sizes: Sequence[int],
) -> pd.DataFrame:
    """Share of images leaving early under the ``batch`` rule, by batch size and threshold (measured offline).

    ``per_image_pct`` is the share that would leave on their own (batch size 1); ``independent_pct`` is what
    the batch rule gives if confident images were independent draws: ``per_image ** batch_size``.
    """
    rows = []
    for threshold in thresholds:
        per_image = study.evaluate(variant, exits, threshold, "sample")["exited_pct"] / 100
        for batch_size in batch_sizes:
            row = study.evaluate(variant, exits, threshold, "batch", batch_size)
            rows.append(
                {
                    "variant": variant,
                    "exits": exits_label(exits),
                    "threshold": threshold,
                    "batch_size": batch_size,
                    "batch_exited_pct": row["exited_pct"],
                    "per_image_pct": 100 * per_image,
                    "independent_pct": 100 * per_image**batch_size,
                    "top1": row["top1"],
                    "ideal_speedup": row["ideal_speedup"],
                }
            )
    return pd.DataFrame(rows)


def required_confident_share(batch_sizes: Sequence[int], batch_exit_rate: float = 0.5) -> pd.DataFrame:
    """Confident share per image needed for a batch of b independent images to leave at rate r: ``r ** (1/b)``."""
    return pd.DataFrame(
        [
            {
                "batch_size": b,
                "batch_exit_rate_pct": 100 * batch_exit_rate,
                "confident_share_needed_pct": 100 * batch_exit_rate ** (1 / b),
                "unconfident_images_allowed_per_1000": 1000 * (1 - batch_exit_rate ** (1 / b)),
            }
            for b in batch_sizes
        ]
    )


def chance_floor_table(classes: Sequence[int] = (10, 1000), threshold: float = 0.01) -> pd.DataFrame:
    """Max-softmax is at least 1/C: where the report's threshold sits relative to chance for C classes."""
    return pd.DataFrame(
        [
            {
                "classes": c,
                "max_softmax_floor": 1 / c,
                "threshold": threshold,
                "threshold_over_floor": threshold * c,
                "exit_guaranteed_per_image": threshold <= 1 / c,
            }
            for c in classes
        ]
    )


def batch_rule_plot(rates: pd.DataFrame) -> Figure:
    """Exit rate of the ``batch`` rule vs batch size, one line per threshold, with the independence model dashed."""
    fig = new_figure((6, 3.4))
    ax = fig.subplots()
    for threshold, part in rates.groupby("threshold"):
        line = ax.plot(part["batch_size"], part["batch_exited_pct"], "-o", ms=3, label=f"threshold {threshold:g}")
        ax.plot(part["batch_size"], part["independent_pct"], "--", color=line[0].get_color(), lw=1)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="batch size",
        ylabel="images that exited early (%)",
        title="the report's rule: a batch exits only when its least confident image does",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
