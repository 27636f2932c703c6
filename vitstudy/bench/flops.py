"""FLOP counting with torch's FlopCounterMode (multiply-add = 2 FLOPs): the FLOP-ideal speed-ups' numerator, and
:class:`BaselineWork`, what one image of a comparison's baseline costs (its images/s times this is its FLOP/s)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import check, check_choice
from .environment import device_available

FORWARD = "forward"
TRAINING_STEP = "training step = 3 × forward"  # how BaselineWork.training_step counts (see there)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class BaselineWork:
    """FLOPs per image of one call of a comparison's baseline arm, what they count and the precision it ran in
    (whose peak its FLOP/s are read against)."""

    flops_per_image: float
    counted: str = FORWARD  # FORWARD or TRAINING_STEP: the column ``flops_counted`` of every row says which
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        check(self.flops_per_image >= 0, "flops_per_image", self.flops_per_image, "FLOPs >= 0")
        check_choice("counted", self.counted, (FORWARD, TRAINING_STEP))
        check_choice("dtype", self.dtype, PRECISIONS)

    @classmethod
    def training_step(cls, forward_flops_per_image: float, dtype: str = "fp32") -> BaselineWork:
        """A training step counted as 3 × its forward FLOPs, the usual convention: the backward of every matmul
        computes the gradient of its input and of its weight, each as costly as the forward one. It slightly
        overcounts (the first layer needs no input gradient) and, like the forward count, gives the loss, the
        optimizer and elementwise work 0 FLOPs."""
        return cls(3 * forward_flops_per_image, TRAINING_STEP, dtype)


def flops_per_image(
    model: nn.Module,
    input_size: tuple[int, int, int],
    device: str | torch.device = "cpu",
) -> float:
    """Forward FLOPs for one image (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode.

    Counts matmuls, convolutions and attention; elementwise ops (norms, GELU, softmax, bias adds)
    count zero, as in torch's counter. FLOPs are arithmetic, not a measurement, so on an absent
    device the count is taken on CPU. The model is counted on a deep copy and is not modified.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size}")
    device = torch.device(device) if device_available(device) else torch.device("cpu")
    # A copy, so counting neither moves the caller's model nor changes its train/eval mode.
    counted = copy.deepcopy(model).to(device).eval()
    return count_flops(counted, torch.randn(1, *input_size, device=device))


def count_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of one call ``fn(*args)`` (multiply-add = 2), counted by torch's FlopCounterMode without grad.

    In torch 2.15 FlopCounterMode counts F.scaled_dot_product_attention on CPU too
    (aten._scaled_dot_product_flash_attention_for_cpu has a formula), so timm's fused attention
    needs no correction here; tests/bench/test_bench.py checks a total against a hand count.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())
