"""Experiment settings: frozen dataclasses plus named presets.

Notebooks change a preset with ``dataclasses.replace``; every results row records the resolved settings
(``asdict``), so a number can always be traced back to what produced it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

DATASETS = ("fashion_mnist", "fashion_mnist_cluttered", "digits", "imagefolder")
LOADERS = ("auto", "tensor", "dataloader")  # how training batches are made: vitstudy.fast_data

T = TypeVar("T")


# One validation style for the whole package: the message names the value and what is allowed.
def check(ok: bool, name: str, value: object, allowed: str) -> None:
    """Raise ``ValueError("name=value is not allowed: expected allowed")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def check_choice(name: str, value: T, allowed: Sequence[T]) -> T:
    """``value`` when it is one of ``allowed``, else the package's one-line ValueError."""
    check(value in allowed, name, value, f"one of {tuple(allowed)}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on. ``batch_size`` is global: torchrun splits it over ranks."""

    model: str = "vitstudy_tiny_patch4_28"
    dataset: str = "fashion_mnist"
    data_root: str | None = None  # None: search the default places (see vitstudy.data)
    train_size: int | None = None  # None: the whole training split minus the validation hold-out
    val_size: int = 5000  # carved from the official training split, so the test set stays untouched
    test_size: int | None = None  # None: the whole official test split
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    mixup: float = 0.0  # Beta(alpha, alpha) mixup; 0 switches it off
    label_smoothing: float = 0.0
    drop_path: float = 0.0
    grad_clip: float | None = 1.0  # small ViTs trained from scratch spike early without it
    augment: bool = True  # random crop + horizontal flip on the small data sets
    amp: bool = True  # bf16/fp16 autocast, used only on CUDA
    seed: int = 0
    num_workers: int | None = None  # None: sized to the machine and the data set
    # "auto": in-memory data sets batched on the device (vitstudy.fast_data), files through a DataLoader. The
    # two give identical batches, so the choice is left out of a run's fingerprint.
    loader: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments

    def __post_init__(self) -> None:
        check(self.dataset in DATASETS, "dataset", self.dataset, f"one of {DATASETS}")
        check(self.loader in LOADERS, "loader", self.loader, f"one of {LOADERS}")
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", self.warmup_epochs, "0 ... epochs")
        check(self.mixup >= 0, "mixup", self.mixup, "alpha >= 0 (0 = off)")
        check(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "[0, 1)")
        check(0 <= self.drop_path < 1, "drop_path", self.drop_path, "[0, 1)")
        check(self.val_size >= 0, "val_size", self.val_size, "an integer >= 0")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            check(value is None or value >= 1, name, value, "None (whole split) or an integer >= 1")


# SkipViT paper, Table 2: ViT-S trained from scratch on ImageNet-1k at 224 px.
SKIPVIT_TABLE2 = TrainConfig(
    model="vit_small_patch16_224",
    dataset="imagefolder",
    epochs=100,
    batch_size=288,
    weight_decay=0.5,
    lr=1e-3,
    warmup_lr=1e-6,
    mixup=0.1,
    warmup_epochs=5.0,  # not in the paper's table; timm's DeiT recipe default
    val_size=0,  # ImageNet has its own val/ folder, used as the test split
)


@dataclass(frozen=True)
class Scale:
    """A named size for every notebook: how much data, how long to train, how hard to time."""

    name: str
    train: TrainConfig
    seeds: tuple[int, ...] = (0,)
    eval_batch_size: int = 256
    bench_warmup: int = 3
    bench_runs: int = 10
    description: str = ""
    # The scale's code path (models, data layout, recipe) at smoke sizes: a handful of images, two epochs, two
    # timing rounds. Set for ``paper`` by VITSTUDY_PAPER_SMOKE=1, so the paper path runs in a test on a CPU.
    smoke_sizes: bool = False


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        TrainConfig(train_size=512, val_size=256, test_size=512, epochs=1, batch_size=64, warmup_epochs=0.5),
        bench_warmup=1,
        bench_runs=2,
        description="CI: seconds per notebook, numbers meaningless",
    ),
    "quick": Scale(
        "quick",
        # lr 2e-3 / batch 64 / no augmentation: the best of a few short sweeps at this budget (README)
        TrainConfig(train_size=10_000, val_size=2_000, epochs=6, batch_size=64, lr=2e-3, augment=False),
        description="the default report: every table of both documents from empty caches on a laptop CPU "
        "(its time on this project's machines: docs/measurement.md); one seed",
    ),
    "full": Scale(
        "full",
        TrainConfig(train_size=None, val_size=5_000, epochs=30, warmup_epochs=3.0, drop_path=0.05),
        seeds=(0, 1, 2),
        description="whole Fashion-MNIST, three seeds: hours on a CPU, minutes on a GPU",
    ),
    "paper": Scale(
        "paper",
        SKIPVIT_TABLE2,
        eval_batch_size=256,
        description="ImageNet (VITSTUDY_IMAGENET=/path with train/ and val/) and the papers' timm models; GPU",
    ),
    "scratch": Scale(
        "scratch",
        # SkipViT's from-scratch protocol (notebook 08 only): 7 rows on Fashion-MNIST and 5 on its cluttered version,
        # 6 seeds each (a paired t interval 2.4x narrower than 3 seeds'), ~6 h on a 2-core CPU. Width 64
        # / 2 heads at depth 12 trains ~1.5x faster than width 96 and keeps "block 6 ... 11" meaningful; 7 epochs
        # make the paper's 15 % warm-up one epoch; no augmentation, as at quick (short runs learn faster without).
        TrainConfig(
            train_size=16_000,
            val_size=2_000,
            epochs=7,
            batch_size=128,
            lr=2e-3,
            warmup_epochs=0.5,
            augment=False,
            model_kwargs={"embed_dim": 64, "num_heads": 2},
        ),
        seeds=(0, 1, 2, 3, 4, 5),
        description="SkipViT from scratch: 7 + 5 rows x 6 seeds on Fashion-MNIST and its cluttered version, 16k "
        "images x 7 epochs, width 64",
    ),
}


def get_scale(name: str | None = None) -> Scale:
    """The named scale; ``None`` reads ``VITSTUDY_SCALE`` (default ``quick``)."""
    name = name or os.environ.get("VITSTUDY_SCALE", "quick")
    check(name in SCALES, "scale", name, f"one of {', '.join(SCALES)}")
    scale = SCALES[name]
    if name == "paper" and scale.train.data_root is None:
        root = os.environ.get("VITSTUDY_IMAGENET")
        if not root:
            raise ValueError(
                "scale 'paper' needs ImageNet: set VITSTUDY_IMAGENET=/path/to/imagenet (with train/ and val/ "
                "class folders) or replace(scale.train, data_root=...)"
            )
        scale = dataclasses.replace(scale, train=dataclasses.replace(scale.train, data_root=root))
    if name == "paper" and os.environ.get(PAPER_SMOKE_ENV):
        check(os.environ[PAPER_SMOKE_ENV] == "1", PAPER_SMOKE_ENV, os.environ[PAPER_SMOKE_ENV], "1 or unset")
        scale = paper_smoke(scale)
    return scale


PAPER_SMOKE_ENV = "VITSTUDY_PAPER_SMOKE"
PAPER_SMOKE = "paper_smoke"  # the budget key of the paper scale at smoke sizes (PAPER_SMOKE_ENV=1)


def scale_budget(budgets: Mapping[str, T], scale: Scale | str | None = None) -> T:
    """``budgets[scale]`` for a :class:`Scale`, a scale name or None (``VITSTUDY_SCALE``): the one way every
    experiment picks its per-scale budget. The paper scale at smoke sizes takes ``budgets["paper_smoke"]``, else
    ``budgets["smoke"]``. A scale without a budget is one ValueError line naming it and the scales that have one.

    A name is not resolved through :func:`get_scale`, so an experiment that needs no ImageNet (notebook 09's
    memory count) does not ask for ``VITSTUDY_IMAGENET`` at the paper scale."""
    if isinstance(scale, Scale):
        name, smoke_sizes = scale.name, scale.smoke_sizes
    else:
        name = scale or os.environ.get("VITSTUDY_SCALE", "quick")
        smoke_sizes = name == "paper" and os.environ.get(PAPER_SMOKE_ENV) == "1"
    key = (PAPER_SMOKE if PAPER_SMOKE in budgets else "smoke") if smoke_sizes else name
    check(key in budgets, "scale", name, f"one of {', '.join(k for k in budgets if k != PAPER_SMOKE)}")
    return budgets[key]


def paper_smoke(scale: Scale) -> Scale:
    """``scale`` (the paper's) at the smallest sizes that run every line of its path, for a test on a CPU: the same
    models, data layout and recipe; two epochs (a 1-epoch warm-up still leaves an epoch of dropping) of two steps
    (the warm-up schedule gets a step of its own) on batches of two (mixup pairs images: the smallest even batch);
    four test images, evaluated in one batch."""
    train = dataclasses.replace(
        scale.train, train_size=4, val_size=0, test_size=4, epochs=2, batch_size=2, warmup_epochs=0.5, num_workers=0
    )
    return dataclasses.replace(
        scale,
        train=train,
        eval_batch_size=4,
        bench_warmup=1,
        bench_runs=2,
        smoke_sizes=True,
        description=scale.description + " (smoke sizes: numbers meaningless)",
    )
