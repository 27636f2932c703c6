"""What the token explorers of notebook 06 draw with, whichever rule they show (SkipViT's dropped patches,
ToMe's merged ones): square image panels placed by hand and redrawn in place, one value per patch as pixels,
class names that fit a panel's title, the message a bad setting shows instead of a figure, and
:class:`MergeDrawing`, which patches share a token (ToMe's visualisation idea: one colour per merged token, drawn
here on our own trace).

A live explorer keeps one figure per layout and only replaces pixels and texts on a move, so every piece here
builds its artists once and updates them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import timm.data
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from torch import nn

from .plots import display_image
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

    def moving_artists(self) -> list[Artist]:
        """What a move redraws on a live figure (:class:`~vitstudy.widgets.LiveFigure`): the message."""
        return [self.text]

    def update(self, err: ValueError) -> ExplorerView:
        self.text.set_text(f"not a valid setting: {err}")
        return ExplorerView({"error": str(err)}, self.figure, [])


# ----------------------------------------------------------------------------------------------------------
# Which patches share a token (ToMe's merges), drawn over the image

PIXELS_PER_PATCH = 16  # the merge overlay's resolution: a one-pixel outline is a thin line inside a patch
FILL_ALPHA = 0.55  # a merged group's colour over the image
OUTLINE = np.array([0.05, 0.05, 0.05, 0.95])  # RGBA of the border between two tokens, one of them merged
GOLDEN_RATIO = (5**0.5 - 1) / 2  # hue step between colours: consecutive groups get far-apart hues


def group_colours(count: int) -> np.ndarray:
    """``count`` distinct RGB colours [count, 3], consecutive ones far apart in hue and alternating in brightness."""
    hues = (np.arange(count) * GOLDEN_RATIO) % 1.0
    values = np.where(np.arange(count) % 2 == 0, 0.95, 0.7)
    return hsv_to_rgb(np.stack([hues, np.full(count, 0.85), values], axis=-1))


def merge_overlay(token_of_patch: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """RGBA [rows·s, columns·s, 4] (s = :data:`PIXELS_PER_PATCH`) over an image: the patches of every token that
    stands for two or more of them share one colour (groups numbered by their first patch, row-major) and each such
    token is outlined; a patch still alone stays clear, so that the merges stand out. ``token_of_patch``
    [n_patches] (row-major) names each patch's token (any integer ids)."""
    _, first_patch, owner = np.unique(token_of_patch, return_index=True, return_inverse=True)  # ids 0..tokens-1
    sizes = np.bincount(owner)
    merged = sizes[owner] > 1  # per patch: its token holds other patches too
    merged_tokens = np.flatnonzero(sizes > 1)
    merged_tokens = merged_tokens[np.argsort(first_patch[merged_tokens])]  # in the order of their first patch
    group_of_token = np.full(sizes.size, -1)
    group_of_token[merged_tokens] = np.arange(merged_tokens.size)
    rgba = np.zeros((owner.size, 4))
    rgba[merged, :3] = group_colours(merged_tokens.size)[group_of_token[owner[merged]]]
    rgba[merged, 3] = FILL_ALPHA
    pixels = PIXELS_PER_PATCH
    overlay = _per_pixel(rgba.reshape(*grid_size, 4), pixels)
    owner, inside = _per_pixel(owner.reshape(grid_size), pixels), _per_pixel(merged.reshape(grid_size), pixels)
    # one pixel on the left of / above each border between two tokens of which one is merged: a thin line
    across = (owner[:, :-1] != owner[:, 1:]) & (inside[:, :-1] | inside[:, 1:])
    down = (owner[:-1] != owner[1:]) & (inside[:-1] | inside[1:])
    overlay[:, :-1][across] = OUTLINE
    overlay[:-1][down] = OUTLINE
    return overlay


def _per_pixel(grid: np.ndarray, pixels: int) -> np.ndarray:
    """One value per patch [rows, columns, ...] → ``pixels`` × ``pixels`` of it per patch."""
    return grid.repeat(pixels, axis=0).repeat(pixels, axis=1)


class MergeDrawing:
    """The figure of which patches share a token, for one image shape, built once: the image titled with the
    predictions, then ``panels`` maps of the merged groups over it (:func:`merge_overlay`), e.g. after a chosen block
    and after the last. :meth:`update` sets the pixels and texts in place."""

    def __init__(self, fig: Figure, image_shape: tuple[int, ...], panels: int = 2) -> None:
        self.figure = fig
        self.axes, self.title = panel_figure(fig, 1 + panels)
        blank = display_image(torch.zeros(image_shape))
        cmap = "gray" if blank.ndim == 2 else None
        height, width = blank.shape[:2]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # imshow's own for the image: the overlay lies on it
        self.bases = [ax.imshow(blank, cmap=cmap) for ax in self.axes]
        self.overlays = [ax.imshow(np.zeros((1, 1, 4)), extent=extent, interpolation="nearest") for ax in self.axes[1:]]

    def moving_artists(self) -> list[Artist]:
        """What a move redraws on a live figure, in drawing order (:class:`~vitstudy.widgets.LiveFigure`): the
        image, each map's image and overlay, every panel's title, the figure's title."""
        maps = [artist for pair in zip(self.bases[1:], self.overlays) for artist in pair]
        return [self.bases[0], *maps, *(ax.title for ax in self.axes), self.title]

    def update(
        self,
        image: np.ndarray,
        image_title: str,
        maps: Sequence[tuple[np.ndarray, str]],
        grid_size: tuple[int, int],
        title: str,
    ) -> Figure:
        """Show ``image`` (as :func:`~vitstudy.plots.display_image` gives it) titled ``image_title``, and per panel
        one (token of each patch [n_patches], panel title) of ``maps``; returns the figure."""
        for shown in self.bases:
            set_pixels(shown, image)
        self.axes[0].title.set_text(image_title)
        for overlay, ax, (token_of_patch, panel_title) in zip(self.overlays, self.axes[1:], maps, strict=True):
            overlay.set_data(merge_overlay(np.asarray(token_of_patch), grid_size))
            ax.title.set_text(panel_title)
        self.title.set_text(title)
        return self.figure
