"""Notebook 05, the paper's Table 3: 4,7 / 30%,30% / skip 10 trained with and without a warm-up (no dropping in
the first 15% of the epochs), every seed, beside the paper's two rows; the validation curves as a figure.
:data:`BUDGETS` says how long each scale trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...config import PAPER_SMOKE, SCALES, Scale, paper_smoke
from ...plots import new_figure
from ...reference import load_reference
from ...skipvit import TABLE3
from ..sentences import is_missing, number, paragraph, points
from .common import QUICK_DATA, SMOKE_DATA, RowTraining, budget_for, runs_frame, train_row


@dataclass(frozen=True)
class WarmupBudget:
    """How long notebook 05 trains at one scale: long enough that 15% of the epochs is at least one epoch."""

    training: RowTraining  # both runs, every seed; warm-up only means something from scratch
    note: str = ""


BUDGETS: dict[str, WarmupBudget] = {
    "smoke": WarmupBudget(
        RowTraining("smoke", dataclasses.replace(SMOKE_DATA, epochs=2), warmup_fraction=0.5),
        note="smoke: warm-up 1 of 2 epochs",
    ),
    # Batch 32 gives ~440 updates in 7 epochs of 2,000 images.
    "quick": WarmupBudget(
        RowTraining("quick", dataclasses.replace(QUICK_DATA, epochs=7, batch_size=32, lr=1e-3, warmup_epochs=0.5)),
        note="quick: one seed, 2,000 images x 7 epochs from scratch; warm-up 15% of 7 = 1 epoch; one seed "
        "cannot separate differences under ~1 point",
    ),
    "full": WarmupBudget(
        RowTraining.of(SCALES["full"]), note="whole Fashion-MNIST, 30 epochs, 3 seeds, warm-up 15% of the epochs"
    ),
    "paper": WarmupBudget(RowTraining.of(SCALES["paper"]), note="the paper's recipe (Table 2)"),
    # Already the fewest steps that run every path: two epochs, so a 1-epoch warm-up leaves one of dropping.
    PAPER_SMOKE: WarmupBudget(RowTraining.of(paper_smoke(SCALES["paper"])), note="smoke sizes: numbers meaningless"),
}


def budget(scale: Scale | str | None = None) -> WarmupBudget:
    """Notebook 05's budget at ``scale`` (default ``VITSTUDY_SCALE``): one of :data:`BUDGETS`."""
    return budget_for(BUDGETS, scale)


def warmup_runs(budget: WarmupBudget, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3's configuration (4,7 at 30%, skip 10) without and with warm-up, every seed; returns (one results row
    per run, the concatenated per-epoch histories)."""
    training = budget.training
    return runs_frame(
        [
            train_row(training, "table3", TABLE3, seed, warmup=w, progress=progress)
            for w in (0, max(1, training.warmup_epochs))
            for seed in training.seeds
        ]
    )


def table_3(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (warm-up or not) beside the paper's two rows; ``runs``: :func:`warmup_runs`."""
    reference = load_reference("skipvit_3")
    grouped = (
        runs.groupby("warmup_epochs")
        .agg(
            epochs=("epochs", "first"),
            seeds=("seed", "count"),
            top1_dropping_on=("top1_dropping_on", "mean"),
            top1_dropping_on_std=("top1_dropping_on", "std"),
            top1_dropping_off=("top1_dropping_off", "mean"),
        )
        .reset_index()
    )
    grouped["warmup"] = np.where(grouped["warmup_epochs"] > 0, "yes", "no")
    grouped["paper_warmup_epochs"] = [0 if w == "no" else 15 for w in grouped["warmup"]]
    grouped["paper_epochs"] = 100
    grouped["paper_top1"] = [
        float(reference.loc[reference["warmup_epochs"] == p, "top1"].iloc[0]) for p in grouped["paper_warmup_epochs"]
    ]
    columns = [
        "warmup",
        "warmup_epochs",
        "epochs",
        "seeds",
        "top1_dropping_on",
        "top1_dropping_on_std",
        "top1_dropping_off",
        "paper_warmup_epochs",
        "paper_epochs",
        "paper_top1",
    ]
    return grouped[columns]


def warmup_plot(histories: pd.DataFrame) -> Figure:
    """Validation top-1 per epoch with and without warm-up (dropping on during validation once it is on)."""
    fig = new_figure((6.5, 3.8))
    ax = fig.subplots()
    for (warmup, seed), run in histories.groupby(["warmup_epochs", "seed"]):
        label = f"warm-up {warmup} epoch(s)" if warmup else "no warm-up"
        ax.plot(run["epoch"], run["val_top1"], "-o" if warmup else "--s", label=f"{label}, seed {seed}")
        if warmup:
            ax.axvline(warmup + 0.5, color="gray", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="4,7 / 30% / skip 10: warm-up or not")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def findings(table: pd.DataFrame) -> str:
    """What notebook 05 shows, in sentences computed from :func:`table_3` (Markdown): the warm-up's effect on
    top-1 in the paper and here, and how many seeds stand behind ours."""
    rows = table.set_index("warmup")
    if not {"no", "yes"} <= set(rows.index):
        return paragraph(
            ["Does a warm-up without dropping help training from scratch? This run lacks one of the two rows."]
        )
    no, yes = rows.loc["no"], rows.loc["yes"]
    ours = yes["top1_dropping_on"] - no["top1_dropping_on"]
    paper = yes["paper_top1"] - no["paper_top1"]
    agrees = (
        "direction unknown"
        if is_missing(ours)
        else ("the paper's direction" if ours * paper > 0 else "not the paper's direction")
    )
    seeds = int(min(no["seeds"], yes["seeds"]))
    return paragraph(
        [
            "Does training the first epochs without dropping help SkipViT trained from scratch?",
            f"The paper's warm-up ({yes['paper_warmup_epochs']:g} of {yes['paper_epochs']:g} epochs) "
            f"{points(paper)} of top-1.",
            f"Ours ({yes['warmup_epochs']:g} of {yes['epochs']:g} epochs) {points(ours)} "
            f"({number(no['top1_dropping_on'], unit=' %')} → {number(yes['top1_dropping_on'], unit=' %')}): "
            f"{agrees}.",
            f"Caveat: {seeds} seed{'s' if seeds != 1 else ''} per row and no paired interval, so this is a direction, "
            "not a resolved difference; notebook 08 tests the claim over seeds with a paired 95 % interval.",
        ]
    )
