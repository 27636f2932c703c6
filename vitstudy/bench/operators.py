"""Counting the operators a call dispatches, with no clock.

A small model at a small batch is bound by how many operators it runs, not by their FLOPs: each costs about the
same fixed dispatch whatever its rows. An early exit that lets most of a batch leave still runs every later block on
the rows that stay, so its FLOP ideal overstates what such a call can gain; plain's operators over the arm's
(:func:`operator_ideal`) is what it can gain where every operator costs the same. Counts are deterministic, so tests
and tables can use them where a timing would be noise.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OperatorCount(TorchDispatchMode):
    """Counts every operator that reaches the dispatcher, by name (``counts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_operators(fn: Callable[..., Any], *args: Any) -> collections.Counter[str]:
    """How many times ``fn(*args)`` dispatches each operator, under ``torch.inference_mode``."""
    with torch.inference_mode(), OperatorCount() as count:
        fn(*args)
    return count.counts


def operators_per_image(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Operators one eval-mode forward of ``model`` on the batch ``images`` dispatches, divided by its images
    (``model``'s mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return sum(count_operators(model, images).values()) / len(images)
    finally:
        model.train(was_training)


def operator_ideal(baseline_operators: float, arm_operators: float) -> float:
    """The speed-up of an arm over the baseline where every operator costs the same (a call bound by its
    operator count): the baseline's operators over the arm's."""
    return baseline_operators / arm_operators
