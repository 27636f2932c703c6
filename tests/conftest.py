"""Shared fixtures: every test writes into temporary folders, never into the project's figures or caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache and the figure output at per-test temporary folders."""
    root = tmp_path_factory.mktemp("vitstudy")
    monkeypatch.setenv("VITSTUDY_CACHE", str(root / "cache"))
    monkeypatch.setenv("VITSTUDY_OUT", str(root / "figures"))
    return root


@pytest.fixture
def digits_cfg():
    """A seconds-long training config: a depth-2 ViT on scikit-learn's digits."""
    from vitstudy.config import TrainConfig

    return TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(depth=2, patch_size=2),
        dataset="digits",
        train_size=512,
        val_size=128,
        epochs=2,
        batch_size=64,
        warmup_epochs=0.5,
        augment=False,
    )
