"""The exit explorer (notebook 07): everything the widget shows, computed offline from the recorded features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..plots import draw_image_mosaic, grid_shape, new_figure
from ..widgets import ExplorerView, explorer_interactive
from .exits import confidence, simulate
from .study import ExitStudy, exits_label, parse_exits


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
    summary = study.evaluate(variant, exits, threshold, policy, batch_size, simulation=sim)  # simulate once a move
    shown = torch.arange(start, min(start + count, len(targets)))
    conf = confidence(logits[shown, sim.exit_column[shown]])  # [shown] at the exit each image took
    images = torch.stack([study.splits.test[int(i)][0] for i in shown]) if len(shown) else torch.zeros(0, 1, 8, 8)
    right = (sim.predictions[shown] == targets[shown]).tolist()
    labels = [
        f"exit {int(sim.exit_block[i])} · {c:.2f}\n{'right' if ok else 'wrong'}"
        for i, c, ok in zip(shown, conf.tolist(), right)
    ]
    fig = explorer_figure(images, labels, right, summary, [*exits, study.depth], columns)
    # what the grid labels, as numbers: which images, the block each left after, how many are right
    summary = {
        **summary,
        "first_image": start,
        "shown_exit_blocks": sim.exit_block[shown].tolist(),
        "shown_right": sum(right),
    }
    return ExplorerView(summary, fig, details=sim)


def explorer_figure(
    images: torch.Tensor,
    labels: Sequence[str],
    right: Sequence[bool],
    summary: dict[str, Any],
    blocks: Sequence[int],
    columns: int = 8,
) -> Figure:
    """Image mosaic (each framed green if right, red if wrong, labelled under it) beside a histogram of exit
    blocks, with top-1 and speed-up in the title."""
    rows, columns = grid_shape(len(images), columns)
    # ~0.8 in per image keeps the 28-px images and their 6.5-pt labels legible at the widget's 100 dpi while the
    # PNG stays small. Axes are placed by hand (in inches) rather than by constrained layout, whose extra measuring
    # draw cost as much as the render itself: rendering was most of a slider move's time.
    grid_width, hist_width, title_height = 0.8 * columns, 1.45, 0.35
    width, height = grid_width + 2.2, max(0.9 * rows + 0.6, 2.4)
    fig = new_figure((width, height), layout=None)

    def axes_at(left: float, bottom: float, w: float, h: float) -> Axes:
        return fig.add_axes((left / width, bottom / height, w / width, h / height))

    grid_ax = axes_at(0.05, 0.05, grid_width, height - title_height - 0.05)
    # room for the tick labels and the two-line "(end)" label left of and under the histogram
    hist_ax = axes_at(width - hist_width - 0.1, 0.7, hist_width, height - title_height - 0.7)
    label_colors = ["black" if ok else "tab:red" for ok in right]
    border_colors = ["tab:green" if ok else "tab:red" for ok in right]
    draw_image_mosaic(grid_ax, images, labels, label_colors, border_colors, columns)
    shares = [summary[f"at_{b}_pct"] for b in blocks]
    hist_ax.bar([str(b) if b != blocks[-1] else f"{b}\n(end)" for b in blocks], shares, color="tab:blue")
    hist_ax.set(xlabel="exit block", ylabel="test images (%)", ylim=(0, 100))
    hist_ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{summary['variant']} · exits {summary['exits']} · {summary['policy']} · threshold {summary['threshold']:g}: "
        f"top-1 {summary['top1']:.2f}% (plain {summary['plain_top1']:.2f}%), exited {summary['exited_pct']:.1f}%, "
        f"FLOP-ideal speed-up {summary['ideal_speedup']:.2f}x",
        fontsize=8,
        y=1 - 0.1 / height,
        va="top",
    )
    return fig


def readout(summary: dict[str, Any]) -> str:
    """Two sentences a person reads under the figure: where the test images leave under this setting, then top-1
    against the plain model and the FLOP-ideal speed-up."""
    shares = {int(key[3:-4]): value for key, value in summary.items() if key.startswith("at_") and key.endswith("_pct")}
    *exit_blocks, end = sorted(shares)
    per_exit = ", ".join(f"block {block}: {shares[block]:.1f}%" for block in exit_blocks)
    policy = "per-sample" if summary["policy"] == "sample" else f"per-batch ({summary['batch_size']} images)"
    return (
        f"Variant {summary['variant']}, exits after blocks {summary['exits']}, {policy} policy, threshold "
        f"{summary['threshold']:g}: {summary['exited_pct']:.1f}% of the test images leave early ({per_exit}) and "
        f"{shares[end]:.1f}% run to block {end}. Top-1 {summary['top1']:.2f}% against {summary['plain_top1']:.2f}% "
        f"for the plain model, FLOP-ideal speed-up {summary['ideal_speedup']:.2f}x."
    )


def explorer_widget(
    study: ExitStudy, show: bool = True, batch_size: int = 64, count: int = 24
) -> ipywidgets.interactive:
    """The explorer as a widget: threshold slider, variant / exits / policy selectors, first image shown. The
    variants are those the study holds (``joint`` once an experiment added it: ``ExitStudy.add_variant``).

    Each move returns the new :class:`ExplorerView` as ``widget.result``; callback errors are raised.
    """
    variants = list(dict.fromkeys(v for v, _ in study.models))
    exit_sets = list(dict.fromkeys(exits_label(e) for _, e in study.models))

    def view(variant: str, exits: str, policy: str, threshold: float, start: int) -> ExplorerView:
        return explore(study, variant, parse_exits(exits), policy, threshold, batch_size, start, count)

    test_size = len(study.features["test"].targets)
    return explorer_interactive(
        view,
        readout,
        show=show,
        variant=ipywidgets.Dropdown(options=variants, value="separate" if "separate" in variants else variants[0]),
        exits=ipywidgets.Dropdown(options=exit_sets, value=exit_sets[-1], description="exits after"),
        policy=ipywidgets.ToggleButtons(options=["sample", "batch"], value="sample"),
        threshold=ipywidgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.005, readout_format=".3f"),
        start=ipywidgets.IntSlider(0, 0, max(0, test_size - count), count, description="first image"),
    )
