"""Tiny timm ViTs and random images for the SkipViT tests."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
import timm
import torch
from torch import nn

from vitstudy import skipvit as sv


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


@pytest.fixture
def table_1_of() -> Callable[..., pd.DataFrame]:
    """``table_1_of(speed_im_s=1.0)``: a Table 1 frame from made-up speeds (every row, or one value per row)
    and top-1 80 / 81 with dropping on / off; the A/A control row last."""

    def make(speed_im_s: float | list[float] = 1.0) -> pd.DataFrame:
        names = [*sv.TABLE1, sv.CONTROL]
        speeds = speed_im_s if isinstance(speed_im_s, list) else [speed_im_s] * len(sv.TABLE1)
        speed = pd.DataFrame({"row": names, "setting": [sv.TABLE1[n].label for n in sv.TABLE1] + ["baseline (A/A)"],
                              "train_im_s": [*speeds, speeds[0]], "speedup": 1.0, "speedup_low": 0.9,
                              "speedup_high": 1.1, "gain_pct": 0.0, "ideal_speedup": 1.01, "ideal_gain_pct": 1.0,
                              "measured_over_ideal": 0.99, "verdict": "x", "note": ""})  # fmt: skip
        runs = pd.DataFrame({"row": list(sv.TABLE1), "setting": "x", "seed": 0, "top1_dropping_on": 80.0,
                             "top1_dropping_off": 81.0, "loop_im_s": 1.0})  # fmt: skip
        return sv.table_1(sv.accuracy_summary(runs), speed, speed)

    return make
