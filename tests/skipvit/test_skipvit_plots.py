"""SkipViT figures: drawn from the tables' frames."""

from __future__ import annotations

import pandas as pd

from vitstudy import skipvit as sv


def test_gain_plot_draws_five_bars_per_setting(table_1_of):
    """gain_plot: five bars (paper, two models measured and ideal) per dropping row (no baseline, no A/A control),
    labelled by setting, and an interval error bar on each measured series."""
    table = table_1_of()
    ax = sv.gain_plot(table).axes[0]
    assert len(ax.patches) == 5 * (len(sv.TABLE1) - 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table["setting"][1:-1])
    assert len(ax.containers) == 5 + 2  # five bar series, two error-bar series


def test_accuracy_plot_labels_every_setting(table_1_of):
    """accuracy_plot annotates one point per non-baseline row with its setting."""
    ax = sv.accuracy_plot(table_1_of()).axes[0]
    assert len(ax.texts) == len(sv.TABLE1) - 1


def test_warmup_plot_draws_one_curve_per_run():
    """warmup_plot: one validation curve per (warm-up, seed) run, a dotted line where dropping starts."""
    histories = pd.DataFrame({"warmup_epochs": [0, 0, 1, 1], "seed": 0, "epoch": [1, 2, 1, 2],
                              "val_top1": [50.0, 60.0, 55.0, 62.0]})  # fmt: skip
    ax = sv.warmup_plot(histories).axes[0]
    assert len(ax.lines) == 3  # two curves and the warm-up marker
