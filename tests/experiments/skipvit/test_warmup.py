"""Notebook 05's experiment (vitstudy.experiments.skipvit.warmup): budgets, Table 3, the warm-up curves."""

from __future__ import annotations

import pandas as pd

from vitstudy.experiments.skipvit import warmup


def test_every_budget_trains_from_scratch_with_a_warmup_and_dropping_after_it():
    """Warm-up only means something from scratch; every budget's warm-up run waits at least one epoch and still
    trains at least one epoch with dropping."""
    for budget in warmup.BUDGETS.values():
        training = budget.training
        waits = max(1, training.warmup_epochs)  # what warmup_runs trains its warm-up row with
        assert training.start == "scratch" and waits < training.train.epochs


def test_table_3_puts_warmup_or_not_beside_the_papers_rows():
    """table_3: one row without and one with warm-up, the paper's 67.18 / 69.73 beside them."""
    runs = pd.DataFrame(
        {
            "warmup_epochs": [0, 0, 1, 1],
            "epochs": 7,
            "seed": [0, 1, 0, 1],
            "top1_dropping_on": [60.0, 62.0, 63.0, 63.0],
            "top1_dropping_off": 59.0,
        }
    )
    table = warmup.table_3(runs)
    assert list(table["warmup"]) == ["no", "yes"] and list(table["top1_dropping_on"]) == [61.0, 63.0]
    assert list(table["paper_top1"]) == [67.18, 69.73] and list(table["seeds"]) == [2, 2]


def test_warmup_plot_draws_one_curve_per_run():
    """warmup_plot: one validation curve per (warm-up, seed) run, a dotted line where dropping starts."""
    histories = pd.DataFrame(
        {"warmup_epochs": [0, 0, 1, 1], "seed": 0, "epoch": [1, 2, 1, 2], "val_top1": [50.0, 60.0, 55.0, 62.0]}
    )
    ax = warmup.warmup_plot(histories).axes[0]
    assert len(ax.lines) == 3  # two curves and the warm-up marker
