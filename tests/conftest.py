"""Shared fixtures: every test writes into temporary folders, never into the project's figures or caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Under `pytest -n 2` two workers, each with a multi-threaded torch (and the notebook kernels, JupyterLab servers
# and subprocesses they start), oversubscribe a 2-core machine, and OpenMP's thread team then collapses (measured
# here: a 2-thread training step ran ~8x slower while one other process was busy; one thread did not slow down).
# One thread per worker process keeps every test's speed steady; set OMP_NUM_THREADS to override.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


@pytest.fixture
def image_tree():
    """Writes a tiny ImageFolder (train/ and val/, two classes, three 40x40 real PNGs each) under a folder;
    ``corrupt=True`` makes one file undecodable."""

    def write(root: Path, corrupt: bool = False) -> Path:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            for label in ("cat", "dog"):
                folder = root / split / label
                folder.mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        if corrupt:
            (root / "train" / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return root

    return write
