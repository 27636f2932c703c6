"""The dropped-patch explorer (notebook 06): which patches SkipViT keeps at each stage, over the image.

:func:`trace_image` computes (per-stage traces, class probabilities with token dropping on and off, a summary),
:func:`explorer_figure` draws that, :func:`explore` does both and returns a :class:`~vitstudy.widgets.ExplorerView`;
:func:`explorer_widget` puts sliders over it (tests drive it with ``widgets.set_controls``). :func:`load_image` reads
an image file as a model's input. The study's choice of model and images for notebook 06 is
``vitstudy.experiments.skipvit.patch_drop_explorer``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets
import numpy as np
import timm.data
import torch
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data import CorruptImageError
from ..plots import display_image, draw_image_grid, new_figure
from ..widgets import ExplorerView, explorer_interactive
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


def class_names(model: nn.Module, classes: Sequence[str] | None = None) -> list[str]:
    """Given names, ImageNet's for a 1000-class head, else class indices as text."""
    if classes is not None:
        return list(classes)
    if model.num_classes == 1000:
        return [timm.data.ImageNetInfo().index_to_description(i) for i in range(1000)]
    return [str(i) for i in range(model.num_classes)]


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
) -> DropTrace:
    """Run one image [C, H, W] (already normalised) through the model with ``settings``, token dropping on and off.

    The model is patched if it is not yet, put in eval mode, and keeps its previous SkipViT settings afterwards.
    """
    if not hasattr(model, "skipvit"):
        apply_skipvit(model)
    names = class_names(model, classes)
    previous = model.skipvit
    configure(model, settings)
    model.eval()
    try:
        x = image.unsqueeze(0).to(next(model.parameters()).device)
        logits_on, stages = trace_forward(model, x)
        with dropping(model, False), torch.no_grad():
            logits_off = model(x)
    finally:
        configure(model, previous)
    grid_size = tuple(model.patch_embed.grid_size)
    n_patches = int(np.prod(grid_size))
    prob_on, prob_off = logits_on.softmax(-1)[0], logits_off.softmax(-1)[0]
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


# ----------------------------------------------------------------------------------------------------------
# Drawing


def _upsample(values: np.ndarray, grid_size: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """One value per patch [n_patches] → one per pixel [H, W]."""
    grid = values.reshape(grid_size)
    ph, pw = image_hw[0] // grid.shape[0], image_hw[1] // grid.shape[1]
    return np.kron(grid, np.ones((ph, pw)))


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


def explorer_figure(image: torch.Tensor, trace: DropTrace) -> Figure:
    """The image titled with the predictions, then per stage its [CLS]-attention heat map and its kept patches
    (dropped ones greyed). ``image`` [C, H, W] is the one ``trace`` was computed from."""
    summary, stages, n_patches = trace.summary, trace.stages, trace.summary["patches"]
    fig = new_figure((2.6 * (1 + 2 * max(len(stages), 1)), 3.1))
    axes = fig.subplots(1, 1 + 2 * max(len(stages), 1), squeeze=False)[0]
    truth = f"true: {summary['label']}\n" if summary["label"] is not None else ""
    title = (
        f"{truth}dropping on: {summary['prediction_dropping_on']} ({summary['confidence_dropping_on']:.0%})\n"
        f"dropping off: {summary['prediction_dropping_off']} ({summary['confidence_dropping_off']:.0%})"
    )
    draw_image_grid(axes[:1], image.unsqueeze(0), [title])
    shown = display_image(image)
    cmap = "gray" if shown.ndim == 2 else None
    for number, stage in enumerate(stages):
        scores = np.full(n_patches, np.nan)
        scores[stage.present[0].cpu().numpy()] = stage.scores[0].float().cpu().numpy()
        heat, over = axes[1 + 2 * number], axes[2 + 2 * number]
        heat.imshow(shown, cmap=cmap)
        heat.imshow(_upsample(scores, trace.grid_size, shown.shape[:2]), cmap="inferno", alpha=0.6)
        heat.set_title(f"[CLS] attention, block {stage.layer}", fontsize=7)
        dropped = np.zeros(n_patches, dtype=bool)
        dropped[summary["greyed_patches_per_stage"][number]] = True
        overlay = np.zeros((*shown.shape[:2], 4))
        overlay[_upsample(dropped, trace.grid_size, shown.shape[:2]).astype(bool)] = GREY
        over.imshow(shown, cmap=cmap)
        over.imshow(overlay)
        over.set_title(f"after block {stage.layer}: {stage.kept.shape[1]}/{n_patches} kept (grey: dropped)", fontsize=7)
    if not stages:
        axes[1].text(0.5, 0.5, "no dropping\n(ratio 0 or no drop layer)", ha="center", va="center", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{trace.settings.label}: {_route(trace.settings)}", fontsize=8)
    return fig


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


def _invalid_view(err: ValueError) -> ExplorerView:
    """What the explorer shows for a bad slider combination: a message naming what is allowed."""
    fig = new_figure((6, 1.2))
    fig.text(0.02, 0.5, f"not a valid setting: {err}", fontsize=7, va="center", wrap=True)
    return ExplorerView({"error": str(err)}, fig, [])


def explore_controls(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
):
    """The explorer's callback: slider values in, :class:`ExplorerView` out; a bad layer combination gives a
    view that says what is allowed instead of raising (a user moving sliders is not an error)."""

    def view(index: int, first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str):
        try:
            settings = explorer_settings(first_layer, second_layer, ratio, skip_layer, mode)
            settings.check_depth(len(model.blocks))
        except ValueError as err:
            return _invalid_view(err)
        label = int(labels[index]) if labels is not None else None
        return explore(model, images[index], settings, classes, label)

    return view


def explorer_widget(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    show: bool = True,
) -> ipywidgets.interactive:
    """Sliders for the image, drop layer(s), ratio, skip layer and mode over :func:`explore`."""
    depth = len(model.blocks)
    return explorer_interactive(
        explore_controls(model, images, labels, classes),
        readout,
        show=show,
        index=ipywidgets.IntSlider(0, 0, max(len(images) - 1, 0), description="image"),
        first_layer=ipywidgets.IntSlider(min(6, depth - 1), 1, depth - 1, description="drop after"),
        second_layer=ipywidgets.IntSlider(0, 0, depth - 1, description="2nd drop (0=none)"),
        ratio=ipywidgets.FloatSlider(0.55, min=0.0, max=0.9, step=0.05, description="drop ratio"),
        skip_layer=ipywidgets.IntSlider(min(11, depth), 2, depth, description="back at block"),
        mode=ipywidgets.Dropdown(options=list(MODES), value="skip", description="mode"),
    )
