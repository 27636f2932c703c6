"""The dropped-patch explorer (notebook 06): which patches SkipViT keeps at each stage, over the image.

:func:`explore` is the whole logic (data in, Figure and a summary out); :func:`build_explorer` wraps it in
sliders with :func:`vitstudy.widgets.checked_interactive`, so tests drive it with ``set_controls``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .plots import new_figure
from .skipvit import MODES, SkipViTSettings, apply_skipvit, configure, dropping, trace_forward
from .widgets import checked_interactive

GREY = np.array([0.55, 0.55, 0.55, 0.8])  # RGBA over a dropped patch


def load_image(path: str | os.PathLike[str], model: nn.Module) -> torch.Tensor:
    """An image file as the model's input [C, H, W], with timm's eval transform for that model."""
    import timm.data
    from PIL import Image, UnidentifiedImageError

    from .data import CorruptImageError

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
        from timm.data import ImageNetInfo

        return [ImageNetInfo().index_to_description(i) for i in range(1000)]
    return [str(i) for i in range(model.num_classes)]


def _patch_grid(values: np.ndarray, model: nn.Module) -> np.ndarray:
    rows, cols = model.patch_embed.grid_size
    return values.reshape(rows, cols)


def _upsample(grid: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    ph, pw = image_hw[0] // grid.shape[0], image_hw[1] // grid.shape[1]
    return np.kron(grid, np.ones((ph, pw)))


def _display(image: torch.Tensor) -> np.ndarray:
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image.permute(1, 2, 0).squeeze(-1).numpy()


def explore(
    model: nn.Module,
    image: torch.Tensor,
    settings: SkipViTSettings,
    classes: Sequence[str] | None = None,
    label: int | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """Figure: the image, each stage's CLS-attention heat map and kept patches (dropped greyed), and the
    prediction with and without dropping; plus a summary dict. ``image`` is [C, H, W], already normalised."""
    if not hasattr(model, "skipvit"):
        apply_skipvit(model)
    names = class_names(model, classes)
    previous = model.skipvit
    configure(model, settings)
    model.eval()
    try:
        x = image.unsqueeze(0).to(next(model.parameters()).device)
        logits_on, trace = trace_forward(model, x)
        with dropping(model, False), torch.no_grad():
            logits_off = model(x)
    finally:
        configure(model, previous)
    n_patches = int(np.prod(model.patch_embed.grid_size))
    prob_on, prob_off = logits_on.softmax(-1)[0], logits_off.softmax(-1)[0]
    summary = {
        "setting": settings.label,
        "kept_per_stage": [int(s.kept.shape[1]) for s in trace],
        "patches": n_patches,
        "prediction_drop_on": names[int(prob_on.argmax())],
        "confidence_drop_on": float(prob_on.max()),
        "prediction_drop_off": names[int(prob_off.argmax())],
        "confidence_drop_off": float(prob_off.max()),
        "label": names[label] if label is not None else None,
    }
    fig = new_figure((2.6 * (1 + 2 * max(len(trace), 1)), 3.1))
    axes = fig.subplots(1, 1 + 2 * max(len(trace), 1), squeeze=False)[0]
    shown = _display(image)
    cmap = "gray" if shown.ndim == 2 else None
    axes[0].imshow(shown, cmap=cmap)
    truth = f"true: {summary['label']}\n" if label is not None else ""
    axes[0].set_title(
        f"{truth}drop on: {summary['prediction_drop_on']} ({summary['confidence_drop_on']:.0%})\n"
        f"drop off: {summary['prediction_drop_off']} ({summary['confidence_drop_off']:.0%})",
        fontsize=7,
    )
    for number, stage in enumerate(trace):
        scores = np.full(n_patches, np.nan)
        scores[stage.present[0].cpu().numpy()] = stage.scores[0].float().cpu().numpy()
        heat, over = axes[1 + 2 * number], axes[2 + 2 * number]
        heat.imshow(shown, cmap=cmap)
        heat.imshow(_upsample(_patch_grid(scores, model), shown.shape[:2]), cmap="inferno", alpha=0.6)
        heat.set_title(f"[CLS] attention, block {stage.layer}", fontsize=7)
        dropped = np.zeros(n_patches, dtype=bool)
        dropped[np.setdiff1d(np.arange(n_patches), stage.kept[0].cpu().numpy())] = True
        overlay = np.zeros((*shown.shape[:2], 4))
        overlay[_upsample(_patch_grid(dropped, model), shown.shape[:2]).astype(bool)] = GREY
        over.imshow(shown, cmap=cmap)
        over.imshow(overlay)
        over.set_title(f"after block {stage.layer}: {stage.kept.shape[1]}/{n_patches} kept (grey: dropped)", fontsize=7)
    if not trace:
        axes[1].text(0.5, 0.5, "no dropping\n(ratio 0 or no drop layer)", ha="center", va="center", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{settings.label}: {_route(settings)}", fontsize=8)
    return fig, summary


def _route(settings: SkipViTSettings) -> str:
    """Which blocks the dropped tokens skip, in words."""
    if not settings.drop_layers:
        return "every token through every block"
    if settings.mode != "skip":
        what = "fused into one token" if settings.mode == "fused" else "dropped for good"
        return f"tokens dropped after block(s) {', '.join(map(str, settings.drop_layers))} are {what}"
    end = settings.skip_layer - 1
    spans = [f"{layer + 1}–{end}" if layer + 1 < end else (str(end) if layer + 1 == end else "none")
             for layer in settings.drop_layers]  # fmt: skip
    return f"dropped tokens skip blocks {' / '.join(spans)} and rejoin as the input of block {settings.skip_layer}"


def explorer_settings(first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str) -> SkipViTSettings:
    """Slider values → settings; ``second_layer = 0`` means one stage. Raises ValueError on a bad combination."""
    layers = (first_layer,) if second_layer == 0 else (first_layer, second_layer)
    return SkipViTSettings(layers, (ratio,) * len(layers), skip_layer if mode == "skip" else None, mode=mode)


def explore_controls(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
):
    """The explorer's callback: slider values in, (Figure, summary) out; a bad layer combination gives a
    Figure that says what is allowed instead of raising (a user moving sliders is not an error)."""

    def show(index: int, first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str):
        try:
            settings = explorer_settings(first_layer, second_layer, ratio, skip_layer, mode)
            settings.check_depth(len(model.blocks))
        except ValueError as err:
            fig = new_figure((6, 1.2))
            fig.text(0.02, 0.5, f"not a valid setting: {err}", fontsize=7, va="center", wrap=True)
            return fig, {"error": str(err)}
        label = int(labels[index]) if labels is not None else None
        return explore(model, images[index], settings, classes, label)

    return show


def build_explorer(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    show: bool = True,
) -> ipywidgets.interactive:
    """Sliders for the image, drop layer(s), ratio, skip layer and mode over :func:`explore`."""
    depth = len(model.blocks)
    callback = explore_controls(model, images, labels, classes)

    def view(index: int, first_layer: int, second_layer: int, ratio: float, skip_layer: int, mode: str):
        fig, summary = callback(index, first_layer, second_layer, ratio, skip_layer, mode)
        if show:
            from IPython.display import display

            display(fig)
        plt.close(fig)  # pyplot tracks every figure; a slider session would pile them up
        return summary

    return checked_interactive(
        view,
        show=show,
        index=ipywidgets.IntSlider(0, 0, max(len(images) - 1, 0), description="image"),
        first_layer=ipywidgets.IntSlider(min(6, depth - 1), 1, depth - 1, description="drop after"),
        second_layer=ipywidgets.IntSlider(0, 0, depth - 1, description="2nd drop (0=none)"),
        ratio=ipywidgets.FloatSlider(0.55, min=0.0, max=0.9, step=0.05, description="drop ratio"),
        skip_layer=ipywidgets.IntSlider(min(11, depth), 2, depth, description="back at block"),
        mode=ipywidgets.Dropdown(options=list(MODES), value="skip", description="mode"),
    )
