"""The dropped-patch explorer (notebook 06): which patches SkipViT keeps at each stage, over the image.

:func:`trace_image` computes (per-stage traces, class probabilities with token dropping on and off, a summary),
:func:`explorer_figure` draws that (a :class:`DropDrawing`), :func:`explore` does both and returns a
:class:`~vitstudy.widgets.ExplorerView`; :func:`explorer_widget` puts sliders over it (tests drive it with
``widgets.set_controls``), through a :class:`PatchDropExplorer` that traces each (image, setting) once and redraws
one live figure per layout in place (only its panels' pixels and titles: :class:`~vitstudy.widgets.LiveFigure`).
:func:`load_image` reads an image file as a model's input. The panels, class names and the bad-setting message are
shared with ToMe's explorer (:mod:`vitstudy.explorer_panels`). Notebook 06's widget, with ToMe as a further rule
beside SkipViT's modes, and its choice of model and images are ``vitstudy.experiments.skipvit.patch_drop_explorer``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets
import numpy as np
import timm.data
import torch
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data import CorruptImageError
from ..explorer_panels import (
    MessageDrawing,
    class_names,
    panel_figure,
    predictions_title,
    set_pixels,
    upsample_patches,
)
from ..plots import display_image, new_figure
from ..widgets import ExplorerView, LiveDrawings, explorer_interactive
from .patch import Stage, apply_skipvit, configure, dropping, trace_forward
from .settings import MODES, SkipViTSettings

GREY = np.array([0.55, 0.55, 0.55, 0.8])  # RGBA over a dropped patch


# ----------------------------------------------------------------------------------------------------------
# Inputs: an image file, class names


def load_image(path: str | os.PathLike[str], model: nn.Module) -> torch.Tensor:
    """An image file as the model's input [C, H, W], with timm's eval transform for that model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    config = timm.data.resolve_model_data_config(model)
    try:
        with Image.open(path) as image:
            image = image.convert("L" if config["input_size"][0] == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise CorruptImageError(f"cannot decode image {str(path)!r}: {err}") from err
    return timm.data.create_transform(**config, is_training=False)(image)


# ----------------------------------------------------------------------------------------------------------
# Computing: what SkipViT does to one image


@dataclass
class DropTrace:
    """What SkipViT did to one image under one setting: computed by :func:`trace_image`, drawn by
    :func:`explorer_figure`."""

    settings: SkipViTSettings
    stages: list[Stage]  # one per drop layer, for a batch of one image
    grid_size: tuple[int, int]  # patch rows and columns
    probabilities_dropping_on: torch.Tensor  # [classes]
    probabilities_dropping_off: torch.Tensor  # [classes]
    summary: dict[str, Any]


def trace_image(
    model: nn.Module,
    image: torch.Tensor,
    settings: SkipViTSettings,
    classes: Sequence[str] | None = None,
    label: int | None = None,
    probabilities_dropping_off: torch.Tensor | None = None,
) -> DropTrace:
    """Run one image [C, H, W] (already normalised) through the model with ``settings``, token dropping on and off.

    The model is patched if it is not yet, put in eval mode, and keeps its previous SkipViT settings afterwards.
    ``probabilities_dropping_off``: the image's :func:`dropping_off_probabilities` when the caller has them (they do
    not depend on ``settings``); then only the forward with dropping on runs.
    """
    names = class_names(_ready(model), classes)
    previous = model.skipvit
    configure(model, settings)
    try:
        logits_on, stages = trace_forward(model, image.unsqueeze(0).to(next(model.parameters()).device))
    finally:
        configure(model, previous)
    if probabilities_dropping_off is None:
        probabilities_dropping_off = dropping_off_probabilities(model, image)
    grid_size = tuple(model.patch_embed.grid_size)
    n_patches = int(np.prod(grid_size))
    prob_on, prob_off = logits_on.softmax(-1)[0], probabilities_dropping_off
    summary = {
        "setting": settings.label,
        "drop_layers": [s.layer for s in stages],  # one per stage that dropped (none at ratio 0)
        "mode": settings.mode,
        "skip_layer": settings.skip_layer,
        "kept_per_stage": [int(s.kept.shape[1]) for s in stages],
        "dropped_per_stage": [int(s.dropped.shape[1]) for s in stages],
        "patches": n_patches,
        # what the figure greys at each stage: every patch not kept there (row-major patch indices)
        "greyed_patches_per_stage": [
            np.setdiff1d(np.arange(n_patches), s.kept[0].cpu().numpy()).tolist() for s in stages
        ],
        "prediction_dropping_on": names[int(prob_on.argmax())],
        "confidence_dropping_on": float(prob_on.max()),
        "prediction_dropping_off": names[int(prob_off.argmax())],
        "confidence_dropping_off": float(prob_off.max()),
        "label": names[label] if label is not None else None,
    }
    return DropTrace(settings, stages, grid_size, prob_on, prob_off, summary)


def dropping_off_probabilities(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Class probabilities [classes] of one image [C, H, W] with token dropping off: the stock timm forward, the
    same under every setting."""
    with dropping(_ready(model), False), torch.no_grad():
        return model(image.unsqueeze(0).to(next(model.parameters()).device)).softmax(-1)[0]


def _ready(model: nn.Module) -> nn.Module:
    """The model patched for SkipViT (if it is not yet) and in eval mode."""
    if not hasattr(model, "skipvit"):
        apply_skipvit(model)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# Drawing


def _route(settings: SkipViTSettings) -> str:
    """Which blocks the dropped tokens skip, in words."""
    if not settings.drop_layers:
        return "every token through every block"
    if settings.mode != "skip":
        what = "fused into one token" if settings.mode == "fused" else "dropped for good"
        return f"tokens dropped after block(s) {', '.join(map(str, settings.drop_layers))} are {what}"
    end = settings.skip_layer - 1
    spans = [
        f"{layer + 1}–{end}" if layer + 1 < end else (str(end) if layer + 1 == end else "none")
        for layer in settings.drop_layers
    ]
    return f"dropped tokens skip blocks {' / '.join(spans)} and rejoin as the input of block {settings.skip_layer}"


class DropDrawing:
    """The explorer's figure for one layout (number of stages, image shape), built once: the image titled with the
    predictions, then per stage its [CLS]-attention heat map and its kept patches (dropped ones greyed).
    :meth:`update` sets the pixels and texts in place. Axes are placed by hand: constrained layout measures the
    figure in a second draw on every render."""

    def __init__(self, fig: Figure, stages: int, image_shape: tuple[int, ...]) -> None:
        self.figure = fig
        self.axes, self.title = panel_figure(fig, 1 + 2 * max(stages, 1))
        blank = display_image(torch.zeros(image_shape))
        cmap = "gray" if blank.ndim == 2 else None
        self.image = self.axes[0].imshow(blank, cmap=cmap)
        heat_axes, kept_axes = self.axes[1 : 1 + 2 * stages : 2], self.axes[2 : 2 + 2 * stages : 2]
        self.heat_bases = [ax.imshow(blank, cmap=cmap) for ax in heat_axes]
        self.heats = [ax.imshow(np.zeros(blank.shape[:2]), cmap="inferno", alpha=0.6) for ax in heat_axes]
        self.kept_bases = [ax.imshow(blank, cmap=cmap) for ax in kept_axes]
        self.overlays = [ax.imshow(np.zeros((*blank.shape[:2], 4))) for ax in kept_axes]
        if not stages:
            self.axes[1].text(0.5, 0.5, "no dropping\n(ratio 0 or no drop layer)", ha="center", va="center", fontsize=8)

    def moving_artists(self) -> list[Artist]:
        """What a move redraws on a live figure, in drawing order (:class:`~vitstudy.widgets.LiveFigure`): every
        panel's images and title, the figure's title."""
        images = [self.image, *(a for pair in zip(self.heat_bases, self.heats) for a in pair)]
        images += [a for pair in zip(self.kept_bases, self.overlays) for a in pair]
        return [*images, *(ax.title for ax in self.axes), self.title]

    def update(self, image: np.ndarray, trace: DropTrace) -> Figure:
        """Show ``image`` (as :func:`~vitstudy.plots.display_image` gives it) under ``trace``; returns the figure."""
        summary, n_patches = trace.summary, trace.summary["patches"]
        for shown in (self.image, *self.heat_bases, *self.kept_bases):
            set_pixels(shown, image)
        predictions = [
            ("dropping on", summary["prediction_dropping_on"], summary["confidence_dropping_on"]),
            ("dropping off", summary["prediction_dropping_off"], summary["confidence_dropping_off"]),
        ]
        self.axes[0].title.set_text(predictions_title(summary["label"], predictions))
        for number, stage in enumerate(trace.stages):
            scores = np.full(n_patches, np.nan)
            scores[stage.present[0].cpu().numpy()] = stage.scores[0].float().cpu().numpy()
            set_pixels(self.heats[number], upsample_patches(scores, trace.grid_size, image.shape[:2]))
            self.axes[1 + 2 * number].title.set_text(f"[CLS] attention, block {stage.layer}")
            dropped = np.zeros(n_patches, dtype=bool)
            dropped[summary["greyed_patches_per_stage"][number]] = True
            overlay = np.zeros((*image.shape[:2], 4))
            overlay[upsample_patches(dropped, trace.grid_size, image.shape[:2]).astype(bool)] = GREY
            self.overlays[number].set_data(overlay)
            self.axes[2 + 2 * number].title.set_text(
                f"after block {stage.layer}: {stage.kept.shape[1]}/{n_patches} kept (grey: dropped)"
            )
        self.title.set_text(f"{trace.settings.label}: {_route(trace.settings)}")
        return self.figure


def explorer_figure(image: torch.Tensor, trace: DropTrace) -> Figure:
    """One :class:`DropDrawing` of ``trace`` on a new figure. ``image`` [C, H, W] is the one ``trace`` was computed
    from."""
    drawing = DropDrawing(new_figure((1, 1), layout=None), len(trace.stages), tuple(image.shape))
    return drawing.update(display_image(image), trace)


def explore(
    model: nn.Module,
    image: torch.Tensor,
    settings: SkipViTSettings,
    classes: Sequence[str] | None = None,
    label: int | None = None,
) -> ExplorerView:
    """One image [C, H, W] (already normalised) under ``settings``: the summary (kept/dropped patches per stage,
    predictions with token dropping on and off), the figure, and the per-stage :class:`Stage` traces."""
    trace = trace_image(model, image, settings, classes, label)
    return ExplorerView(trace.summary, explorer_figure(image, trace), trace.stages)


def readout(summary: dict[str, Any]) -> str:
    """One or two sentences a person reads under the figure: per stage the patches kept and where the others
    go, then the prediction with dropping on and off (and the true class when known)."""
    if "error" in summary:
        return f"Not a valid setting: {summary['error']}"
    if not summary["kept_per_stage"]:
        route = f"No patch is dropped: all {summary['patches']} go through every block"
    else:
        present = [summary["patches"], *summary["kept_per_stage"][:-1]]  # what each stage ranks
        where = {
            "skip": f"skip to block {summary['skip_layer']}",
            "fused": "are fused into one token",
            "drop": "are dropped for good",
        }[summary["mode"]]
        route = "; ".join(
            f"after block {layer}: {kept} of {total} patches kept, {dropped} {where}"
            for layer, kept, dropped, total in zip(
                summary["drop_layers"], summary["kept_per_stage"], summary["dropped_per_stage"], present
            )
        )
    truth = f" (true class {summary['label']})" if summary["label"] is not None else ""
    return (
        f"{route[0].upper()}{route[1:]}. Prediction {summary['prediction_dropping_on']} "
        f"{summary['confidence_dropping_on']:.0%} with dropping, {summary['prediction_dropping_off']} "
        f"{summary['confidence_dropping_off']:.0%} without{truth}."
    )


# ----------------------------------------------------------------------------------------------------------
# The widget


def explorer_settings(first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str) -> SkipViTSettings:
    """Slider values → settings; ``second_layer = 0`` means one stage. Raises ValueError on a bad combination."""
    layers = (first_layer,) if second_layer == 0 else (first_layer, second_layer)
    return SkipViTSettings(layers, (ratio,) * len(layers), skip_layer if mode == "skip" else None, mode=mode)


class PatchDropExplorer:
    """The widget's side of the explorer: each (image, setting) traced once (an LRU cache keyed by the controls),
    each image's prediction with dropping off and its display pixels computed once, and one drawing per layout on a
    live figure, redrawn in place. It reads the model as it is (weights unchanged while the widget is shown)."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        cached: int = 64,
    ) -> None:
        self.model, self.images, self.labels, self.classes = model, images, labels, classes
        self.traced = functools.lru_cache(maxsize=cached)(self._trace)
        self.dropping_off = functools.lru_cache(maxsize=cached)(self._dropping_off)
        self.pixels = functools.lru_cache(maxsize=cached)(self._pixels)
        self.drawings = LiveDrawings()

    def _trace(self, index: int, settings: SkipViTSettings) -> DropTrace:
        label = int(self.labels[index]) if self.labels is not None else None
        off = self.dropping_off(index)
        return trace_image(self.model, self.images[index], settings, self.classes, label, off)

    def _dropping_off(self, index: int) -> torch.Tensor:
        return dropping_off_probabilities(self.model, self.images[index])

    def _pixels(self, index: int) -> np.ndarray:
        return display_image(self.images[index])

    def view(
        self, index: int, first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str
    ) -> ExplorerView:
        """Slider values in, the :class:`ExplorerView` :func:`explore` computes out, drawn on the layout's live
        figure; a bad layer combination gives a view that says what is allowed instead of raising (a user moving
        sliders is not an error)."""
        try:
            settings = explorer_settings(first_layer, second_layer, ratio, skip_layer, mode)
            settings.check_depth(len(self.model.blocks))
        except ValueError as err:
            return self.drawings.get("invalid", MessageDrawing).update(err)
        trace = self.traced(index, settings)
        layout = (len(trace.stages), tuple(self.images[index].shape))
        drawing = self.drawings.get(layout, lambda fig: DropDrawing(fig, *layout))
        summary = dict(trace.summary)  # a copy: the cached trace keeps its own
        return ExplorerView(summary, drawing.update(self.pixels(index), trace), trace.stages)


def explore_controls(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> Callable[..., ExplorerView]:
    """The explorer's callback: slider values in, :class:`ExplorerView` out (:meth:`PatchDropExplorer.view`)."""
    return PatchDropExplorer(model, images, labels, classes).view


def explorer_controls(model: nn.Module, images: torch.Tensor) -> dict[str, ipywidgets.Widget]:
    """The widget's controls, named as :meth:`PatchDropExplorer.view`'s arguments: the image, drop layer(s), ratio,
    skip layer and mode (notebook 06's widget adds its own rule to these)."""
    depth = len(model.blocks)
    return dict(
        index=ipywidgets.IntSlider(0, 0, max(len(images) - 1, 0), description="image"),
        first_layer=ipywidgets.IntSlider(min(6, depth - 1), 1, depth - 1, description="drop after"),
        second_layer=ipywidgets.IntSlider(0, 0, depth - 1, description="2nd drop (0=none)"),
        ratio=ipywidgets.FloatSlider(0.55, min=0.0, max=0.9, step=0.05, description="drop ratio"),
        skip_layer=ipywidgets.IntSlider(min(11, depth), 2, depth, description="back at block"),
        mode=ipywidgets.Dropdown(options=list(MODES), value="skip", description="mode"),
    )


def explorer_widget(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    show: bool = True,
) -> ipywidgets.interactive:
    """Sliders for the image, drop layer(s), ratio, skip layer and mode (:func:`explorer_controls`) over
    :func:`explore`, through a :class:`PatchDropExplorer` (``widget.explorer``)."""
    explorer = PatchDropExplorer(model, images, labels, classes)
    widget = explorer_interactive(explorer.view, readout, show=show, **explorer_controls(model, images))
    widget.explorer = explorer
    return widget
