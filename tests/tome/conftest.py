"""Fresh tiny timm ViTs for the ToMe tests (each test patches its own model in place)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn


@pytest.fixture
def fresh_vit() -> Callable[..., nn.Module]:
    """``fresh_vit(depth=12, **kwargs)``: the study's tiny 28×28 ViT (49 patches + [CLS]), seeded, in eval mode."""

    def make(depth: int = 12, **kwargs) -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model("vitstudy_tiny_patch4_28", depth=depth, **kwargs).eval()

    return make


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Three random grey 28×28 images [3, 1, 28, 28]."""
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
