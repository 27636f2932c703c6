"""Notebook 06, the dropped-patch explorer: the model and the images it shows.

The explorer itself (trace, figure, widget) is the method's: :mod:`vitstudy.skipvit.explorer`. What the notebook
feeds it is the study's: the scale's cached baseline (notebook 00) on Fashion-MNIST or on cluttered Fashion-MNIST
(trained once, then cached), or any timm ViT with one image file (:func:`explorer_inputs`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import torch
from torch import nn

from ...cluttered import on_cluttered
from ...config import Scale, check_choice, get_scale
from ...models import create_model
from ...skipvit import apply_skipvit, load_image
from ...train import baseline

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
