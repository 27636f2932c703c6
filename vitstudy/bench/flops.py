"""FLOP counting with torch's FlopCounterMode (multiply-add = 2 FLOPs): the FLOP-ideal speed-ups' numerator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .environment import device_available


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
    needs no correction here; tests/test_bench.py checks a total against a hand count.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())
