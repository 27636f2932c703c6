"""SkipViT experiments behind notebooks 04 (Table 1) and 05 (Table 3): budgets per scale, runs, tables, plots.

Each Table row is one training run from scratch with the row's :class:`~vitstudy.skipvit.SkipViTSettings`
(cached under ``data/cache/skipvit/``, so a re-run loads it), evaluated on the test split with dropping kept on
and switched off. Throughput is timed with :func:`vitstudy.bench.measure_train_step` on random data, the rows
interleaved round by round so that a slow spell of a shared machine does not land on one row only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import bench
from .config import Scale, TrainConfig, get_scale
from .data import make_loader
from .files import cache_dir
from .models import create_model
from .plots import new_figure
from .reference import load_reference
from .skipvit import (
    BASELINE,
    TABLE1,
    TABLE3,
    SkipViTSettings,
    apply_skipvit,
    configure,
    dropping,
    flop_gain,
    warmup_epochs_for,
    warmup_hook,
)
from .train import baseline, baseline_run_dir, config_fingerprint, default_model_factory, evaluate, train


@dataclass(frozen=True)
class StudyBudget:
    """How much one SkipViT notebook trains and times at one scale."""

    scale: str
    train: TrainConfig  # one from-scratch run per table row and seed
    seeds: tuple[int, ...] = (0,)
    warmup_fraction: float = 0.15  # the paper: 15 warm-up epochs of 100
    # "scratch": every row trains from random weights (the paper's protocol); "baseline": every row fine-tunes the
    # scale's cached baseline (notebook 00) with its dropping, for budgets too short to train a ViT from scratch.
    start: str = "scratch"
    paper_model: str = "vit_small_patch16_224"  # the paper's model, timed on random data
    paper_img_size: int = 224  # the paper's resolution; only smoke shrinks it (its numbers are meaningless)
    paper_batch: int = 16
    small_batch: int = 64
    timing: bench.TimingSettings = bench.TimingSettings(warmup=1, runs=3)
    timing_rounds: int = 1  # timed sweeps over the rows = timing.runs x timing_rounds
    note: str = ""

    @property
    def paper_input(self) -> tuple[int, int, int]:
        return (3, self.paper_img_size, self.paper_img_size)

    @property
    def warmup_epochs(self) -> int:
        return warmup_epochs_for(self.train.epochs, self.warmup_fraction)


def table1_budget(scale: Scale | str | None = None) -> StudyBudget:
    """Notebook 04's budget: nine rows must train in a few minutes at ``quick`` on a 2-core CPU."""
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    base = scale.train
    if scale.name == "smoke":
        cfg = dataclasses.replace(base, train_size=256, val_size=128, test_size=256, epochs=1)
        return StudyBudget("smoke", cfg, start="baseline", paper_img_size=64, paper_batch=2, small_batch=16,
                           timing=bench.TimingSettings(warmup=1, runs=1), note="numbers meaningless")  # fmt: skip
    if scale.name == "quick":
        # 2,000 images x 1 epoch per row: from scratch that is ~30 updates and ~30% top-1, so rows fine-tune the
        # quick baseline (10k images x 6 epochs, trained by notebook 00) instead, at a fine-tuning learning rate.
        cfg = dataclasses.replace(base, train_size=2000, val_size=500, test_size=2000, epochs=1, lr=5e-4,
                                  warmup_epochs=0.1)  # fmt: skip
        return StudyBudget(
            "quick", cfg, start="baseline", paper_batch=16, timing=bench.TimingSettings(warmup=1, runs=3),
            note="quick: every row fine-tunes notebook 00's quick baseline for 1 epoch on 2,000 images with its "
            "dropping (no warm-up: the baseline's attention is already trained); one seed, so differences "
            "under ~1 point are noise. full: every row from scratch, 3 seeds, warm-up 15% of the epochs.",
        )  # fmt: skip
    if scale.name == "full":
        return StudyBudget("full", base, seeds=scale.seeds, paper_batch=32, timing_rounds=3,
                           timing=bench.TimingSettings(warmup=2, runs=5),
                           note="whole Fashion-MNIST, 30 epochs, 3 seeds, warm-up 15% of the epochs")  # fmt: skip
    return StudyBudget(scale.name, base, seeds=scale.seeds, paper_batch=64, timing_rounds=3,
                       timing=bench.TimingSettings(warmup=3, runs=10), note="the paper's recipe (Table 2)")  # fmt: skip


def table3_budget(scale: Scale | str | None = None) -> StudyBudget:
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


def run_dir(budget: StudyBudget, name: str, settings: SkipViTSettings, warmup: int, seed: int) -> Path:
    """Cache folder of one run: scale, row, training settings, SkipViT settings, warm-up and seed."""
    cfg = dataclasses.replace(budget.train, seed=seed)
    start = baseline_run_dir(get_scale(budget.scale), seed).name if budget.start == "baseline" else "scratch"
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(settings), start], sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "skipvit" / f"{budget.scale}-{name}-{config_fingerprint(cfg)}-{tag}-w{warmup}-seed{seed}"


def train_row(
    budget: StudyBudget,
    name: str,
    settings: SkipViTSettings,
    seed: int = 0,
    warmup: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one row from scratch (dropping from epoch ``warmup`` on) and evaluate with dropping on and off."""
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
        "top1_drop_on": on["top1"],
        "top1_drop_off": off["top1"],
        "val_top1": result.metrics["val_top1"],
        "loop_im_s": float(dropping_epochs["train_images_per_s"].median()) if len(dropping_epochs) else math.nan,
        "train_minutes": result.metrics["train_seconds"] / 60,
        "history": history.assign(row=name, seed=seed, warmup_epochs=warmup),
        "settings": json.dumps(dataclasses.asdict(settings)),
        "config": json.dumps(dataclasses.asdict(cfg)),
    }


def accuracy_runs(budget: StudyBudget, rows: dict[str, SkipViTSettings] = TABLE1, progress: bool = False):
    """Every row x seed; returns (one results row per run, the concatenated per-epoch histories)."""
    runs = [train_row(budget, name, rows[name], seed, progress=progress) for name in rows for seed in budget.seeds]
    histories = pd.concat([r.pop("history") for r in runs], ignore_index=True)
    return pd.DataFrame(runs), histories


def accuracy_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (std over seeds) of top-1 per row, and the difference of the means from the baseline."""
    grouped = runs.groupby("row", sort=False)
    summary = grouped.agg(
        setting=("setting", "first"),
        seeds=("seed", "count"),
        top1_on=("top1_drop_on", "mean"),
        top1_on_std=("top1_drop_on", "std"),
        top1_off=("top1_drop_off", "mean"),
        top1_off_std=("top1_drop_off", "std"),
        loop_im_s=("loop_im_s", "median"),
    ).reset_index()
    base = summary.loc[summary["row"] == "baseline"]
    if len(base):
        summary["top1_on_diff"] = summary["top1_on"] - float(base["top1_on"].iloc[0])
        summary["top1_off_diff"] = summary["top1_off"] - float(base["top1_off"].iloc[0])
    return summary


# ----------------------------------------------------------------------------------------------------------
# Throughput


def timing_runs(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    budget: StudyBudget,
    rows: dict[str, SkipViTSettings] = TABLE1,
    device: str | None = None,
    **model_kwargs: Any,
) -> pd.DataFrame:
    """Training throughput (random data) and FLOP-ideal gain of every row on one model.

    Every row gets its own model copy and AdamW; after ``timing.warmup`` untimed steps each, the rows are timed
    one step each in turn, ``timing.runs × timing_rounds`` sweeps. A row's gain is the median over sweeps of
    (baseline step time / row step time) − 1: steps of one sweep are seconds apart, so a slow spell of a
    shared machine slows the baseline and the row alike instead of landing on one row.
    """
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs))
    flops_off = bench.flops_per_image(configure(model, BASELINE), input_size)
    flops = {name: flop_gain(configure(model, s), input_size, flops_off) for name, s in rows.items()}
    rows = {"baseline": BASELINE, **rows}
    steps = {
        name: bench.make_train_step(configure(copy.deepcopy(model), s), batch_size, input_size, num_classes, device)
        for name, s in rows.items()
    }
    rounds = dataclasses.replace(budget.timing, runs=budget.timing.runs * budget.timing_rounds)
    seconds = bench.time_interleaved(steps, device, rounds)
    base = np.array(seconds["baseline"])
    environment = bench.environment_info(device)
    out = []
    for name, settings in rows.items():
        if name not in flops:
            continue
        times = np.array(seconds[name])
        gain = 100 * (float(np.median(base / times)) - 1)
        ideal = flops[name]["ideal_gain_pct"]
        out.append({
            "row": name,
            "setting": settings.label,
            "model": model_name,
            "batch_size": batch_size,
            "train_im_s": batch_size / float(np.median(times)),
            "gain_pct": gain,
            **flops[name],
            "measured_over_ideal": gain / ideal if ideal > 0 else math.nan,
            "timed_steps": len(times),
            "step_seconds_iqr": float(np.subtract(*np.percentile(times, [75, 25]))),
            **{k: environment[k] for k in ("device_name", "cpu_threads", "torch", "timm")},
        })  # fmt: skip
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------------------
# Tables


def table1(accuracy: pd.DataFrame, paper_speed: pd.DataFrame, small_speed: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with the paper's numbers beside ours: throughput gains (two models), FLOP-ideal gain, top-1."""
    reference = load_reference("skipvit_1")
    paper = pd.DataFrame({
        "row": list(TABLE1),
        "paper_im_s": reference["throughput_im_s"].to_numpy(),
        "paper_gain_pct": reference["throughput_gain_pct"].to_numpy(),
        "paper_top1": reference["top1"].to_numpy(),
        "paper_top1_diff": reference["top1_diff"].to_numpy(),
    })  # fmt: skip
    vits = paper_speed[["row", "setting", "train_im_s", "gain_pct", "ideal_gain_pct", "measured_over_ideal"]]
    vits = vits.rename(columns={c: f"vits_{c}" for c in vits.columns if c not in ("row", "setting")})
    small = small_speed[["row", "train_im_s", "gain_pct", "ideal_gain_pct"]]
    small = small.rename(columns={c: f"small_{c}" for c in small.columns if c != "row"})
    acc = accuracy[["row", "top1_on", "top1_on_std", "top1_on_diff", "top1_off", "top1_off_diff"]]
    return paper.merge(vits, on="row").merge(small, on="row").merge(acc, on="row")


def _faster_pct(at10: pd.Series, at11: pd.Series, column: str) -> float:
    """How much faster (%) skip 11 is than skip 10 in ``column`` (images/s); NaN when not measured."""
    a, b = pd.to_numeric(pd.Series([at10[column], at11[column]]), errors="coerce")
    return 100 * (b / a - 1)


def skip_layer_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Skip 11 vs skip 10 for both two-stage settings: throughput of 11 relative to 10 (%), paper and ours."""
    out = []
    for stages in ("4_7_30", "6_8_35"):
        at10 = table.loc[table["row"] == f"skip_{stages}_s10"].iloc[0]
        at11 = table.loc[table["row"] == f"skip_{stages}_s11"].iloc[0]
        ideal10, ideal11 = 1 + at10["vits_ideal_gain_pct"] / 100, 1 + at11["vits_ideal_gain_pct"] / 100
        out.append({
            "drop layers / ratios": at10["setting"].rsplit(" / ", 1)[0],
            "paper: 11 vs 10 (%)": _faster_pct(at10, at11, "paper_im_s"),
            "ours ViT-S/16: 11 vs 10 (%)": _faster_pct(at10, at11, "vits_train_im_s"),
            "ours small model: 11 vs 10 (%)": _faster_pct(at10, at11, "small_train_im_s"),
            "FLOP-ideal ViT-S/16: 11 vs 10 (%)": 100 * (ideal11 / ideal10 - 1),
            "paper top-1: 11 minus 10": at11["paper_top1"] - at10["paper_top1"],
            "ours top-1: 11 minus 10": at11["top1_on"] - at10["top1_on"],
        })  # fmt: skip
    return pd.DataFrame(out)


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (warm-up or not) beside the paper's two rows."""
    reference = load_reference("skipvit_3")
    grouped = runs.groupby("warmup_epochs").agg(
        epochs=("epochs", "first"), seeds=("seed", "count"),
        top1_on=("top1_drop_on", "mean"), top1_on_std=("top1_drop_on", "std"),
        top1_off=("top1_drop_off", "mean"),
    ).reset_index()  # fmt: skip
    grouped["warmup"] = np.where(grouped["warmup_epochs"] > 0, "yes", "no")
    grouped["paper_warmup_epochs"] = [0 if w == "no" else 15 for w in grouped["warmup"]]
    grouped["paper_epochs"] = 100
    grouped["paper_top1"] = [
        float(reference.loc[reference["warmup_epochs"] == p, "top1"].iloc[0]) for p in grouped["paper_warmup_epochs"]
    ]
    columns = ["warmup", "warmup_epochs", "epochs", "seeds", "top1_on", "top1_on_std", "top1_off",
               "paper_warmup_epochs", "paper_epochs", "paper_top1"]  # fmt: skip
    return grouped[columns]


def warmup_runs(budget: StudyBudget, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3's configuration (4,7 at 30%, skip 10) without and with warm-up, every seed."""
    runs = [
        train_row(budget, "table3", TABLE3, seed, warmup=w, progress=progress)
        for w in (0, max(1, budget.warmup_epochs))
        for seed in budget.seeds
    ]
    histories = pd.concat([r.pop("history") for r in runs], ignore_index=True)
    return pd.DataFrame(runs), histories


# ----------------------------------------------------------------------------------------------------------
# Plots (data in, Figure out)


def gain_plot(table: pd.DataFrame) -> Figure:
    """Per row: measured training-throughput gain vs the FLOP-ideal gain (ViT-S/16 and the small model) and
    the paper's gain."""
    fig = new_figure((10, 4))
    ax = fig.subplots()
    rows = table[table["row"] != "baseline"]
    x = np.arange(len(rows))
    bars = [
        ("paper_gain_pct", "paper (Ascend 910A)", "tab:gray"),
        ("vits_gain_pct", "ours ViT-S/16 measured", "tab:blue"),
        ("vits_ideal_gain_pct", "ours ViT-S/16 FLOP-ideal", "lightsteelblue"),
        ("small_gain_pct", "ours small model measured", "tab:orange"),
        ("small_ideal_gain_pct", "ours small model FLOP-ideal", "navajowhite"),
    ]
    width = 0.8 / len(bars)
    for i, (column, label, color) in enumerate(bars):
        values = pd.to_numeric(rows[column], errors="coerce")
        ax.bar(x + (i - len(bars) / 2 + 0.5) * width, values, width, label=label, color=color)
    ax.set_xticks(x, rows["setting"], rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="training throughput gain (%)", title="Table 1: speed-up over the baseline")
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return fig


def accuracy_plot(table: pd.DataFrame) -> Figure:
    """Top-1 difference from the baseline vs throughput gain: ours (small model, dropping on) and the paper's."""
    fig = new_figure((6.5, 4.5))
    ax = fig.subplots()
    rows = table[table["row"] != "baseline"]
    ax.errorbar(rows["small_gain_pct"], rows["top1_on_diff"], yerr=rows["top1_on_std"].fillna(0), fmt="o",
                color="tab:orange", label="ours: small model, Fashion-MNIST")  # fmt: skip
    ax.scatter(rows["paper_gain_pct"], rows["paper_top1_diff"], marker="s", color="tab:gray",
               label="paper: ViT-S, ImageNet")  # fmt: skip
    for _, row in rows.iterrows():
        ax.annotate(row["setting"], (row["small_gain_pct"], row["top1_on_diff"]), fontsize=6, alpha=0.8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="training throughput gain (%)", ylabel="top-1 minus baseline (points)", title="accuracy vs speed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def warmup_plot(histories: pd.DataFrame) -> Figure:
    """Validation top-1 per epoch with and without warm-up (dropping on during validation once it is on)."""
    fig = new_figure((6.5, 3.8))
    ax = fig.subplots()
    for (warmup, seed), run in histories.groupby(["warmup_epochs", "seed"]):
        label = f"warm-up {warmup} epoch(s)" if warmup else "no warm-up"
        ax.plot(run["epoch"], run["val_top1"], "-o" if warmup else "--s", label=f"{label}, seed {seed}")
        if warmup:
            ax.axvline(warmup + 0.5, color="gray", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="4,7 / 30% / skip 10: warm-up or not")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
