"""Cluttered Fashion-MNIST: each item at a random place on a 56x56 canvas among fragments of other items.

The construction is the Cluttered MNIST of Mnih et al. (2014, "Recurrent Models of Visual Attention"): a canvas
larger than the item, the item pasted at a random position, and 8x8 fragments cut from *other* images of the
same official split scattered over it (Mnih et al. use 4 on 60x60 and 8 on 100x100; 16 here cover about a third of the
canvas), so that the background looks like the items (texture, edges, stripes)
rather than being blank. SkipViT's premise is tokens that carry "unrelated background"; on plain Fashion-MNIST
the background is black and any dropping rule finds it, here a rule must tell item from clutter.

- Canvas 56x56 with patch 8 gives 7x7 = 49 tokens, the count the study's 28x28 / patch-4 model has, so a run
  costs what it costs on plain Fashion-MNIST.
- The item's top-left corner is a multiple of ``ITEM_STEP`` = 4 pixels (0 … 28 on each axis): patch borders
  cut through items half the time, yet an item spans exactly 4 patches per axis, so it touches at most 16 of the
  49 tokens and at least 33 (67 %) carry no part of it, whatever the item.
- ``FRAGMENTS`` = 16 fragments of 8x8 pixels, each from a random other image at a random position inside its
  central 24x24 (the border of a Fashion-MNIST image is mostly black), pasted anywhere; pixels combine by
  maximum, item last, as in the Cluttered MNIST generator.
- Deterministic per (split, index): one generator per official split draws every image's positions and
  fragment sources at once, so image ``i`` of ``train`` is the same in every run, subset and process.

:func:`clutter` makes a whole split as tensors in a few vectorised gathers (about a second for the 60k training
images); the result is an ordinary in-memory data set, so the fast path and the DataLoader path read the same
uint8 arrays. :func:`item_tokens` says which tokens carry the item (tests, notebook 00's grid).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import torch

from .config import TrainConfig
from .fashion_mnist import load_fashion_mnist_arrays
from .models import CLUTTERED_MODEL

CANVAS = 56  # pixels per side
PATCH = 8  # the cluttered model's patch: 7 x 7 = 49 tokens
ITEM = 28  # Fashion-MNIST's side
ITEM_STEP = 4  # item corners on a 4-pixel grid: 28 pixels from a multiple of 4 always span exactly 4 patches
FRAGMENTS = 16  # clutter fragments per canvas: about a third of the canvas, so few background tokens stay blank
FRAGMENT = 8  # fragment side in pixels (Mnih et al.'s)
FRAGMENT_MARGIN = 2  # fragments come from rows/columns 2 … 25 of their source image: its mostly-dark border left out
CLUTTER_SEED = 20140624  # fixed on purpose: the data set must not move with the training seed
SPLIT_NUMBER = {"train": 0, "test": 1}


def clutter(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluttered canvases of a whole split.

    images: [N, 28, 28] uint8 (N >= 2). Returns (canvases [N, 56, 56] uint8, item corners [N, 2] int64 = (top,
    left)). Image ``i``'s canvas depends only on ``seed``, ``i`` and the split's images.
    """
    count = len(images)
    if count < 2:
        raise ValueError(f"clutter needs at least 2 images (fragments come from other images), got {count}")
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, (CANVAS - ITEM) // ITEM_STEP + 1, (count, 2), generator=generator) * ITEM_STEP
    # Each fragment's source: any image but the canvas's own (draw from N - 1 and step over i).
    sources = torch.randint(0, count - 1, (count, FRAGMENTS), generator=generator)
    sources += (sources >= torch.arange(count)[:, None]).long()
    inside = ITEM - 2 * FRAGMENT_MARGIN - FRAGMENT + 1
    cut = torch.randint(0, inside, (count, FRAGMENTS, 2), generator=generator) + FRAGMENT_MARGIN
    put = torch.randint(0, CANVAS - FRAGMENT + 1, (count, FRAGMENTS, 2), generator=generator)

    canvases = torch.zeros(count, CANVAS, CANVAS, dtype=torch.uint8)
    step = torch.arange(FRAGMENT)
    for k in range(FRAGMENTS):
        rows = cut[:, k, :1] + step  # [N, 8]
        cols = cut[:, k, 1:] + step
        fragment = images[sources[:, k, None, None], rows[:, :, None], cols[:, None, :]]  # [N, 8, 8]
        _paste_max(canvases, fragment, put[:, k])
    _paste_max(canvases, images, corners)
    return canvases, corners


def _paste_max(canvases: torch.Tensor, pieces: torch.Tensor, corners: torch.Tensor) -> None:
    """canvases[n, top + r, left + c] = max(canvas, piece[n, r, c]) in place, for a batch of square pieces."""
    side = pieces.shape[-1]
    step = torch.arange(side)
    rows = (corners[:, :1] + step)[:, :, None]  # [N, side, 1]
    cols = (corners[:, 1:] + step)[:, None, :]  # [N, 1, side]
    batch = torch.arange(len(canvases))[:, None, None]
    canvases[batch, rows, cols] = torch.maximum(canvases[batch, rows, cols], pieces)


def item_tokens(images: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Which of the 7 x 7 tokens hold at least one non-zero pixel of the item: bool [N, 7, 7].

    images: the [N, 28, 28] items the canvases were made from; corners: :func:`clutter`'s item corners.
    """
    count = len(images)
    mask = torch.zeros(count, CANVAS, CANVAS, dtype=torch.uint8)
    _paste_max(mask, (images > 0).to(torch.uint8), corners)
    grid = CANVAS // PATCH
    return mask.view(count, grid, PATCH, grid, PATCH).amax(dim=(2, 4)).bool()


@functools.lru_cache(maxsize=2)
def _cluttered_split(split: str, root: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist_arrays(split, root)
    canvases, corners = clutter(torch.from_numpy(np.ascontiguousarray(images)), CLUTTER_SEED + SPLIT_NUMBER[split])
    return canvases.numpy(), labels, corners.numpy()


def load_cluttered_arrays(
    split: str, root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvases [N, 56, 56] uint8, labels [N] int64 and item corners [N, 2] of the official ``train`` (60k) or
    ``test`` (10k) split of Fashion-MNIST, cluttered; kept in memory for the process (about 190 MB for train)."""
    if split not in SPLIT_NUMBER:
        raise ValueError(f"split={split!r} is not allowed: expected one of {tuple(SPLIT_NUMBER)}")
    return _cluttered_split(split, None if root is None else str(root))


@functools.lru_cache(maxsize=2)
def cluttered_mean_std(root: str | None = None) -> tuple[tuple[float], tuple[float]]:
    """Pixel mean and standard deviation (0 … 1 scale) of the 60k cluttered training canvases."""
    canvases = torch.from_numpy(load_cluttered_arrays("train", root)[0])
    counts = torch.bincount(canvases.flatten(), minlength=256).to(torch.float64)  # exact, without a float copy
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = float((counts * levels).sum() / counts.sum())
    variance = float((counts * (levels - mean) ** 2).sum() / (counts.sum() - 1))
    return (mean,), (variance**0.5,)


def on_cluttered(cfg: TrainConfig) -> TrainConfig:
    """``cfg``'s recipe on cluttered Fashion-MNIST: the 56x56 canvases need the patch-8 tiny model (49 tokens, as
    the 28x28 patch-4 one has); width and heads still come from ``cfg.model_kwargs``."""
    return dataclasses.replace(cfg, dataset="fashion_mnist_cluttered", model=CLUTTERED_MODEL)
