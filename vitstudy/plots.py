"""Plot functions: data in, a matplotlib Figure out; no ``plt.show()``, no file I/O (see ``report.save_figure``)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix as count_confusions
from torchvision.utils import make_grid


def new_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    # plt.ioff keeps notebooks from showing each figure twice (once inline, once when returned).
    # layout=None for figures placed by hand: constrained layout measures every artist in an extra draw.
    with plt.ioff():
        return plt.figure(figsize=figsize, layout=layout)


def image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images ``[N, C, H, W]`` or ``[N, H, W]`` (a tensor or an array) as a float CPU tensor ``[N, C, H, W]``,
    each scaled to [0, 1] for display (any value range in, e.g. normalised model input)."""
    images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images.detach().cpu()
    images = (images.unsqueeze(1) if images.ndim == 3 else images).float()
    low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def display_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``[C, H, W]`` (any value range) scaled to [0, 1] for ``imshow``: ``[H, W]`` for one channel,
    ``[H, W, C]`` otherwise."""
    return _for_imshow(image_batch(image[None])[0])


def _for_imshow(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).squeeze(-1).numpy()  # [C, H, W] -> [H, W, C], or [H, W] for one channel


def draw_image_grid(
    axes: Sequence[Axes],
    images: torch.Tensor | np.ndarray,
    titles: Sequence[str] | None = None,
    title_colors: Sequence[str] | None = None,
    cmap: str = "gray",
    fontsize: float = 7,
) -> None:
    """Draw images ``[N, C, H, W]`` or ``[N, H, W]`` into the given axes (one each, the rest left blank)."""
    images = image_batch(images)
    for index, ax in enumerate(axes):
        ax.axis("off")
        if index >= len(images):
            continue
        shown = _for_imshow(images[index])
        ax.imshow(shown, cmap=cmap if shown.ndim == 2 else None)
        if titles is not None:
            color = title_colors[index] if title_colors is not None else "black"
            ax.set_title(titles[index], fontsize=fontsize, color=color)


def image_mosaic(
    images: torch.Tensor | np.ndarray,
    columns: int,
    border_colors: Sequence[str] | None = None,
    label_rows: int = 0,
    gap: int = 0,
    border: int = 2,
    cmap: str = "gray",
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Images ``[N, C, H, W]`` or ``[N, H, W]`` tiled into one RGB array ``[rows * cell_h, columns * cell_w, 3]``.

    Each cell is the image (scaled for display) in a ``border``-pixel frame of its colour (white when ``None``),
    above ``label_rows`` white pixel rows left free for a label, with ``gap`` white pixel columns on each side.
    Returns the array and the (x, y) pixel centre of each cell's label band, for ``Axes.text``. One array drawn by
    one ``imshow`` costs a fraction of one axes per image, which is what keeps a slider move fast."""
    images = image_batch(images) if len(images) else torch.zeros(0, 1, 8, 8)
    count, (height, width) = len(images), images.shape[-2:]
    rows, columns = grid_shape(count, columns)
    if images.shape[1] == 1:  # grey: the colour map's RGB, as imshow would show it
        rgb = torch.from_numpy(plt.get_cmap(cmap)(images[:, 0].numpy())[..., :3]).permute(0, 3, 1, 2)
    else:
        rgb = images[:, :3].double()
    frames = [to_rgb(c) for c in border_colors[:count]] if border_colors else [(1.0, 1.0, 1.0)] * count
    # [N, 3, H + 2 border, W + 2 border]: each frame filled with its colour, the image inside it
    cells = torch.tensor(frames, dtype=torch.float64).reshape(count, 3, 1, 1)
    cells = cells.repeat(1, 1, height + 2 * border, width + 2 * border)
    cells[:, :, border : border + height, border : border + width] = rgb
    cells = F.pad(cells, (gap, gap, 0, label_rows), value=1.0)  # the label band under, the gaps beside
    blank = torch.ones(rows * columns - count, *cells.shape[1:], dtype=cells.dtype)  # the last row's empty cells
    mosaic = make_grid(torch.cat([cells, blank]), nrow=columns, padding=0)  # [3, rows * cell_h, columns * cell_w]
    cell_h, cell_w = cells.shape[-2:]
    centres = [
        (
            (i % columns) * cell_w + (cell_w - 1) / 2,
            (i // columns) * cell_h + height + 2 * border + (label_rows - 1) / 2,
        )
        for i in range(count)
    ]
    return mosaic.permute(1, 2, 0).numpy(), centres


class ImageMosaic:
    """Images ``[N, C, H, W]`` as one mosaic on an axes, each framed in its border colour with its label under it,
    built once for ``count`` images of ``image_hw`` pixels and refilled in place by :meth:`update`: an explorer
    redraws the same artists on every move instead of building a figure.

    Sizes are mosaic pixels, set for 28-px images at ~0.8 in a cell: ``label_rows`` fit two label lines at
    ``fontsize``, ``gap`` keeps neighbouring labels such as "exit 12 · 0.95" apart."""

    def __init__(
        self,
        ax: Axes,
        count: int,
        image_hw: tuple[int, int],
        columns: int = 8,
        fontsize: float = 6.5,
        label_rows: int = 16,
        gap: int = 6,
    ) -> None:
        self.columns, self.label_rows, self.gap = columns, label_rows, gap
        blank, centres = image_mosaic(torch.zeros(count, 1, *image_hw), columns, None, label_rows, gap)
        self.image = ax.imshow(blank, interpolation="nearest")
        ax.set_axis_off()
        self.labels = [
            ax.text(x, y, "", ha="center", va="center", fontsize=fontsize, linespacing=1.0) for x, y in centres
        ]

    def update(
        self,
        images: torch.Tensor | np.ndarray,
        labels: Sequence[str],
        label_colors: Sequence[str] | None = None,
        border_colors: Sequence[str] | None = None,
    ) -> None:
        """Show ``images`` (as many as the mosaic was built for) with their labels and colours."""
        mosaic, _ = image_mosaic(images, self.columns, border_colors, self.label_rows, self.gap)
        self.image.set_data(mosaic)
        for index, (text, label) in enumerate(zip(self.labels, labels, strict=True)):
            text.set_text(label)
            text.set_color(label_colors[index] if label_colors is not None else "black")


def grid_shape(count: int, columns: int) -> tuple[int, int]:
    """Rows and columns of a grid holding ``count`` panels, ``columns`` wide (at least one row)."""
    return max(1, -(-count // columns)), columns


def image_grid(
    images: torch.Tensor | np.ndarray,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    title_colors: Sequence[str] | None = None,
    cmap: str = "gray",
) -> Figure:
    """A grid of images ``[N, C, H, W]`` or ``[N, H, W]`` (any value range; each is scaled for display)."""
    rows, columns = grid_shape(len(images), columns)
    fig = new_figure((1.3 * columns, 1.45 * rows))
    draw_image_grid(fig.subplots(rows, columns, squeeze=False).flat, images, titles, title_colors, cmap)
    return fig


def grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    colors: Sequence[str | None] | None = None,
    value_format: str | None = None,
) -> None:
    """Bars of several series side by side per group: ``series`` is ``(label, one value per group)``.

    NaN values (not measured) leave a gap. ``value_format`` (e.g. ``"%.2f"``) writes each value on its bar.
    """
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width  # centres the group of bars on its tick
        color = colors[i] if colors is not None else None
        values = pd.to_numeric(pd.Series(list(values)), errors="coerce").to_numpy(dtype=float)
        bars = ax.bar(x + offset, values, width, label=label, color=color)
        if value_format:
            ax.bar_label(bars, fmt=value_format, fontsize=7)
    ax.set_xticks(x, list(groups))


def learning_curves(history: pd.DataFrame) -> Figure:
    """Loss and top-1 per epoch, train next to validation."""
    fig = new_figure((9, 3.2))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("val", "--s")):
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, label=split)
        acc_ax.plot(history["epoch"], history[f"{split}_top1"], style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion(predictions: np.ndarray, targets: np.ndarray, count: int, normalize: bool = True) -> np.ndarray:
    """Confusion counts ``[count, count]`` (rows: true class; columns: predicted), or with ``normalize`` the % of
    each true class (0 for a class without images)."""
    labels = np.arange(count)
    if not normalize:
        return count_confusions(targets, predictions, labels=labels)
    return 100 * count_confusions(targets, predictions, labels=labels, normalize="true")


def confusion_matrix(
    predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str], normalize: bool = True
) -> Figure:
    """Confusion matrix heat map (rows: true class; columns: predicted), row-normalised to % by default."""
    matrix = confusion(predictions, targets, len(classes), normalize)
    fig = new_figure((6.5, 5.5))
    ax = fig.subplots()
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".0f" if normalize else "g",
        cmap="Blues",
        cbar=False,
        xticklabels=classes,
        yticklabels=classes,
        ax=ax,
        annot_kws={"fontsize": 7},
    )
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix (% of each true class)" if normalize else "",
    )
    ax.tick_params(labelsize=7)
    return fig


def prediction_grid(
    dataset: torch.utils.data.Dataset,
    predictions: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    start: int = 0,
    count: int = 24,
    only_errors: bool = False,
    columns: int = 8,
) -> Figure:
    """Images of ``dataset`` titled "predicted (true)", wrong ones in red; optionally only the wrong ones."""
    shown = np.flatnonzero(predictions != targets) if only_errors else np.arange(len(predictions))
    shown = shown[start : start + count]
    images = torch.stack([dataset[int(i)][0] for i in shown]) if len(shown) else torch.zeros(0, 1, 8, 8)
    titles = [f"{classes[predictions[i]]}\n({classes[targets[i]]})" for i in shown]
    colors = ["tab:red" if predictions[i] != targets[i] else "black" for i in shown]
    return image_grid(images, titles, columns=columns, title_colors=colors)
