"""Notebook 06, the dropped-patch explorer: the model and the images it shows, and ToMe as a further rule.

SkipViT's explorer (trace, figure, widget) is the method's: :mod:`vitstudy.skipvit.explorer`. What the notebook
feeds it is the study's: the scale's cached baseline (notebook 00) on Fashion-MNIST or on cluttered Fashion-MNIST
(trained once, then cached), or any timm ViT with one image file (:func:`explorer_inputs`).

ToMe's rule lives here because it joins two peer cores (the SkipViT core never imports ToMe): :func:`trace_merges`
runs one image through a ToMe copy of the model (:func:`merge_model`, sharing its weights) and records which patches
every token stands for after each block (``tome.trace_blocks``); :func:`explore_merges` draws that
(:class:`vitstudy.explorer_panels.MergeDrawing`); :class:`TokenRuleExplorer` and :func:`explorer_widget` put the
rule beside SkipViT's modes in one widget, which shows ToMe's slider r (and the block to show) only while ToMe is
chosen, and SkipViT's sliders only while it is not.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import ipywidgets
import numpy as np
import torch
from torch import nn

from ... import tome
from ...cluttered import on_cluttered
from ...config import Scale, check_choice, get_scale
from ...explorer_panels import MergeDrawing, MessageDrawing, class_names, predictions_title
from ...models import create_model
from ...plots import display_image, new_figure
from ...skipvit import apply_skipvit, load_image, remove_skipvit
from ...skipvit import readout as drop_readout
from ...skipvit.explorer import PatchDropExplorer, explorer_controls
from ...skipvit.settings import MODES
from ...train import baseline
from ...widgets import ExplorerView, LiveDrawings, explorer_interactive

EXPLORER_DATASETS = ("fashion_mnist", "fashion_mnist_cluttered")


class ExplorerInputs(NamedTuple):
    """What the explorer shows: a SkipViT-patched model and images [N, C, H, W] with labels and class names."""

    model: nn.Module
    images: torch.Tensor
    labels: list[int] | None  # None for an image file
    classes: list[str] | None  # None: vitstudy.skipvit.class_names() picks ImageNet's or indices


def explorer_inputs(
    scale: Scale | str | None = None,
    image_path: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    count: int = 64,
    dataset: str = "fashion_mnist",
) -> ExplorerInputs:
    """Notebook 06's model and images: the scale's cached baseline (notebook 00) and its first ``count`` test
    images by default; ``dataset="fashion_mnist_cluttered"``: the same recipe trained (once, then cached) on
    cluttered canvases (:mod:`vitstudy.cluttered`), and their test images; ``image_path`` for one image file;
    ``model_name`` (with ``weights`` or ``pretrained``) for any timm ViT, which needs ``image_path``."""
    check_choice("dataset", dataset, EXPLORER_DATASETS)
    if model_name is not None and image_path is None:
        raise ValueError(
            f"MODEL_NAME={model_name!r} needs IMAGE_PATH: the default data set's 28x28 grey images fit only the "
            "study's small models; set IMAGE_PATH to an image file, or MODEL_NAME = None"
        )
    if model_name is None:
        scale = scale if isinstance(scale, Scale) else get_scale(scale)
        if dataset == "fashion_mnist_cluttered":
            scale = dataclasses.replace(scale, train=on_cluttered(scale.train))
        run = baseline(scale)
        model, classes = run.model, run.splits.classes
    else:
        model, classes = create_model(model_name, pretrained=pretrained, weights=weights).eval(), None
    apply_skipvit(model)
    if image_path is not None:
        return ExplorerInputs(model, load_image(image_path, model).unsqueeze(0), None, classes)
    test = run.splits.test
    shown = range(min(count, len(test)))
    images = torch.stack([test[i][0] for i in shown])
    return ExplorerInputs(model, images, [int(test[i][1]) for i in shown], classes)


# ----------------------------------------------------------------------------------------------------------
# ToMe as a rule: which patches merge into which token, for one image

TOME_RULE = "tome"  # the widget's mode choice for ToMe, beside SkipViT's MODES


def merge_model(model: nn.Module) -> nn.Module:
    """``model`` ready for ToMe, in eval mode: itself when :func:`~vitstudy.tome.apply_tome` patched it, else a copy
    patched by it. The copy shares the model's weights (nothing to duplicate for a large ViT) and drops a SkipViT
    patch, as the two patches do not compose on one model."""
    if isinstance(model, tome.ToMeMixin):
        return model.eval()
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    merged = remove_skipvit(copy.deepcopy(model, memo=shared))
    return tome.apply_tome(merged).eval()


def largest_fitting_r(model: nn.Module) -> int:
    """The largest r that every block of ``model`` (a timm ViT, patched or not) can merge: a block merges at most
    half of the patch tokens entering it, and each earlier block leaves it r fewer."""
    patches, prefix, depth = model.patch_embed.num_patches, model.num_prefix_tokens, len(model.blocks)
    r = patches // 2
    while r > 0 and tome.removed_per_layer(patches + prefix, [r] * depth, prefix)[-1] < r:
        r -= 1
    return r


def check_r_fits(model: nn.Module, r: int) -> None:
    """Refuse an r some block cannot merge, in one line naming the block and the largest r that fits.

    ToMe itself caps such a block quietly at half of its patch tokens; the explorer refuses instead, so that the r
    it reports per block is the r the slider asked for."""
    tome.parse_r(len(model.blocks), r)  # not an integer >= 0: its own one line
    patches, prefix, depth = model.patch_embed.num_patches, model.num_prefix_tokens, len(model.blocks)
    counts = tome.token_counts(patches + prefix, [r] * depth, prefix)
    for block, (entering, merged) in enumerate(zip(counts, tome.removed_per_layer(counts[0], [r] * depth, prefix)), 1):
        if merged < r:
            raise ValueError(
                f"r={r} is too large: block {block} receives {entering - prefix} patch tokens and merges at most half "
                f"of them ({merged}); with {patches} patches and {depth} blocks, r is allowed from 0 to "
                f"{largest_fitting_r(model)}"
            )


def check_block(model: nn.Module, after_block: int) -> None:
    """Refuse a block to show that the model does not have, in one line."""
    depth = len(model.blocks)
    if isinstance(after_block, bool) or not isinstance(after_block, int) or not 1 <= after_block <= depth:
        raise ValueError(f"after_block={after_block!r} is not allowed: a block from 1 to {depth}")


@dataclass
class MergeTrace:
    """What ToMe did to one image at one r: computed by :func:`trace_merges`, drawn by :func:`merge_view`."""

    r: int
    token_of_patch: list[np.ndarray]  # per block: [n_patches] which token (0 = first after [CLS]) holds each patch
    grid_size: tuple[int, int]  # patch rows and columns
    probabilities_merging_on: torch.Tensor  # [classes]
    probabilities_merging_off: torch.Tensor  # [classes]
    summary: dict[str, Any]


def token_of_patch(source: torch.Tensor | None, patches: int, num_prefix_tokens: int) -> np.ndarray:
    """Which token holds each patch [patches], from one image's ToMe source [1, N, N₀] (None: no merge yet, each
    patch its own token)."""
    if source is None:
        return np.arange(patches)
    owner = np.full(patches, -1)
    for token, group in enumerate(tome.merge_groups(source, num_prefix_tokens)[0]):
        owner[group] = token
    return owner


def stock_probabilities(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Class probabilities [classes] of one image [C, H, W] through the stock timm forward (ToMe's r = 0, SkipViT
    off): the prediction without merging."""
    model = merge_model(model)
    with tome.merging(model, 0), torch.no_grad():
        return model(image.unsqueeze(0).to(next(model.parameters()).device)).softmax(-1)[0]


def trace_merges(
    model: nn.Module,
    image: torch.Tensor,
    r: int,
    classes: Sequence[str] | None = None,
    label: int | None = None,
    probabilities_merging_off: torch.Tensor | None = None,
) -> MergeTrace:
    """Run one image [C, H, W] (already normalised) through ``model`` with ToMe merging ``r`` tokens in every block
    (:func:`merge_model`; refused in one line when a block cannot, :func:`check_r_fits`): which token holds each
    patch after every block, the tokens left, the FLOP ideal, and the prediction with merging on and off.
    ``probabilities_merging_off``: the image's stock prediction when the caller has it (the same for every r)."""
    model = merge_model(model)
    check_r_fits(model, r)
    names = class_names(model, classes)
    prefix, patches = model.num_prefix_tokens, model.patch_embed.num_patches
    with tome.merging(model, r):
        logits, states = tome.trace_blocks(model, image.unsqueeze(0).to(next(model.parameters()).device))
    if probabilities_merging_off is None:
        probabilities_merging_off = stock_probabilities(model, image)
    prob_on, prob_off = logits.softmax(-1)[0], probabilities_merging_off
    flops_off, flops_on = tome.schedule_flops(model, 0), tome.schedule_flops(model, r)
    counts = [*states[-1].counts, int(states[-1].x.shape[1])]  # entering each block, then leaving the last
    summary = {
        "rule": TOME_RULE,
        "r": r,
        "merged_per_block": [before - after for before, after in zip(counts, counts[1:])],
        "tokens": counts[0],  # entering block 1: the patches and the prefix tokens ([CLS])
        "tokens_after_block": counts[1:],
        "patches": patches,
        "prefix_tokens": prefix,
        "gflops_merging_off": flops_off / 1e9,
        "gflops_merging_on": flops_on / 1e9,
        "flop_ideal_speedup": flops_off / flops_on,
        "prediction_merging_on": names[int(prob_on.argmax())],
        "confidence_merging_on": float(prob_on.max()),
        "prediction_merging_off": names[int(prob_off.argmax())],
        "confidence_merging_off": float(prob_off.max()),
        "label": names[label] if label is not None else None,
    }
    owners = [token_of_patch(state.source, patches, prefix) for state in states]
    grid_size = tuple(model.patch_embed.grid_size)
    return MergeTrace(r, owners, grid_size, prob_on, prob_off, summary)


def merge_view(drawing: MergeDrawing, image: np.ndarray, trace: MergeTrace, after_block: int) -> ExplorerView:
    """``trace`` drawn on ``drawing`` (``image`` as :func:`~vitstudy.plots.display_image` gives it): the patches
    coloured by the token they sit in after ``after_block`` and after the last block. The view's summary is the
    trace's plus which token holds each patch at the two blocks shown."""
    summary, depth = trace.summary, len(trace.token_of_patch)
    image_title = predictions_title(
        summary["label"],
        [
            ("merging on", summary["prediction_merging_on"], summary["confidence_merging_on"]),
            ("merging off", summary["prediction_merging_off"], summary["confidence_merging_off"]),
        ],
    )
    maps = [
        (trace.token_of_patch[block - 1], _map_title(summary, block, depth))
        for block in (after_block, depth)  # the last block twice when it is the one chosen: one layout
    ]
    title = (
        f"ToMe, r = {trace.r} per block: {summary['tokens']} → {summary['tokens_after_block'][-1]} tokens, "
        f"FLOP ideal {summary['flop_ideal_speedup']:.2f}× (colour: patches merged into one token)"
    )
    view_summary = {
        **summary,
        "shown_after_block": after_block,
        "token_of_patch_shown": trace.token_of_patch[after_block - 1].tolist(),
        "token_of_patch_last": trace.token_of_patch[-1].tolist(),
    }
    return ExplorerView(view_summary, drawing.update(image, image_title, maps, trace.grid_size, title), trace)


def _map_title(summary: dict[str, Any], block: int, depth: int) -> str:
    tokens = summary["tokens_after_block"][block - 1] - summary["prefix_tokens"]
    last = " (the last)" if block == depth else ""
    return f"after block {block}{last}:\n{summary['patches']} patches in {tokens} tokens"


def explore_merges(
    model: nn.Module,
    image: torch.Tensor,
    r: int,
    after_block: int | None = None,
    classes: Sequence[str] | None = None,
    label: int | None = None,
) -> ExplorerView:
    """One image [C, H, W] (already normalised) with ToMe merging ``r`` tokens per block: the summary (r and tokens
    left per block, the FLOP ideal, the predictions with merging on and off), the figure (the merged patches after
    ``after_block``, by default the middle block, and after the last) and the :class:`MergeTrace`."""
    after_block = len(model.blocks) // 2 if after_block is None else after_block
    check_block(model, after_block)
    trace = trace_merges(model, image, r, classes, label)
    drawing = MergeDrawing(new_figure((1, 1), layout=None), tuple(image.shape))
    return merge_view(drawing, display_image(image), trace, after_block)


def merges_readout(summary: dict[str, Any]) -> str:
    """Sentences a person reads under ToMe's figure: r and the tokens left per block, the groups at the block shown,
    the FLOP ideal, the prediction with merging on and off (and the true class when known)."""
    if "error" in summary:
        return f"Not a valid setting: {summary['error']}"
    left = ", ".join(map(str, summary["tokens_after_block"]))
    shown = summary["shown_after_block"]
    patch_tokens = summary["tokens_after_block"][shown - 1] - summary["prefix_tokens"]
    truth = f" (true class {summary['label']})" if summary["label"] is not None else ""
    return (
        f"ToMe merges r = {summary['r']} tokens in each of the {len(summary['merged_per_block'])} blocks "
        f"(merged per block: {', '.join(map(str, summary['merged_per_block']))}); of {summary['tokens']} tokens, "
        f"{left} are left after blocks 1 to {len(summary['tokens_after_block'])}. After block {shown} the "
        f"{summary['patches']} patches sit in {patch_tokens} tokens. FLOP ideal: {summary['flop_ideal_speedup']:.2f}× "
        f"({summary['gflops_merging_on']:.3g} of {summary['gflops_merging_off']:.3g} GFLOPs). Prediction "
        f"{summary['prediction_merging_on']} {summary['confidence_merging_on']:.0%} with merging, "
        f"{summary['prediction_merging_off']} {summary['confidence_merging_off']:.0%} without{truth}."
    )


def readout(summary: dict[str, Any]) -> str:
    """The widget's sentences: ToMe's (:func:`merges_readout`) for a ToMe view, else SkipViT's."""
    return merges_readout(summary) if summary.get("rule") == TOME_RULE else drop_readout(summary)


# ----------------------------------------------------------------------------------------------------------
# The widget: SkipViT's modes and ToMe in one


class MergeExplorer:
    """ToMe's side of the widget: each (image, r) traced once (an LRU cache), so that choosing another block to show
    only redraws; one drawing per image shape on a live figure, redrawn in place. ``probabilities_off(index)``
    gives an image's stock prediction (shared with SkipViT's side, which computes the same forward)."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        probabilities_off: Callable[[int], torch.Tensor] | None = None,
        cached: int = 64,
    ) -> None:
        self.model, self.images, self.labels, self.classes = merge_model(model), images, labels, classes
        self.probabilities_off = probabilities_off or functools.lru_cache(maxsize=cached)(self._probabilities_off)
        self.traced = functools.lru_cache(maxsize=cached)(self._trace)
        self.pixels = functools.lru_cache(maxsize=cached)(self._pixels)
        self.drawings = LiveDrawings()

    def _trace(self, index: int, r: int) -> MergeTrace:
        label = int(self.labels[index]) if self.labels is not None else None
        off = self.probabilities_off(index)
        return trace_merges(self.model, self.images[index], r, self.classes, label, off)

    def _probabilities_off(self, index: int) -> torch.Tensor:
        return stock_probabilities(self.model, self.images[index])

    def _pixels(self, index: int) -> np.ndarray:
        return display_image(self.images[index])

    def view(self, index: int, r: int, after_block: int) -> ExplorerView:
        """Slider values in, the :class:`ExplorerView` :func:`explore_merges` computes out, drawn on a live figure;
        an r some block cannot merge gives a view that says what is allowed instead of raising."""
        try:
            check_block(self.model, after_block)
            trace = self.traced(index, r)
        except ValueError as err:
            return self.drawings.get("invalid", MessageDrawing).update(err)
        layout = tuple(self.images[index].shape)
        drawing = self.drawings.get(layout, lambda fig: MergeDrawing(fig, layout))
        return merge_view(drawing, self.pixels(index), trace, after_block)


class TokenRuleExplorer:
    """Notebook 06's widget side: SkipViT's modes through a :class:`~vitstudy.skipvit.PatchDropExplorer`, ToMe
    through a :class:`MergeExplorer`; both keep their caches and live figures, so switching rule only redraws."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.patch_drop = PatchDropExplorer(model, images, labels, classes)
        self.merges = MergeExplorer(model, images, labels, classes, self.patch_drop.dropping_off)

    def view(
        self,
        index: int,
        first_layer: int,
        second_layer: int,
        ratio: float,
        skip_layer: int,
        mode: str,
        r: int,
        after_block: int,
    ) -> ExplorerView:
        """Every control's value in; the view of the chosen rule out (the other rule's values are ignored)."""
        if mode == TOME_RULE:
            return self.merges.view(index, r, after_block)
        return self.patch_drop.view(index, first_layer, second_layer, ratio, skip_layer, mode)


SKIPVIT_CONTROLS = ("first_layer", "second_layer", "ratio", "skip_layer")
TOME_CONTROLS = ("r", "after_block")


def explorer_widget(
    model: nn.Module,
    images: torch.Tensor,
    labels: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    show: bool = True,
) -> ipywidgets.interactive:
    """SkipViT's explorer controls (:func:`~vitstudy.skipvit.explorer.explorer_controls`) with ToMe as a further
    mode and its own sliders, r (tokens merged per block; it starts at the largest that every block can merge) and
    the block whose merges to show, over a :class:`TokenRuleExplorer` (``widget.explorer``). Each rule's sliders
    are shown only while it is chosen."""
    explorer = TokenRuleExplorer(model, images, labels, classes)
    depth = len(model.blocks)
    controls = explorer_controls(model, images)
    controls["mode"].options = [*MODES, TOME_RULE]
    patches = model.patch_embed.num_patches
    controls["r"] = ipywidgets.IntSlider(largest_fitting_r(model), 0, patches // 2, description="r (merged/block)")
    controls["after_block"] = ipywidgets.IntSlider(max(depth // 2, 1), 1, depth, description="show after block")

    def show_rule_controls(mode: str) -> None:
        for name in (*SKIPVIT_CONTROLS, *TOME_CONTROLS):
            shown = (name in TOME_CONTROLS) == (mode == TOME_RULE)
            controls[name].layout.display = None if shown else "none"

    show_rule_controls(controls["mode"].value)
    controls["mode"].observe(lambda change: show_rule_controls(change["new"]), names="value")
    widget = explorer_interactive(explorer.view, readout, show=show, **controls)
    widget.explorer = explorer
    return widget
