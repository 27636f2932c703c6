"""The exit explorer (notebook 07): everything the widget shows, computed offline from the recorded features.

:func:`explore` computes one setting and draws it on a new figure. The widget (:func:`explorer_widget`) runs an
:class:`ExitExplorer`: each setting simulated once (an LRU cache keyed by the controls), each page of test images
read once, and one :class:`ExitDrawing` per layout redrawn in place, so a move recomputes and redraws only what
changed: the histogram's frame and ticks are kept as a background (one per exit set), and the mosaic, its labels, the
bars and the title are drawn over it (:class:`~vitstudy.widgets.LiveFigure`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..plots import ImageMosaic, grid_shape, new_figure
from ..widgets import ExplorerView, LiveDrawings, explorer_interactive
from .exits import Simulation, confidence, simulate
from .study import ExitStudy, exits_label, parse_exits


@dataclass
class ExitPage:
    """What the explorer shows for one setting: the summary row with the page's numbers, the whole test set's
    simulation, and the page's images with their labels, right or wrong, and the blocks of the histogram."""

    summary: dict[str, Any]
    simulation: Simulation
    images: torch.Tensor  # [shown, C, H, W]
    labels: list[str]
    right: list[bool]
    blocks: list[int]  # the exits, then the last block


def simulated(
    study: ExitStudy, variant: str, exits: tuple[int, ...], policy: str, threshold: float, batch_size: int
) -> tuple[Simulation, dict[str, Any]]:
    """The whole test set under one setting: its simulation and its summary row (simulated once)."""
    sim = simulate(study.logits(variant, exits), exits, study.depth, threshold, policy, batch_size=batch_size)
    return sim, study.evaluate(variant, exits, threshold, policy, batch_size, simulation=sim)


def page_images(study: ExitStudy, start: int, count: int) -> torch.Tensor:
    """Test images ``start`` … ``start + count - 1`` (fewer at the end of the set) as ``[shown, C, H, W]``."""
    shown = range(start, min(start + count, len(study.features["test"].targets)))
    return torch.stack([study.splits.test[i][0] for i in shown]) if len(shown) else torch.zeros(0, 1, 8, 8)


def exit_page(
    study: ExitStudy,
    variant: str,
    exits: tuple[int, ...],
    simulation: tuple[Simulation, dict[str, Any]],
    images: torch.Tensor,
    start: int,
) -> ExitPage:
    """The page of ``images`` (test images from ``start``) under a setting's ``simulation`` (:func:`simulated`):
    each labelled with its exit block, its confidence there and right or wrong."""
    sim, row = simulation
    targets = study.features["test"].targets
    shown = torch.arange(start, start + len(images))
    conf = confidence(study.logits(variant, exits)[shown, sim.exit_column[shown]])  # at the exit each image took
    right = (sim.predictions[shown] == targets[shown]).tolist()
    labels = [
        f"exit {int(sim.exit_block[i])} · {c:.2f}\n{'right' if ok else 'wrong'}"
        for i, c, ok in zip(shown, conf.tolist(), right)
    ]
    # what the grid labels, as numbers: which images, the block each left after, how many are right
    summary = {
        **row,
        "first_image": start,
        "shown_exit_blocks": sim.exit_block[shown].tolist(),
        "shown_right": sum(right),
    }
    return ExitPage(summary, sim, images, labels, right, [*exits, study.depth])


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
    setting = simulated(study, variant, exits, policy, threshold, batch_size)  # simulate once a move
    page = exit_page(study, variant, exits, setting, page_images(study, start, count), start)
    fig = explorer_figure(page.images, page.labels, page.right, page.summary, page.blocks, columns)
    return ExplorerView(page.summary, fig, details=page.simulation)


class ExitDrawing:
    """The explorer's figure for one layout (images per page, their size), built once: image mosaic
    (each framed green if right, red if wrong, labelled under it) beside a histogram of exit blocks, with top-1 and
    speed-up in the title. :meth:`update` refills the mosaic, the bars' heights and the title in place (new bars
    for another exit set)."""

    def __init__(
        self, fig: Figure, count: int, image_hw: tuple[int, int], blocks: Sequence[int], columns: int = 8
    ) -> None:
        rows, columns = grid_shape(count, columns)
        # ~0.8 in per image keeps the 28-px images and their 6.5-pt labels legible at the widget's 100 dpi while the
        # PNG stays small. Axes are placed by hand (in inches) rather than by constrained layout, whose extra
        # measuring draw cost as much as the render itself: rendering was most of a slider move's time.
        grid_width, hist_width, title_height = 0.8 * columns, 1.45, 0.35
        width, height = grid_width + 2.2, max(0.9 * rows + 0.6, 2.4)
        fig.set_size_inches(width, height)

        def axes_at(left: float, bottom: float, w: float, h: float) -> Axes:
            return fig.add_axes((left / width, bottom / height, w / width, h / height))

        grid_ax = axes_at(0.05, 0.05, grid_width, height - title_height - 0.05)
        # room for the tick labels and the two-line "(end)" label left of and under the histogram
        hist_ax = axes_at(width - hist_width - 0.1, 0.7, hist_width, height - title_height - 0.7)
        self.figure, self.hist_ax = fig, hist_ax
        self.mosaic = ImageMosaic(grid_ax, count, image_hw, columns)
        self.blocks, self.bars = [], hist_ax.bar([], [])
        self._set_blocks(blocks)
        hist_ax.set(xlabel="exit block", ylabel="test images (%)", ylim=(0, 100))
        hist_ax.grid(axis="y", alpha=0.3)
        self.title = fig.suptitle("", fontsize=8, y=1 - 0.1 / height, va="top")

    def _set_blocks(self, blocks: Sequence[int]) -> None:
        """One bar per exit block and the last, ticked with its number: another exit set replaces the bars only."""
        self.bars.remove()
        self.blocks = list(blocks)
        positions = range(len(self.blocks))
        self.bars = self.hist_ax.bar(positions, [0.0] * len(self.blocks), color="tab:blue")
        self.hist_ax.set_xticks(positions, [str(b) for b in self.blocks[:-1]] + [f"{self.blocks[-1]}\n(end)"])
        self.hist_ax.relim()  # the x range of these bars only
        self.hist_ax.autoscale_view()

    def background_key(self) -> tuple[int, ...]:
        """What the figure's unmoving part depends on (:class:`~vitstudy.widgets.LiveFigure`): the histogram's ticks,
        one per exit block."""
        return tuple(self.blocks)

    def moving_artists(self) -> list[Artist]:
        """What a move redraws on a live figure, in drawing order (:class:`~vitstudy.widgets.LiveFigure`): the
        mosaic and its labels, the bars with the grid lines and the frame drawn over them, the title."""
        frame = [*self.hist_ax.yaxis.get_gridlines(), *self.hist_ax.spines.values()]
        return [self.mosaic.image, *self.mosaic.labels, *self.bars, *frame, self.title]

    def update(
        self,
        images: torch.Tensor,
        labels: Sequence[str],
        right: Sequence[bool],
        summary: dict[str, Any],
        blocks: Sequence[int],
    ) -> Figure:
        """Show a page and a setting's summary (as many images as the drawing was built for) over the exit
        ``blocks`` (the exits, then the last block); returns the figure."""
        if list(blocks) != self.blocks:
            self._set_blocks(blocks)
        label_colors = ["black" if ok else "tab:red" for ok in right]
        border_colors = ["tab:green" if ok else "tab:red" for ok in right]
        self.mosaic.update(images, labels, label_colors, border_colors)
        for bar, block in zip(self.bars, self.blocks, strict=True):
            bar.set_height(summary[f"at_{block}_pct"])
        self.title.set_text(
            f"{summary['variant']} · exits {summary['exits']} · {summary['policy']} · threshold "
            f"{summary['threshold']:g}: top-1 {summary['top1']:.2f}% (plain {summary['plain_top1']:.2f}%), exited "
            f"{summary['exited_pct']:.1f}%, FLOP-ideal speed-up {summary['ideal_speedup']:.2f}x"
        )
        return self.figure


def explorer_figure(
    images: torch.Tensor,
    labels: Sequence[str],
    right: Sequence[bool],
    summary: dict[str, Any],
    blocks: Sequence[int],
    columns: int = 8,
) -> Figure:
    """One :class:`ExitDrawing` of a page on a new figure."""
    drawing = ExitDrawing(new_figure((1, 1), layout=None), len(images), tuple(images.shape[-2:]), blocks, columns)
    return drawing.update(images, labels, right, summary, blocks)


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


class ExitExplorer:
    """The widget's side of the explorer: every variant's and exit set's test logits computed when it is built, a
    setting's simulation and summary computed once (an LRU cache keyed by the controls), a page of test images read
    once, and one :class:`ExitDrawing` per layout on a live figure, redrawn in place. It reads ``study`` as it is
    when the widget is built (add variants before)."""

    def __init__(self, study: ExitStudy, batch_size: int = 64, count: int = 24, columns: int = 8, cached: int = 64):
        self.study, self.batch_size, self.count, self.columns = study, batch_size, count, columns
        self.simulated = functools.lru_cache(maxsize=cached)(functools.partial(simulated, study))
        self.page_images = functools.lru_cache(maxsize=cached)(functools.partial(page_images, study))
        self.drawings = LiveDrawings()
        for variant, exits in study.models:  # every choice the dropdowns offer: no move waits for a head's logits
            study.logits(variant, exits)

    def view(self, variant: str, exits: str, policy: str, threshold: float, start: int) -> ExplorerView:
        """The view of the controls' values, as :func:`explore` computes it, drawn on the layout's live figure."""
        blocks = parse_exits(exits)
        setting = self.simulated(variant, blocks, policy, threshold, self.batch_size)
        page = exit_page(self.study, variant, blocks, setting, self.page_images(start, self.count), start)
        layout = (len(page.images), tuple(page.images.shape[-2:]))
        drawing = self.drawings.get(layout, lambda fig: ExitDrawing(fig, *layout, page.blocks, self.columns))
        figure = drawing.update(page.images, page.labels, page.right, page.summary, page.blocks)
        return ExplorerView(page.summary, figure, details=page.simulation)


def explorer_widget(
    study: ExitStudy, show: bool = True, batch_size: int = 64, count: int = 24
) -> ipywidgets.interactive:
    """The explorer as a widget: threshold slider, variant / exits / policy selectors, first image shown. The
    variants are those the study holds (``joint`` once an experiment added it: ``ExitStudy.add_variant``).

    Each move returns the new :class:`ExplorerView` as ``widget.result`` (its figure the widget's live one, redrawn
    by :class:`ExitExplorer`, which is ``widget.explorer``); callback errors are raised.
    """
    variants = list(dict.fromkeys(v for v, _ in study.models))
    exit_sets = list(dict.fromkeys(exits_label(e) for _, e in study.models))
    explorer = ExitExplorer(study, batch_size, count)
    test_size = len(study.features["test"].targets)
    widget = explorer_interactive(
        explorer.view,
        readout,
        show=show,
        variant=ipywidgets.Dropdown(options=variants, value="separate" if "separate" in variants else variants[0]),
        exits=ipywidgets.Dropdown(options=exit_sets, value=exit_sets[-1], description="exits after"),
        policy=ipywidgets.ToggleButtons(options=["sample", "batch"], value="sample"),
        threshold=ipywidgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.005, readout_format=".3f"),
        start=ipywidgets.IntSlider(0, 0, max(0, test_size - count), count, description="first image"),
    )
    widget.explorer = explorer
    return widget
