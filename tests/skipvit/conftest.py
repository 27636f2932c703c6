"""Tiny timm ViTs and random images for the SkipViT tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn


@pytest.fixture
def tiny_vit() -> Callable[..., nn.Module]:
    """``tiny_vit(depth=12, **kwargs)``: the study's tiny 28×28 ViT (49 patches), seeded, in eval mode."""

    def make(depth: int = 12, **kwargs) -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model("vitstudy_tiny_patch4_28", depth=depth, **kwargs).eval()

    return make


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    """``images(batch=3, seed=1)``: random grey 28×28 images [B, 1, 28, 28]."""

    def make(batch: int = 3, seed: int = 1) -> torch.Tensor:
        return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))

    return make
