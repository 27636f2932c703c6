"""The exit explorer (notebook 07): everything the widget shows, computed offline from the recorded features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets
import torch
from matplotlib.figure import Figure

from ..plots import draw_image_grid, grid_shape, new_figure
from ..widgets import ExplorerView, explorer_interactive
from .exits import confidence, simulate
from .study import ExitStudy, exits_label


def explore(
    study: ExitStudy,
    variant: str,
    exits: Sequence[int],
    policy: str,
    threshold: float,
    batch_size: int = 64,
    start: int = 0,
    count: int = 24,
    columns: int = 8,
) -> ExplorerView:
    """Test images labelled with exit block, confidence and right/wrong; exit histogram; top-1 and ideal speed-up.

    ``details`` is the ``Simulation`` of the whole test set under this setting.
    """
    exits = tuple(exits)
    logits = study.logits(variant, exits)
    sim = simulate(logits, exits, study.depth, threshold, policy, batch_size=batch_size)
    targets = study.features["test"].targets
    summary = study.evaluate(variant, exits, threshold, policy, batch_size)
    conf = confidence(logits[torch.arange(len(targets)), sim.exit_column])  # [N] at the exit each image took
    shown = range(start, min(start + count, len(targets)))
    images = torch.stack([study.splits.test[i][0] for i in shown]) if len(shown) else torch.zeros(0, 1, 8, 8)
    right = [bool(sim.predictions[i] == targets[i]) for i in shown]
    titles = [
        f"exit {int(sim.exit_block[i])} · {conf[i]:.2f}\n{'right' if ok else 'wrong'}" for i, ok in zip(shown, right)
    ]
    fig = explorer_figure(images, titles, right, summary, [*exits, study.depth], columns)
    # what the grid labels, as numbers: which images, the block each left after, how many are right
    summary = {**summary, "first_image": start, "shown_exit_blocks": [int(sim.exit_block[i]) for i in shown],
               "shown_right": sum(right)}  # fmt: skip
    return ExplorerView(summary, fig, details=sim)


def explorer_figure(
    images: torch.Tensor,
    titles: Sequence[str],
    right: Sequence[bool],
    summary: dict[str, Any],
    blocks: Sequence[int],
    columns: int = 8,
) -> Figure:
    """Image grid (wrong ones red) beside a histogram of exit blocks, with top-1 and speed-up in the title."""
    rows, columns = grid_shape(len(images), columns)
    fig = new_figure((1.2 * columns + 3.2, max(3.0, 1.4 * rows)))
    grid, side = fig.subfigures(1, 2, width_ratios=[1.2 * columns, 3.2])
    colors = ["black" if ok else "tab:red" for ok in right]
    draw_image_grid(grid.subplots(rows, columns, squeeze=False).flat, images, titles, colors, fontsize=6.5)
    hist_ax = side.subplots()
    shares = [summary[f"at_{b}_pct"] for b in blocks]
    hist_ax.bar([str(b) if b != blocks[-1] else f"{b}\n(end)" for b in blocks], shares, color="tab:blue")
    hist_ax.set(xlabel="exit block", ylabel="test images (%)", ylim=(0, 100))
    hist_ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{summary['variant']} · exits {summary['exits']} · {summary['policy']} · threshold {summary['threshold']:g}: "
        f"top-1 {summary['top1']:.2f}% (plain {summary['plain_top1']:.2f}%), exited {summary['exited_pct']:.1f}%, "
        f"FLOP-ideal speed-up {summary['ideal_speedup']:.2f}x",
        fontsize=9,
    )
    return fig


def explorer_widget(
    study: ExitStudy, show: bool = True, batch_size: int = 64, count: int = 24
) -> ipywidgets.interactive:
    """The explorer as a widget: threshold slider, variant / exits / policy selectors, first image shown.

    Each move returns the new :class:`ExplorerView` as ``widget.result``; callback errors are raised.
    """
    variants = list(dict.fromkeys(v for v, _ in study.models))
    exit_sets = list(dict.fromkeys(exits_label(e) for _, e in study.models))

    def view(variant: str, exits: str, policy: str, threshold: float, start: int) -> ExplorerView:
        chosen = tuple(int(b) for b in exits.split(","))
        return explore(study, variant, chosen, policy, threshold, batch_size, start, count)

    test_size = len(study.features["test"].targets)
    return explorer_interactive(
        view,
        show=show,
        variant=ipywidgets.Dropdown(options=variants, value="separate" if "separate" in variants else variants[0]),
        exits=ipywidgets.Dropdown(options=exit_sets, value=exit_sets[-1], description="exits after"),
        policy=ipywidgets.ToggleButtons(options=["sample", "batch"], value="sample"),
        threshold=ipywidgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.005, readout_format=".3f"),
        start=ipywidgets.IntSlider(0, 0, max(0, test_size - count), count, description="first image"),
    )
