"""SkipViT experiments behind notebooks 04 (Table 1) and 05 (Table 3): budgets per scale, training and timing runs.

Each Table row is one training run with the row's :class:`~vitstudy.skipvit.settings.SkipViTSettings` (cached
under ``data/cache/skipvit/``, so a re-run loads it), evaluated on the test split with token dropping kept on and
switched off. Throughput is timed on random data, the rows interleaved round by round so that a slow spell of a
shared machine does not land on one row only: :func:`vitstudy.bench.compare` (balanced ABBA rounds, paired ratios
with a 95% interval, an A/A control arm); rows whose speed-up strays from the FLOP-ideal get a ``torch.profiler``
breakdown (:func:`profile_rows`). The tables and plots of these runs are in ``tables`` and ``plots``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import bench
from ..config import Scale, TrainConfig, get_scale
from ..data import make_loader
from ..files import cache_dir
from ..models import create_model
from ..train import baseline, baseline_run_dir, config_fingerprint, default_model_factory, evaluate, train
from .patch import apply_skipvit, configure, dropping, flop_gain, warmup_epochs_for, warmup_hook
from .settings import BASELINE, TABLE1, TABLE3, SkipViTSettings


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
    profile_limit: int = 2  # rows profiled at most: the headline row and the worst-flagged one
    profile_always: bool = False  # smoke: profile one row even when none is flagged, so that path runs
    note: str = ""

    @property
    def paper_input(self) -> tuple[int, int, int]:
        return (3, self.paper_img_size, self.paper_img_size)

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
        timing = bench.CompareSettings(rounds=4, min_run_time=0.5, warmup_calls=1)
        return SkipViTBudget(
            "quick", cfg, start="baseline", paper_batch=16, timing=timing,
            note="quick: every row fine-tunes notebook 00's quick baseline for 1 epoch on 2,000 images with its "
            "dropping (no warm-up: the baseline's attention is already trained); one seed, so differences "
            "under ~1 point are noise. full: every row from scratch, 3 seeds, warm-up 15% of the epochs.",
        )  # fmt: skip
    if scale.name == "full":
        return SkipViTBudget("full", base, seeds=scale.seeds, paper_batch=32,
                             timing=bench.CompareSettings(rounds=7, min_run_time=2.0, warmup_calls=2),
                             note="whole Fashion-MNIST, 30 epochs, 3 seeds, warm-up 15% of the epochs")  # fmt: skip
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


CONTROL = "baseline (A/A copy)"  # the A/A control arm: a second copy of the baseline, timed like every row
TARGET = (0.90, 1.03)  # measured ÷ FLOP-ideal speed-up: issue 8's two-sided target for a training step
HEADLINE = "skip_6_55_s11"  # the paper's headline row, profiled first when it is flagged
# Operator-name fragments of attention's memory-bound work (softmax and its backward, the fused attention
# kernels): it shrinks with the square of the tokens kept, which a FLOP count of the matmuls undercounts.
ATTENTION_OPERATORS = ("softmax", "attention")


def training_step_arm(
    model_name: str,
    settings: SkipViTSettings,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    device: str,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """One training step of ``model_name`` with ``settings`` on random data: the arm every timed row builds.

    Module-level so that :func:`vitstudy.bench.compare` can rebuild it in a fresh process
    (``isolation="process"``); the seed gives every arm the same initial weights.
    """
    torch.manual_seed(seed)
    model = configure(apply_skipvit(create_model(model_name, num_classes=num_classes, **(model_kwargs or {}))),
                      settings)  # fmt: skip
    return bench.make_train_step(model, batch_size, input_size, num_classes, device)


def _train_steps(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    rows: dict[str, SkipViTSettings],
    device: torch.device,
    control: bool,
    **model_kwargs: Any,
) -> tuple[dict[str, bench.ArmSpec], dict[str, dict[str, float]]]:
    """(one training-step arm per row: baseline, every row, the A/A copy; FLOPs and FLOP-ideal per row)."""
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs))
    flops_off = bench.flops_per_image(configure(model, BASELINE), input_size)
    arms = {"baseline": BASELINE, **{n: s for n, s in rows.items() if n != "baseline"}}
    flops = {name: flop_gain(configure(model, s), input_size, flops_off) for name, s in arms.items()}
    if control:
        arms[CONTROL] = BASELINE
        flops[CONTROL] = flops["baseline"]
    specs = {
        name: bench.ArmSpec(training_step_arm, dict(model_name=model_name, settings=s, input_size=input_size,
                                                    num_classes=num_classes, batch_size=batch_size,
                                                    device=str(device), model_kwargs=model_kwargs))
        for name, s in arms.items()
    }  # fmt: skip
    return specs, flops


def timing_runs(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    budget: SkipViTBudget,
    rows: dict[str, SkipViTSettings] = TABLE1,
    device: str | None = None,
    **model_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training speed-up (random data) of every row over the baseline, beside its FLOP-ideal; and the raw times.

    Every row, the baseline and an A/A copy of the baseline get their own model copy and AdamW and are timed one
    training step per call by :func:`vitstudy.bench.compare` with ``budget.timing``. Per row: ``speedup`` (median
    over rounds of baseline time / row time) with its 95% interval, ``measured_over_ideal`` = speed-up ÷ FLOP-ideal
    speed-up (a ratio of speed-ups, not of gains) and its ``verdict``; the table's ``note`` carries the control's
    reading. Returns (one row per arm, the comparison's raw per-block times for ``report.save_raw``). On an
    absent device every number is NaN and ``note`` says so.
    """
    device = torch.device(device or bench.default_device())
    steps, flops = _train_steps(model_name, input_size, num_classes, batch_size, rows, device, True, **model_kwargs)
    comparison = bench.compare(steps, "baseline", CONTROL, budget.timing, device)
    note = comparison.note or comparison.control_note()
    environment = comparison.environment
    labels = {**{n: s.label for n, s in rows.items()}, "baseline": BASELINE.label, CONTROL: "baseline (A/A control)"}
    out = []
    for name in steps:
        speed = comparison.speedup(name)
        ideal = 1 + flops[name]["ideal_gain_pct"] / 100  # = gflops_off / gflops_on
        ratio = speed["speedup"] / ideal
        verdict = _verdict(name, ratio, comparison)
        out.append({
            "row": name,
            "setting": labels[name],
            "model": model_name,
            "batch_size": batch_size,
            "step_seconds": speed["seconds"],
            "train_im_s": batch_size / speed["seconds"],
            "speedup": speed["speedup"],
            "speedup_low": speed["speedup_low"],
            "speedup_high": speed["speedup_high"],
            "gain_pct": 100 * (speed["speedup"] - 1),
            **flops[name],
            "ideal_speedup": ideal,
            "measured_over_ideal": ratio,
            "verdict": verdict,
            "rounds": budget.timing.rounds,
            "min_run_time_s": budget.timing.min_run_time,
            "order": budget.timing.order,
            "isolation": budget.timing.isolation,
            "device": f"{environment['device_type']}: {environment['device_name']}",
            **{k: environment[k] for k in ("device_name", "cpu_threads", "torch", "timm")},
            "note": note,
        })  # fmt: skip
    table = pd.DataFrame(out)
    if comparison.raw.empty:  # absent device: keep the columns numeric
        numeric = ["step_seconds", "train_im_s", "speedup", "speedup_low", "speedup_high", "gain_pct",
                   "measured_over_ideal"]  # fmt: skip
        table[numeric] = table[numeric].astype(float)
    raw = comparison.raw.assign(model=model_name, batch_size=batch_size)
    return table, raw


def _verdict(name: str, measured_over_ideal: float, comparison: bench.Comparison) -> str:
    """The baseline is the reference; the A/A control passes or fails ±3%; a row gets its FLOP-bound verdict."""
    if name == "baseline":
        return "reference"
    if name != CONTROL:
        return bench.flop_bound_verdict(measured_over_ideal, TARGET)
    if math.isnan(measured_over_ideal):
        return "A/A control: not measured"
    return "A/A control: outside 1.00 ± 3%" if comparison.control_note() else "A/A control: 1.00 ± 3%"


def rows_to_profile(speed: pd.DataFrame, limit: int = 2, always: bool = False) -> list[str]:
    """Rows of a :func:`timing_runs` table to profile: those outside the target, the headline row first, then
    the one farthest from its FLOP-ideal; at most ``limit``. ``always``: the headline row when none is flagged."""
    rows = speed[~speed["row"].isin(["baseline", CONTROL])]
    ratio = rows["measured_over_ideal"]
    flagged = rows[(ratio > TARGET[1]) | (ratio < TARGET[0])]
    distance = np.abs(np.log(flagged["measured_over_ideal"].astype(float)))
    names = list(flagged.assign(distance=distance).sort_values("distance", ascending=False)["row"])
    if HEADLINE in names:
        names = [HEADLINE] + [n for n in names if n != HEADLINE]
    if not names and always:
        names = [HEADLINE if HEADLINE in set(rows["row"]) else rows["row"].iloc[0]]
    return names[:limit]


def profile_rows(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    rows: dict[str, SkipViTSettings],
    calls: int = 2,
    device: str | None = None,
    top: int = 30,
    **model_kwargs: Any,
) -> dict[str, pd.DataFrame]:
    """Per row: :func:`vitstudy.bench.operator_breakdown` of the baseline's training step and the row's
    (operator × {baseline, row} self ms per call, a ``total`` row), the same steps :func:`timing_runs` times."""
    device = torch.device(device or bench.default_device())
    if not bench.device_available(device):
        return {}
    out = {}
    for name, settings in rows.items():
        steps, _ = _train_steps(model_name, input_size, num_classes, batch_size, {name: settings}, device, False,
                                **model_kwargs)  # fmt: skip
        out[name] = bench.operator_breakdown({arm: spec.build() for arm, spec in steps.items()}, calls, top)
    return out


def profile_explains(breakdown: pd.DataFrame, row: str, ideal_speedup: float) -> bool:
    """Whether a profile attributes a speed-up beyond the FLOP-ideal to attention's memory-bound operators.

    An operator's saving beyond the ideal is ``baseline_ms / ideal − row_ms`` (what it saves beyond shrinking
    like the FLOPs). True when the profile itself shows the excess (total ratio above 1.03 × ideal) and the
    :data:`ATTENTION_OPERATORS` save at least the whole excess of the total.
    """
    table = breakdown.set_index("operator")
    beyond = table["baseline"] / ideal_speedup - table[row]
    total = table.loc["total"]
    if total["baseline"] / total[row] <= bench.FLOP_BOUND_SLACK * ideal_speedup:
        return False
    named = [op for op in table.index if any(part in op.lower() for part in ATTENTION_OPERATORS)]
    return bool(beyond[named].sum() >= beyond["total"])


def explain_verdicts(speed: pd.DataFrame, profiles: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``speed`` with the verdict of every profiled row above 1.03 re-drawn: "explained by profile" only when
    :func:`profile_explains` attributes the excess to named operators."""
    speed = speed.copy()
    for name, breakdown in profiles.items():
        at = speed["row"] == name
        ratio = float(speed.loc[at, "measured_over_ideal"].iloc[0])
        ideal = float(speed.loc[at, "ideal_speedup"].iloc[0])
        explained = ratio > bench.FLOP_BOUND_SLACK and profile_explains(breakdown, name, ideal)
        speed.loc[at, "verdict"] = bench.flop_bound_verdict(ratio, TARGET, explained)
    return speed
