"""Fixtures of the multi-exit tests (core and experiments): a tiny timm ViT, a batch of images, small studies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vitstudy.config import Scale, TrainConfig
from vitstudy.data import build_splits
from vitstudy.experiments.multiexit.study import build_study
from vitstudy.models import create_model
from vitstudy.multiexit import MultiExitViT


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def mixed_threshold() -> Callable[[MultiExitViT, torch.Tensor], float]:
    """A threshold between the exit-3 confidences, so some images leave at 3 and the rest go on."""

    def threshold(model: MultiExitViT, x: torch.Tensor) -> float:
        with torch.inference_mode():
            conf = model(x).confidence[:, 0]
        return conf.median().item()

    return threshold


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory):
    """A depth-3 ViT trained on digits, its features recorded, every variant's exit-1 head fitted."""
    from vitstudy.train import train

    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(depth=3, patch_size=2),
        dataset="digits",
        train_size=512,
        val_size=128,
        epochs=2,
        batch_size=64,
        warmup_epochs=0.5,
        augment=False,
    )
    result = train(cfg, tmp_path_factory.mktemp("digits"), progress=False)
    scale = Scale("test", cfg, eval_batch_size=128)
    return build_study(scale, result.model, result.splits, exit_sets=[(1,), (1, 2)], head_epochs=50, progress=False)


@pytest.fixture(scope="session")
def depth12_study():
    """An untrained depth-12 ViT on a few digits with exits 3, 6, 9: the speed targets need the report's exits."""
    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(img_size=8, patch_size=2),
        dataset="digits",
        train_size=128,
        val_size=64,
        test_size=64,
        augment=False,
    )
    torch.manual_seed(0)
    vit = create_model(cfg.model, **cfg.model_kwargs).eval()
    return build_study(
        Scale("test", cfg, eval_batch_size=64),
        vit,
        build_splits(cfg),
        ["separate"],
        [(3, 6, 9)],
        head_epochs=1,
        progress=False,
    )
