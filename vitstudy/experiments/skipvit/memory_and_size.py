"""Notebook 09, the paper's two open questions: how much activation memory does token dropping save in training,
and does the headline setting's gain hold on larger models?

Memory: what a training step keeps for backward, counted exactly on any device
(:func:`vitstudy.skipvit.saved_activation_bytes`), for every Table 1 row (and plain dropping) on the paper's model
and on the small model; on CUDA also the step's ``torch.cuda.max_memory_allocated`` (weights, gradients, optimizer
state and transient buffers included), elsewhere NaN with a note. Beside both, the FLOP-ideal speed-up of the same
row: whether memory shrinks like compute.

Model size: the headline row (drop 55 % after block 6 of 12, re-insert at block 11) is scaled with depth by
keeping the same *fractions* of the network: drop after block ``round(6/12 · depth)``, re-insert at
``round(11/12 · depth)``, ratio unchanged. ViT-S and ViT-B (12 blocks) keep 6 / 11; ViT-L (24 blocks) drops after
block 12 and re-inserts at 22 (the dropped tokens skip 9 of 24 blocks, as they skip 4.5 of 12 — rounding gives 4 of
12 at depth 12). Per model: the FLOP-ideal speed-up, the memory saved, and — where the CPU allows — the measured
training-step speed-up with an A/A control (:func:`.common.timing_runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ... import bench
from ...bench import SMOKE_TIMING
from ...config import check, check_choice, scale_budget
from ...models import create_model
from ...plots import new_figure
from ...skipvit import (
    BASELINE,
    HEADLINE,
    PRESETS,
    SkipViTSettings,
    apply_skipvit,
    configure,
    dropping,
    flop_gain,
    saved_activation_bytes,
)
from ...steps import training_step
from ..sentences import is_missing, measured, number, paragraph
from .common import CONTROL, timing_runs

MIB = 2**20
MODELS = {"ViT-S/16": "vit_small_patch16_224", "ViT-B/16": "vit_base_patch16_224", "ViT-L/16": "vit_large_patch16_224"}
SMALL_MODEL, SMALL_INPUT = "vitstudy_tiny_patch4_28", (1, 28, 28)
HEADLINE_FRACTIONS = (6 / 12, 11 / 12)  # drop layer and skip layer as fractions of the depth
HEADLINE_RATIO = 0.55


@dataclass(frozen=True)
class MemoryAndSizeBudget:
    """What notebook 09 counts and times at one scale."""

    img_size: int = 224  # the paper's models' resolution; smoke shrinks it (its numbers are meaningless)
    batch_size: int = 2  # images per memory count and per timed training step
    models: tuple[str, ...] = tuple(MODELS)  # the model-size rows (keys of MODELS)
    timed: tuple[str, ...] = ("ViT-S/16", "ViT-B/16")  # a ViT-L/16 training step is too slow on a 2-core CPU
    # One process per (round, arm), as notebook 04 times ViT-S/16: in-process training steps of large models read
    # biased A/A controls on this CPU (figures/tables/04_aa_isolation_vit_small.md).
    timing: bench.CompareSettings = bench.CompareSettings(
        rounds=3, min_run_time=0.5, warmup_calls=1, isolation="process"
    )
    # The memory table's rows (keys of PRESETS, the baseline left out); None: every Table 1 row and plain dropping.
    memory_rows: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        for name in (*self.models, *self.timed):
            check_choice("model", name, tuple(MODELS))
        for name in self.memory_rows or ():
            check_choice("memory_rows", name, tuple(n for n in PRESETS if n != "baseline"))

    @property
    def vit_input(self) -> tuple[int, int, int]:
        return (3, self.img_size, self.img_size)


BUDGETS: dict[str, MemoryAndSizeBudget] = {
    "smoke": MemoryAndSizeBudget(
        img_size=64,
        models=("ViT-S/16",),
        timed=("ViT-S/16",),
        timing=SMOKE_TIMING,
        # one row of each mode: skip (one stage and two), EViT's fused token, plain dropping
        memory_rows=(HEADLINE, "skip_4_7_30_s10", "fused_6_45", "drop_6_55"),
    ),
    "quick": MemoryAndSizeBudget(),
    "full": MemoryAndSizeBudget(),
    "paper": MemoryAndSizeBudget(),
}


def budget(scale: str) -> MemoryAndSizeBudget:
    """Notebook 09's budget at ``scale`` (:func:`vitstudy.config.scale_budget`; no ImageNet needed at ``paper``)."""
    return scale_budget(BUDGETS, scale)


# ----------------------------------------------------------------------------------------------------------
# Memory


def cuda_peak_bytes(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """``max_memory_allocated`` over one :func:`vitstudy.steps.training_step` (AdamW) on CUDA; NaN elsewhere."""
    if images.device.type != "cuda":
        return math.nan
    optimizer = torch.optim.AdamW(model.parameters())
    torch.cuda.synchronize(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    training_step(model, optimizer, images, targets)
    torch.cuda.synchronize(images.device)
    return float(torch.cuda.max_memory_allocated(images.device))


def memory_rows(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    rows: dict[str, SkipViTSettings],
    batch_size: int = 2,
    device: str | None = None,
    seed: int = 0,
    **model_kwargs: Any,
) -> pd.DataFrame:
    """Per row: activation MiB per image saved for backward with dropping off and on, the saving, the
    FLOP-ideal speed-up beside it, and the CUDA peak of a whole step (NaN + note without CUDA)."""
    check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
    device = torch.device(device or bench.default_device())
    if not bench.device_available(device):
        device = torch.device("cpu")  # saved bytes do not depend on the device: count them on the CPU
    torch.manual_seed(seed)
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs)).to(device)
    images = torch.randn(batch_size, *input_size, device=device)
    targets = torch.randint(0, num_classes, (batch_size,), device=device)
    flops_off = bench.flops_per_image(configure(model, BASELINE), input_size)
    with dropping(model, False):
        saved_off = saved_activation_bytes(model, images, targets) / batch_size
        peak_off = cuda_peak_bytes(model, images, targets) / batch_size
    out = []
    for name, settings in rows.items():
        configure(model, settings)
        saved_on = saved_activation_bytes(model, images, targets) / batch_size
        peak_on = cuda_peak_bytes(model, images, targets) / batch_size
        gain = flop_gain(model, input_size, flops_off)
        out.append(
            {
                "model": model_name,
                "input": "x".join(map(str, input_size)),
                "row": name,
                "setting": settings.label,
                "batch_size": batch_size,
                "saved_mib_per_image_off": saved_off / MIB,
                "saved_mib_per_image_on": saved_on / MIB,
                "saved_ratio": saved_off / saved_on,
                "memory_saving_pct": 100 * (1 - saved_on / saved_off),
                "ideal_speedup": 1 + gain["ideal_gain_pct"] / 100,
                "cuda_peak_mib_per_image_off": peak_off / MIB,
                "cuda_peak_mib_per_image_on": peak_on / MIB,
                "device": str(device),
                "note": "" if device.type == "cuda" else bench.NOT_MEASURED_NO_CUDA,
            }
        )
    return pd.DataFrame(out)


def memory_table(budget: MemoryAndSizeBudget, device: str | None = None) -> pd.DataFrame:
    """The budget's memory rows (every Table 1 row and plain dropping by default) on the paper's model at its
    resolution and on the small model."""
    rows = {n: s for n, s in PRESETS.items() if n != "baseline" and n in (budget.memory_rows or PRESETS)}
    return pd.concat(
        [
            memory_rows(
                MODELS["ViT-S/16"], budget.vit_input, 1000, rows, budget.batch_size, device, img_size=budget.img_size
            ),
            memory_rows(SMALL_MODEL, SMALL_INPUT, 10, rows, budget.batch_size, device),
        ],
        ignore_index=True,
    )


# ----------------------------------------------------------------------------------------------------------
# Model size


def scaled_headline(depth: int) -> SkipViTSettings:
    """6 / 55 % / skip 11 scaled to ``depth`` blocks: the same fractions of the network (module docstring)."""
    drop, skip = (max(1, round(f * depth)) for f in HEADLINE_FRACTIONS)
    return SkipViTSettings((drop,), (HEADLINE_RATIO,), skip_layer=max(skip, drop + 1))


def model_size_rows(budget: MemoryAndSizeBudget, device: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per model: depth, the scaled setting, FLOP-ideal speed-up, saved activation MiB per image off and
    on, and for the ``timed`` models the measured training-step speed row (:func:`~.common.timing_runs`:
    baseline, the scaled headline as ``"headline"``, the A/A copy) with the A/A control's speed-up; the others are
    NaN, "not measured". Returns (table, the comparisons' raw per-block times)."""
    input_size = budget.vit_input
    out, raws = [], []
    for label in budget.models:
        name = MODELS[label]
        torch.manual_seed(0)
        model = apply_skipvit(create_model(name, img_size=budget.img_size))
        depth = len(model.blocks)
        settings = scaled_headline(depth)
        gain = flop_gain(configure(model, settings), input_size)
        images, targets = torch.randn(1, *input_size), torch.randint(0, 1000, (1,))
        with dropping(model, False):
            saved_off = saved_activation_bytes(model, images, targets)
        saved_on = saved_activation_bytes(model, images, targets)
        del model
        row: dict[str, Any] = {
            "model": label,
            "timm_name": name,
            "depth": depth,
            "setting": settings.label,
            "ideal_speedup": gain["gflops_off"] / gain["gflops_on"],
            "gflops_off": gain["gflops_off"],
            "saved_mib_per_image_off": saved_off / MIB,
            "saved_mib_per_image_on": saved_on / MIB,
            "memory_saving_pct": 100 * (1 - saved_on / saved_off),
        }
        if label in budget.timed:
            table, raw = timing_runs(
                name,
                input_size,
                1000,
                budget.batch_size,
                budget.timing,
                {"headline": settings},
                device,
                img_size=budget.img_size,
            )
            by_row = table.set_index("row")
            timed = by_row.loc["headline"].drop(
                ["setting", "model", "ideal_speedup", "gflops_off", "gflops_on", "ideal_gain_pct"]
            )
            row.update(timed.to_dict(), control_speedup=by_row.loc[CONTROL, "speedup"])
            raws.append(raw.assign(model=label))
        else:
            row.update(
                verdict=bench.flop_bound_verdict(math.nan, bench.FLOP_IDEAL_TARGET),
                note="not timed: a training step is too slow on this CPU",
            )
        out.append(row)
    raw = pd.concat(raws, ignore_index=True) if raws else pd.DataFrame()
    return pd.DataFrame(out), raw


# ----------------------------------------------------------------------------------------------------------
# Figures (data in, Figure out)


def memory_plot(memory: pd.DataFrame) -> Figure:
    """Activation memory saved for backward (%) beside the FLOP-ideal compute saving (%), per row and model."""
    fig = new_figure((11, 4))
    axes = fig.subplots(1, memory["model"].nunique(), sharey=True, squeeze=False)[0]
    for ax, (model, rows) in zip(axes, memory.groupby("model", sort=False)):
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["memory_saving_pct"], 0.4, label="activation memory saved (%)", color="tab:green")
        ax.bar(x + 0.2, 100 * (1 - 1 / rows["ideal_speedup"]), 0.4, label="FLOPs saved (%)", color="tab:gray")
        ax.set_xticks(x, rows["setting"], rotation=30, ha="right", fontsize=7)
        ax.set(title=f"{model} ({rows['input'].iloc[0]})", ylabel="saved vs dropping off (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def model_size_plot(sizes: pd.DataFrame) -> Figure:
    """Per model: FLOP-ideal and measured training-step speed-up (95 % interval), and memory saved."""
    fig = new_figure((9, 3.8))
    speed, memory = fig.subplots(1, 2)
    x = np.arange(len(sizes))
    speed.bar(x - 0.2, sizes["ideal_speedup"], 0.4, color="tab:gray", label="FLOP-ideal")
    measured = sizes["speedup"].to_numpy(dtype=float)
    error = [np.nan_to_num(measured - sizes["speedup_low"]), np.nan_to_num(sizes["speedup_high"] - measured)]
    speed.bar(
        x + 0.2,
        np.nan_to_num(measured),
        0.4,
        yerr=error,
        capsize=3,
        color="tab:blue",
        label="measured (not timed: no bar)",
    )
    speed.axhline(1, color="black", lw=0.8)
    speed.set_xticks(x, [f"{m}\n{s}" for m, s in zip(sizes["model"], sizes["setting"])], fontsize=7)
    speed.set(ylabel="training speed-up over baseline", title="headline setting scaled with depth")
    speed.legend(fontsize=7)
    memory.bar(x, sizes["memory_saving_pct"], color="tab:green")
    memory.set_xticks(x, sizes["model"], fontsize=8)
    memory.set(ylabel="activation memory saved (%)", title="memory kept for backward")
    for ax in (speed, memory):
        ax.grid(axis="y", alpha=0.3)
    return fig


def findings(memory: pd.DataFrame, sizes: pd.DataFrame) -> str:
    """What notebook 09 shows, in a few sentences computed from :func:`memory_table` and :func:`model_size_rows`
    (Markdown): the headline row's activation saving on ViT-S, what the models that share a setting show side by
    side, a model with another setting said apart (never read as a trend), and the measured speed-ups."""
    sentences = ["How much training memory does token dropping save, and does its gain hold on larger models?"]
    vit_s = memory[(memory["model"] == MODELS["ViT-S/16"]) & (memory["row"] == HEADLINE)]
    if len(vit_s):
        row = vit_s.iloc[0]
        peak = row["cuda_peak_mib_per_image_on"]
        sentences.append(
            f"On ViT-S/16 the headline row ({row['setting']}) keeps {number(row['memory_saving_pct'], 1, ' %')} "
            f"less activation memory for backward ({number(row['saved_mib_per_image_off'], 1)} → "
            f"{number(row['saved_mib_per_image_on'], 1)} MiB per image); the CUDA peak with dropping: "
            f"{row['note'] if is_missing(peak) and row['note'] else number(peak, 1, ' MiB')}."
        )
    rows = sizes.to_dict("records")
    if rows:
        first = rows[0]["setting"]
        same = [r for r in rows if r["setting"] == first]
        other = [r for r in rows if r["setting"] != first]
        if len(same) > 1:
            names = " and ".join(r["model"] for r in same)
            ideals = " and ".join(number(r["ideal_speedup"], unit="×") for r in same)
            savings = " and ".join(number(r["memory_saving_pct"], 1, " %") for r in same)
            spread = same[-1]["ideal_speedup"] - same[0]["ideal_speedup"]
            trend = (
                "the same gain within 0.01×"
                if abs(spread) < 0.01
                else f"a gain that {'grows' if spread > 0 else 'shrinks'} with the model"
            )
            sentences.append(
                f"With the same setting, {names} have FLOP ideals of {ideals} and save {savings}: {trend}."
            )
        for r in other:
            depth = f" ({r['depth']} blocks)" if r.get("depth") else ""
            sentences.append(
                f"{r['model']}{depth} takes another setting ({r['setting']}): ideal "
                f"{number(r['ideal_speedup'], unit='×')}, memory saved {number(r['memory_saving_pct'], 1, ' %')}, "
                "so it is not the same row on a larger model and no trend in size follows from it."
            )
        timed = "; ".join(f"{r['model']} {measured(r)}" for r in rows)
        sentences.append(f"Measured training speed-ups: {timed} (the paper gives no number for either question).")
    return paragraph(sentences)
