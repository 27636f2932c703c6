"""SkipViT experiments behind notebooks 04 (Table 1) and 05 (Table 3): budgets per scale and training runs.

Each Table row is one training run with the row's :class:`~vitstudy.skipvit.settings.SkipViTSettings` (cached
under ``data/cache/skipvit/``, so a re-run loads it), evaluated on the test split with token dropping kept on and
switched off. The timed training steps are in :mod:`vitstudy.skipvit.timing`; the tables and plots of these runs
in ``tables`` and ``plots``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import bench
from ..config import Scale, TrainConfig, get_scale
from ..data import make_loader
from ..files import cache_dir
from ..models import SMALL_MODELS
from ..train import baseline, baseline_run_dir, config_fingerprint, default_model_factory, evaluate, train
from .patch import apply_skipvit, dropping, warmup_epochs_for, warmup_hook
from .settings import TABLE1, TABLE3, SkipViTSettings


@dataclass(frozen=True)
class SkipViTBudget:
    """How much one SkipViT notebook trains and times at one scale."""

    scale: str
    train: TrainConfig  # one run per table row and seed
    seeds: tuple[int, ...] = (0,)
    warmup_fraction: float = 0.15  # the paper: 15 warm-up epochs of 100
    # "scratch": every row trains from random weights (the paper's protocol); "baseline": every row fine-tunes the
    # scale's cached baseline (notebook 00) with its dropping, for budgets too short to train a ViT from scratch.
    start: str = "scratch"
    paper_model: str = "vit_small_patch16_224"  # the paper's model, timed on random data
    paper_img_size: int = 224  # the paper's resolution; only smoke shrinks it (its numbers are meaningless)
    paper_batch: int = 16
    small_batch: int = 64
    timing: bench.CompareSettings = bench.CompareSettings()
    # The small model's steps take milliseconds: a fresh process per (round, arm) adds more noise than it removes
    # (quick, one process per arm: A/A 0.83), so it may be timed differently; None: ``timing``.
    small_timing: bench.CompareSettings | None = None
    profile_limit: int = 2  # rows profiled at most: the headline row and the worst-flagged one
    profile_always: bool = False  # smoke: profile one row even when none is flagged, so that path runs
    note: str = ""

    @property
    def paper_input(self) -> tuple[int, int, int]:
        return (3, self.paper_img_size, self.paper_img_size)

    @property
    def small_model(self) -> str:
        """The small model timed on 28x28 input: the trained one where it is one of the study's small models; at
        ``paper`` scale (which trains ViT-S/16 at 224) the default small model."""
        return self.train.model if self.train.model in SMALL_MODELS else TrainConfig().model

    @property
    def warmup_epochs(self) -> int:
        return warmup_epochs_for(self.train.epochs, self.warmup_fraction)


def table1_budget(scale: Scale | str | None = None) -> SkipViTBudget:
    """Notebook 04's budget: nine rows must train in a few minutes at ``quick`` on a 2-core CPU."""
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    base = scale.train
    if scale.name == "smoke":
        cfg = dataclasses.replace(base, train_size=256, val_size=128, test_size=256, epochs=1)
        return SkipViTBudget("smoke", cfg, start="baseline", paper_img_size=64, paper_batch=2, small_batch=16,
                             timing=bench.CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=1, bootstrap=200),
                             profile_limit=1, profile_always=True, note="numbers meaningless")  # fmt: skip
    if scale.name == "quick":
        # 2,000 images x 1 epoch per row: from scratch that is ~30 updates and ~30% top-1, so rows fine-tune the
        # quick baseline (10k images x 6 epochs, trained by notebook 00) instead, at a fine-tuning learning rate.
        cfg = dataclasses.replace(base, train_size=2000, val_size=500, test_size=2000, epochs=1, lr=5e-4,
                                  warmup_epochs=0.1)  # fmt: skip
        # Timing: a ViT-S/16 step at batch 16 takes ~1-2 s on an idle 2-core CPU, so each arm's round is
        # blocked_autorange's sizing call plus one timed block (2 steps): 10 arms x 4 rounds x 2 steps + warm-up
        # ~ 90 steps ~ 2-2.5 minutes (the old 1 + 3 steps per row: ~1 minute); 4 rounds is the fewest that give
        # the bootstrap interval more than the two extreme rounds. The small model adds 10 x 4 x 0.5 s ~ 25 s.
        # One process per (round, arm): in one process the ViT-S/16 A/A control read 0.97 and 1.22 on a quiet
        # CPU, in separate processes 0.94 and 1.02 (figures/tables/04_aa_isolation_vit_small.md, tests/isolation_aa.py);
        # it costs ~1.4x the time (each child builds its model and warms up again).
        timing = bench.CompareSettings(rounds=4, min_run_time=0.5, warmup_calls=1, isolation="process")
        small_timing = bench.CompareSettings(rounds=8, min_run_time=0.5, warmup_calls=2)  # ~10 x 8 x 0.5 s ~ 45 s
        return SkipViTBudget(
            "quick", cfg, start="baseline", paper_batch=16, timing=timing, small_timing=small_timing,
            note="quick: every row fine-tunes notebook 00's quick baseline for 1 epoch on 2,000 images with its "
            "dropping (no warm-up: the baseline's attention is already trained); one seed, so differences "
            "under ~1 point are noise. full: every row from scratch, 3 seeds, warm-up 15% of the epochs.",
        )  # fmt: skip
    if scale.name == "full":
        return SkipViTBudget("full", base, seeds=scale.seeds, paper_batch=32,
                             timing=bench.CompareSettings(rounds=7, min_run_time=2.0, warmup_calls=2),
                             note="whole Fashion-MNIST, 30 epochs, 3 seeds, warm-up 15% of the epochs")  # fmt: skip
    if scale.smoke_sizes:  # the paper's models, data and recipe at smoke sizes (config.paper_smoke): a test
        return SkipViTBudget(scale.name, base, paper_batch=2, small_batch=4,
                             timing=bench.CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=1, bootstrap=200),
                             profile_limit=1, profile_always=True, note="smoke sizes: numbers meaningless")  # fmt: skip
    return SkipViTBudget(scale.name, base, seeds=scale.seeds, paper_batch=64,
                         timing=bench.CompareSettings(rounds=11, min_run_time=5.0, warmup_calls=3),
                         note="the paper's recipe (Table 2)")  # fmt: skip


def table3_budget(scale: Scale | str | None = None) -> SkipViTBudget:
    """Notebook 05's budget: two runs long enough that 15% of the epochs is at least one epoch."""
    budget = table1_budget(scale)
    if budget.scale == "smoke":
        cfg = dataclasses.replace(budget.train, epochs=2)
        return dataclasses.replace(budget, train=cfg, warmup_fraction=0.5, start="scratch",
                                   note="smoke: warm-up 1 of 2 epochs")  # fmt: skip
    if budget.scale == "quick":
        # Warm-up only means something from scratch; batch 32 gives ~440 updates in 7 epochs of 2,000 images.
        cfg = dataclasses.replace(get_scale("quick").train, train_size=2000, val_size=500, test_size=2000,
                                  epochs=7, batch_size=32, lr=1e-3, warmup_epochs=0.5)  # fmt: skip
        return dataclasses.replace(
            budget, train=cfg, start="scratch",
            note="quick: one seed, 2,000 images x 7 epochs from scratch; warm-up 15% of 7 = 1 epoch; one seed "
            "cannot separate differences under ~1 point",
        )  # fmt: skip
    return budget


# ----------------------------------------------------------------------------------------------------------
# Training runs


def run_dir(budget: SkipViTBudget, name: str, settings: SkipViTSettings, warmup: int, seed: int) -> Path:
    """Cache folder of one run: scale, row, training settings, SkipViT settings, warm-up and seed."""
    cfg = dataclasses.replace(budget.train, seed=seed)
    start = baseline_run_dir(get_scale(budget.scale), seed).name if budget.start == "baseline" else "scratch"
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(settings), start], sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "skipvit" / f"{budget.scale}-{name}-{config_fingerprint(cfg)}-{tag}-w{warmup}-seed{seed}"


def train_row(
    budget: SkipViTBudget,
    name: str,
    settings: SkipViTSettings,
    seed: int = 0,
    warmup: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one row (dropping from epoch ``warmup`` on) and evaluate with token dropping on and off."""
    warmup = budget.warmup_epochs if warmup is None else warmup
    cfg = dataclasses.replace(budget.train, seed=seed)

    start = baseline(budget.scale, seed, progress).model.state_dict() if budget.start == "baseline" else None

    def factory(cfg: TrainConfig, splits) -> Any:
        model = default_model_factory(cfg, splits)
        if start is not None:
            model.load_state_dict(start)
        return apply_skipvit(model, dataclasses.replace(settings, enabled=warmup == 0))

    result = train(cfg, run_dir(budget, name, settings, warmup, seed), progress=progress,
                   model_factory=factory, on_epoch_start=warmup_hook(warmup))  # fmt: skip
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
        "start": budget.start,
        "epochs": cfg.epochs,
        "train_images": result.metrics["sizes"]["train"],
        "test_images": result.metrics["sizes"]["test"],
        "top1_dropping_on": on["top1"],
        "top1_dropping_off": off["top1"],
        "val_top1": result.metrics["val_top1"],
        "loop_im_s": float(dropping_epochs["train_images_per_s"].median()) if len(dropping_epochs) else math.nan,
        "train_minutes": result.metrics["train_seconds"] / 60,
        "history": history.assign(row=name, seed=seed, warmup_epochs=warmup),
        "settings": json.dumps(dataclasses.asdict(settings)),
        "config": json.dumps(dataclasses.asdict(cfg)),
    }


def _runs_frame(runs: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one results row per run, the concatenated per-epoch histories) from :func:`train_row` results."""
    histories = pd.concat([r.pop("history") for r in runs], ignore_index=True)
    return pd.DataFrame(runs), histories


def accuracy_runs(
    budget: SkipViTBudget, rows: dict[str, SkipViTSettings] = TABLE1, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row x seed; returns (one results row per run, the concatenated per-epoch histories)."""
    return _runs_frame([train_row(budget, n, rows[n], seed, progress=progress) for n in rows for seed in budget.seeds])


def warmup_runs(budget: SkipViTBudget, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3's configuration (4,7 at 30%, skip 10) without and with warm-up, every seed."""
    return _runs_frame([
        train_row(budget, "table3", TABLE3, seed, warmup=w, progress=progress)
        for w in (0, max(1, budget.warmup_epochs))
        for seed in budget.seeds
    ])  # fmt: skip


def accuracy_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (std over seeds) of top-1 per row, and the difference of the means from the baseline."""
    grouped = runs.groupby("row", sort=False)
    summary = grouped.agg(
        setting=("setting", "first"),
        seeds=("seed", "count"),
        top1_dropping_on=("top1_dropping_on", "mean"),
        top1_dropping_on_std=("top1_dropping_on", "std"),
        top1_dropping_off=("top1_dropping_off", "mean"),
        top1_dropping_off_std=("top1_dropping_off", "std"),
        loop_im_s=("loop_im_s", "median"),
    ).reset_index()
    base = summary.loc[summary["row"] == "baseline"]
    if len(base):
        for column in ("top1_dropping_on", "top1_dropping_off"):
            summary[f"{column}_diff"] = summary[column] - float(base[column].iloc[0])
    return summary


# ----------------------------------------------------------------------------------------------------------
# Throughput
