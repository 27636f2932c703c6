"""What the token explorers of notebook 06 draw with, whichever rule they show (SkipViT's dropped patches,
ToMe's merged ones): square image panels placed by hand and redrawn in place, one value per patch as pixels,
class names that fit a panel's title, and the message a bad setting shows instead of a figure.

A live explorer keeps one figure per layout and only replaces pixels and texts on a move, so every piece here
builds its artists once and updates them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import timm.data
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from torch import nn

from .widgets import ExplorerView

PANEL_INCHES = (2.6, 3.1)  # one image panel with its title above it
TITLE_INCHES = 0.65  # the figure's title and a panel's three title lines
TITLE_CHARACTERS = 34  # what a 7-pt title line holds in a panel's width: longer class names are shortened


def class_names(model: nn.Module, classes: Sequence[str] | None = None) -> list[str]:
    """Given names, ImageNet's for a 1000-class head, else class indices as text."""
    if classes is not None:
        return list(classes)
    if model.num_classes == 1000:
        return [timm.data.ImageNetInfo().index_to_description(i) for i in range(1000)]
    return [str(i) for i in range(model.num_classes)]


def upsample_patches(values: np.ndarray, grid_size: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """One value per patch [n_patches] (row-major) → one per pixel [H, W]."""
    grid = values.reshape(grid_size)
    ph, pw = image_hw[0] // grid.shape[0], image_hw[1] // grid.shape[1]
    return np.kron(grid, np.ones((ph, pw), dtype=grid.dtype))


def panel(fig: Figure, number: int, panels: int) -> Axes:
    """Panel ``number``'s square axes under its title, centred in its column of a figure ``panels`` panels wide.
    The title's position is fixed, as matplotlib would otherwise measure the axes on every draw to place it."""
    (panel_width, height), margin = PANEL_INCHES, 0.05
    side, width = height - TITLE_INCHES - margin, panel_width * panels
    left = number * panel_width + (panel_width - side) / 2
    ax = fig.add_axes((left / width, margin / height, side / width, side / height))
    ax.axis("off")
    ax.set_title("", fontsize=7, y=1.0)
    return ax


def panel_figure(fig: Figure, panels: int) -> tuple[list[Axes], Text]:
    """Size ``fig`` for ``panels`` image panels side by side; their axes, and the figure's title line above them
    (empty until an update sets it)."""
    fig.set_size_inches(PANEL_INCHES[0] * panels, PANEL_INCHES[1])
    axes = [panel(fig, number, panels) for number in range(panels)]
    return axes, fig.suptitle("", fontsize=8, y=1 - 0.04 / PANEL_INCHES[1], va="top")


def set_pixels(shown: AxesImage, values: np.ndarray) -> None:
    """New pixels for an ``imshow`` image, its colour scale fitted to them as ``imshow`` fits a new image's."""
    shown.set_data(values)
    if values.ndim == 2:
        shown.autoscale()


def short_name(name: str) -> str:
    """A class name that fits a panel's title line (ImageNet's run to several synonyms)."""
    return textwrap.shorten(name, TITLE_CHARACTERS, placeholder="…")


def predictions_title(label: str | None, predictions: Sequence[tuple[str, str, float]]) -> str:
    """The image panel's title: the true class when known, then one line per (condition, class name, confidence),
    e.g. ("dropping on", "Coat", 0.8) -> "dropping on: Coat (80%)"."""
    lines = [] if label is None else [f"true: {short_name(label)}"]
    lines += [f"{condition}: {short_name(name)} ({confidence:.0%})" for condition, name, confidence in predictions]
    return "\n".join(lines)


class MessageDrawing:
    """What an explorer shows for a bad setting: one line naming what is allowed, updated in place."""

    def __init__(self, fig: Figure) -> None:
        fig.set_size_inches(6, 1.2)
        self.figure = fig
        self.text = fig.text(0.02, 0.5, "", fontsize=7, va="center", wrap=True)

    def update(self, err: ValueError) -> ExplorerView:
        self.text.set_text(f"not a valid setting: {err}")
        return ExplorerView({"error": str(err)}, self.figure, [])
