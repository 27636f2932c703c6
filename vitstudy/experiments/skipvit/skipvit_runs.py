"""Training one SkipViT row, the run every accuracy number of notebooks 04, 05 and 08 comes from.

A row is one training run with the row's :class:`~vitstudy.skipvit.SkipViTSettings` (dropping from epoch
``warmup`` on), cached under ``data/cache/skipvit/`` so a re-run loads it, and evaluated on the test split with
token dropping kept on and switched off. :class:`RowTraining` is the recipe the three notebooks' budgets share;
:func:`budget_for` picks a notebook's budget for a scale.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch

from ... import bench
from ...config import SCALES, Scale, TrainConfig, check_choice, get_scale, scale_budget
from ...data import make_loader
from ...files import cache_dir, fingerprint
from ...skipvit import SkipViTSettings, apply_skipvit, dropping, warmup_epochs_for, warmup_hook
from ...steps import evaluate
from ...train import baseline, baseline_run_dir, config_fingerprint, default_model_factory, train

STARTS = ("scratch", "baseline")
# The data notebooks 04 and 05 train on at smoke and quick: a subset of the scale's, so their rows train in minutes.
SMOKE_DATA = dataclasses.replace(SCALES["smoke"].train, train_size=256, val_size=128, test_size=256)
QUICK_DATA = dataclasses.replace(SCALES["quick"].train, train_size=2000, val_size=500, test_size=2000)


@dataclass(frozen=True)
class RowTraining:
    """How every row of one notebook trains at one scale."""

    scale: str  # the scale whose cache folders (and, with start="baseline", whose baseline) the rows use
    train: TrainConfig  # one run per row and seed
    seeds: tuple[int, ...] = (0,)
    warmup_fraction: float = 0.15  # the paper: 15 warm-up epochs of 100
    # "scratch": every row trains from random weights (the paper's protocol); "baseline": every row fine-tunes the
    # scale's cached baseline (notebook 00) with its dropping, for budgets too short to train a ViT from scratch.
    start: str = "scratch"

    def __post_init__(self) -> None:
        check_choice("start", self.start, STARTS)

    @classmethod
    def of(cls, scale: Scale) -> RowTraining:
        """The scale's own recipe and seeds, every row from scratch."""
        return cls(scale.name, scale.train, scale.seeds)

    @property
    def warmup_epochs(self) -> int:
        return warmup_epochs_for(self.train.epochs, self.warmup_fraction)


B = TypeVar("B")  # a notebook's budget: a frozen dataclass with a ``training: RowTraining`` field


def budget_for(budgets: Mapping[str, B], scale: Scale | str | None) -> B:
    """:func:`vitstudy.config.scale_budget`, its training data read from where the scale says (the paper's ImageNet
    folder)."""
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    chosen = scale_budget(budgets, scale)
    train = dataclasses.replace(chosen.training.train, data_root=scale.train.data_root)
    return dataclasses.replace(chosen, training=dataclasses.replace(chosen.training, train=train))


def settings_fingerprint(settings: SkipViTSettings) -> dict[str, Any]:
    """The SkipViT settings that decide what a run computes: ``placement`` and ``fuse_weights`` are left out where
    they change nothing (after-the-block selection, the settings' first reading; fused weights outside mode
    "fused"), so a run trained before they existed keeps its folder, and a fused run under EViT's computation
    gets a new one."""
    fields = dataclasses.asdict(settings)
    if settings.placement == "block":
        fields.pop("placement")
    if settings.mode != "fused":
        fields.pop("fuse_weights")
    return fields


def run_dir(training: RowTraining, name: str, settings: SkipViTSettings, warmup: int, seed: int) -> Path:
    """Cache folder of one run: scale, row, training settings, SkipViT settings, warm-up and seed."""
    cfg = dataclasses.replace(training.train, seed=seed)
    start = baseline_run_dir(get_scale(training.scale), seed).name if training.start == "baseline" else "scratch"
    fields = [settings_fingerprint(settings), start]
    tag = fingerprint(fields, length=8)
    return cache_dir() / "skipvit" / f"{training.scale}-{name}-{config_fingerprint(cfg)}-{tag}-w{warmup}-seed{seed}"


def train_row(
    training: RowTraining,
    name: str,
    settings: SkipViTSettings,
    seed: int = 0,
    warmup: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one row (dropping from epoch ``warmup`` on) and evaluate with token dropping on and off."""
    warmup = training.warmup_epochs if warmup is None else warmup
    cfg = dataclasses.replace(training.train, seed=seed)

    start = baseline(training.scale, seed, progress).model.state_dict() if training.start == "baseline" else None

    def factory(cfg: TrainConfig, splits) -> Any:
        model = default_model_factory(cfg, splits)
        if start is not None:
            model.load_state_dict(start)
        return apply_skipvit(model, dataclasses.replace(settings, enabled=warmup == 0))

    result = train(
        cfg,
        run_dir(training, name, settings, warmup, seed),
        progress=progress,
        model_factory=factory,
        on_epoch_start=warmup_hook(warmup),
    )
    device = next(result.model.parameters()).device
    loader = make_loader(result.splits.test, cfg.batch_size * 2, train=False)
    with dropping(result.model, True):
        on = evaluate(result.model, loader, device)
    with dropping(result.model, False):
        off = evaluate(result.model, loader, device)
    history = result.history
    dropping_epochs = history[history["epoch"] > warmup]
    return {
        "row": name,
        "setting": settings.label,
        "seed": seed,
        "warmup_epochs": warmup,
        "start": training.start,
        "epochs": cfg.epochs,
        "train_images": result.metrics["sizes"]["train"],
        "test_images": result.metrics["sizes"]["test"],
        "top1_dropping_on": on["top1"],
        "top1_dropping_off": off["top1"],
        "val_top1": result.metrics["val_top1"],
        "loop_im_s": float(dropping_epochs["train_images_per_s"].median()) if len(dropping_epochs) else math.nan,
        "train_minutes": result.metrics["train_seconds"] / 60,
        # train_minutes and loop_im_s depend on it: two CPUs of one name may differ in vector units (AVX2, AVX512)
        "trained_on": _machine(device),
        "history": history.assign(row=name, seed=seed, warmup_epochs=warmup),
        "settings": json.dumps(dataclasses.asdict(settings)),
        "config": json.dumps(dataclasses.asdict(cfg)),
    }


def _machine(device: torch.device) -> str:
    """The device a run trained on, with a CPU's vector capability: ``"AMD EPYC (AVX2)"``."""
    info = bench.environment_info(device)
    return f"{info['device_name']} ({info['cpu_capability']})" if device.type == "cpu" else info["device_name"]


def runs_frame(runs: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one results row per run, the concatenated per-epoch histories) from :func:`train_row` results."""
    histories = pd.concat([r.pop("history") for r in runs], ignore_index=True)
    return pd.DataFrame(runs), histories
