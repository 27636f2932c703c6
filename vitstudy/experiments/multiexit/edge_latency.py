"""Notebook 10: early exit where the report wanted it, on an edge device: one image at a time.

- Latency at batch 1 on real test images: the plain model, the per-sample exit at notebook 02's validation-chosen
  operating point, the exit machinery with a threshold no image reaches (what the exits cost when none fires) and
  the A/A control, each image alone (the per-image timer, :func:`vitstudy.bench.time_models_per_image`); the exit
  histogram and its FLOP ideal; an operator profile of where the exit path's batch-1 overheads go; each arm's
  operators per image, counted (``bench.operators``).
- The same operating point across batch sizes (``bench.compare_models``, one comparison and A/A per batch), each
  arm's operators per image counted beside the measured gap (a small model at a small batch is bound by them).
- ViT-B/16 at 224 at batch 1, forced out after blocks 3 / 6 / 9 on random input (Table 5.1's protocol,
  :func:`.common.table_5_1`).
- Both methods at once (:func:`composition_table`) and the table beside the field (:func:`beside_field`).

Both methods at once: the per-sample exit on a backbone whose SkipViT dropping is on (the core's
:class:`~vitstudy.multiexit.SkipExitViT`). The table keeps the operating point's exits outside SkipViT's drop region
(from the first drop layer to the skip layer, :func:`compatible_exits`), where an image that leaves early pays what
it pays without SkipViT and one that runs to the end pays SkipViT's path (:func:`composed_ideal`).

The table beside the field: LGViT, A-ViT and CF-ViT as published, and ours, never in the same columns.

The published numbers are a hand transcription (``data/reference/field_edge_speed.csv``: what each measures, timed or
counted, on which model and data set). Their rows fill only ``published_*`` columns, ours only ``ours_*`` columns:
a published speed-up and one of ours are measured on different models, data, devices and batch sizes, so no column
ever holds both.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ... import bench, skipvit
from ...bench.operators import operator_ideal, operators_per_image
from ...config import PAPER_SMOKE, Scale, check, scale_budget
from ...formatting import NOT_MEASURED
from ...multiexit import (
    DEFAULT_EXITS,
    ExitCosts,
    ExitStudy,
    MultiExitViT,
    SkipExitViT,
    check_exits,
    exits_label,
    logits_from_features,
    simulate,
)
from ...reference import REFERENCE_DIR
from ...skipvit import HEADLINE, SkipViTMixin, SkipViTSettings, preset
from ..sentences import is_missing, judged, number, paragraph, percent_cost, points
from .common import CONTROL_LABEL, SMOKE_ONE_CALL_TIMING, exit_row, table_5_1, timing_batch
from .study import paired_loss_interval

EXIT_ARM, IDLE_ARM = "per-sample exit", "exit machinery, never fires"
SKIP_ARM, BOTH_ARM = "SkipViT dropping", "both"
SWEEP_BATCHES = (1, 8, 64, 256)  # one image (the edge), then up to the throughput batch of notebook 02


@dataclass(frozen=True)
class EdgeLatencyBudget:
    """How much notebook 10 times at one scale."""

    scale: str
    latency_images: int  # test images timed alone, each by every arm (the first ones of the test split)
    warmup_images: int  # images every arm runs untimed first
    sweep_timing: bench.CompareSettings
    vit_b_timing: bench.CompareSettings  # ViT-B/16 at batch 1
    composition_timing: bench.CompareSettings
    sweep_batches: tuple[int, ...] = SWEEP_BATCHES
    vit_b_exits: tuple[int, ...] = DEFAULT_EXITS
    skipvit_preset: str = HEADLINE  # SkipViT's headline row: drop 55% after block 6, back at block 11
    composition_batch: int = 256  # notebook 02's throughput batch
    profile_calls: int = 20  # batch-1 calls per arm in the operator profile
    bootstrap: int = 2000  # resamples of every paired interval over images
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("latency_images", "composition_batch", "profile_calls"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        check(self.warmup_images >= 0, "warmup_images", self.warmup_images, "an integer >= 0")
        check(
            bool(self.sweep_batches) and min(self.sweep_batches) >= 1,
            "sweep_batches",
            self.sweep_batches,
            "batch sizes >= 1",
        )
        check_exits(self.vit_b_exits, 12)  # ViT-B/16 has 12 blocks
        preset(self.skipvit_preset)  # an unknown preset is one line naming the presets


_QUICK = EdgeLatencyBudget(
    "quick",
    # 2,000 of the 10,000 test images: a p99 from 20 images in the tail. The tiny model takes a few ms per image alone
    # on a 2-core CPU, so the batch-1 table, the sweep, ViT-B/16 at batch 1 and the composition stay within minutes.
    latency_images=2000,
    warmup_images=20,
    sweep_timing=bench.CompareSettings(rounds=6, min_run_time=0.2, warmup_calls=1),
    vit_b_timing=bench.CompareSettings(rounds=6, min_run_time=0.4, warmup_calls=1),
    composition_timing=bench.CompareSettings(rounds=6, min_run_time=0.2, warmup_calls=1),
    note="minutes on a 2-core CPU: 2,000 test images at batch 1, the sweep, ViT-B/16, the composition",
)


_SMOKE = EdgeLatencyBudget(
    "smoke",
    16,
    2,
    SMOKE_ONE_CALL_TIMING,
    SMOKE_ONE_CALL_TIMING,
    SMOKE_ONE_CALL_TIMING,
    sweep_batches=(1, 8),
    vit_b_exits=(3,),
    composition_batch=16,
    profile_calls=2,
    bootstrap=200,
    note="CI: seconds, numbers meaningless",
)


BUDGETS: dict[str, EdgeLatencyBudget] = {
    "smoke": _SMOKE,
    "quick": _QUICK,
    "full": dataclasses.replace(_QUICK, scale="full", latency_images=10_000, note="every test image at batch 1"),
    "paper": dataclasses.replace(
        _QUICK, scale="paper", note="the study is ViT-B/16 on ImageNet: real images at batch 1"
    ),
    PAPER_SMOKE: dataclasses.replace(
        _SMOKE,
        scale=PAPER_SMOKE,
        latency_images=4,
        warmup_images=1,
        sweep_batches=(1, 2),
        composition_batch=2,
        note="a test on a CPU",
    ),
}


def budget(scale: Scale | str | None = None) -> EdgeLatencyBudget:
    """Notebook 10's budget at a scale (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


# ----------------------------------------------------------------------------------------------------------
# Batch 1 on real test images


def subset_exit_blocks(study: ExitStudy, model: MultiExitViT, count: int) -> torch.Tensor:
    """``[count]`` the block each of the first ``count`` test images leaves after under ``model``'s settings
    (depth: the end), from the recorded features (``simulate`` reproduces the forward; the policy is per image)."""
    logits = logits_from_features(model, study.features["test"].first(count))
    return simulate(logits, model.exits, study.depth, model.threshold, model.policy, model.confidence).exit_block


def exit_histogram(exits: Sequence[int], depth: int, exit_block: torch.Tensor) -> pd.DataFrame:
    """How many images left after each exit block (and at the end, ``depth``), and their share (%)."""
    blocks = [*exits, depth]
    counts = [int((exit_block == block).sum()) for block in blocks]
    return pd.DataFrame(
        {"exit_block": blocks, "images": counts, "share_pct": [100 * c / max(1, len(exit_block)) for c in counts]}
    )


def batch1_models(study: ExitStudy, point: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """The arms of the batch-1 table: plain, the exit at ``point``, the same exits with a threshold of 1.0."""
    variant, exits = point["variant"], point["exits"]
    return {
        "plain": study.vit,
        EXIT_ARM: study.configured(variant, exits, point["threshold"], "sample"),
        IDLE_ARM: study.configured(variant, exits, 1.0, "sample"),
    }


def batch1_latency(
    study: ExitStudy,
    point: dict[str, Any],
    spend: EdgeLatencyBudget,
    device: str = "cpu",
    timer: Callable[[], float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, bench.LatencyRun]:
    """Latency per image at batch 1 of every arm (:func:`batch1_models` and the A/A copy) on the first
    ``spend.latency_images`` test images; the exit histogram of the per-sample exit on them; and the raw run.

    The exit's FLOP ideal is that of its histogram on these images; the never-firing exit's is 1 (it skips
    nothing), so its speed-up is its overhead alone (``overhead_pct``: time it adds per image, in %).
    """
    images = timing_batch(study, spend.latency_images)
    models = batch1_models(study, point)
    run = bench.time_models_per_image(models, images, spend.warmup_images, device, timer)
    exit_blocks = {arm: subset_exit_blocks(study, models[arm], len(images)) for arm in (EXIT_ARM, IDLE_ARM)}
    ideals = {EXIT_ARM: study.costs.ideal_speedup(point["exits"], exit_blocks[EXIT_ARM])}
    targets = {EXIT_ARM: bench.FLOP_IDEAL_TARGET, IDLE_ARM: bench.IDLE_TARGET}
    table = bench.latency_rows(run, ideals, targets, spend.bootstrap)
    table["exited_pct"] = table["arm"].map(
        {a: 100 * (b < study.depth).double().mean().item() for a, b in exit_blocks.items()}
    )
    idle = table["arm"] == IDLE_ARM
    for end, source in (("", "speedup"), ("_low", "speedup_high"), ("_high", "speedup_low")):
        table.loc[idle, f"overhead_pct{end}"] = 100 * (1 / table.loc[idle, source] - 1)
    counted = batch1_operators(models, images, exit_blocks)
    counted[run.control] = counted["plain"]  # the A/A copy is the plain model
    table["operators_per_image"] = table["arm"].map(counted)
    table["operator_ideal_speedup"] = operator_ideal(counted["plain"], table["operators_per_image"])
    setting = f"{point['variant']}, exits {exits_label(point['exits'])}"
    table.insert(
        1,
        "setting",
        table["arm"]
        .map({EXIT_ARM: f"{setting}, threshold {point['threshold']:g}", IDLE_ARM: f"{setting}, threshold 1.0"})
        .fillna(""),
    )
    table["arm"] = table["arm"].replace({run.control: CONTROL_LABEL})
    histogram = exit_histogram(point["exits"], study.depth, exit_blocks[EXIT_ARM])
    return table, histogram, run


def batch1_operators(
    models: Mapping[str, torch.nn.Module], images: torch.Tensor, exit_blocks: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Operators per image of each arm at batch 1 over ``images``, counted (no clock). An image alone runs the
    operators of the exits it reaches, so an exit arm is counted on the first image that leaves at each block
    (``exit_blocks[arm]``, one per image) and weighted by how many leave there; an arm without exits on one image."""
    counted = {}
    for arm, model in models.items():
        if arm not in exit_blocks:
            counted[arm] = operators_per_image(model, images[:1])
            continue
        blocks = exit_blocks[arm]
        total = 0.0
        for block in blocks.unique().tolist():
            leaving = blocks == block
            first = int(leaving.nonzero()[0])
            total += operators_per_image(model, images[first : first + 1]) * int(leaving.sum())
        counted[arm] = total / len(blocks)
    return counted


def batch1_overheads(study: ExitStudy, point: dict[str, Any], calls: int) -> pd.DataFrame:
    """``bench.operator_breakdown`` of the plain model and the never-firing exit on one test image (batch 1), every
    operator: self ms per call. The exit path adds, once per exit, its head (the [CLS] row, a norm, an ``addmm``)
    and the read of the head's logits to the host, where the decision is taken in Python (not profiled)."""
    models = batch1_models(study, point)
    image = timing_batch(study, 1)

    def forward(model: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model.eval()(image)

        return call

    arms = {arm: forward(models[arm]) for arm in ("plain", IDLE_ARM)}
    return bench.operator_breakdown(arms, calls, top=1_000)  # every operator: the exit-only ones are small


def overhead_summary(breakdown: pd.DataFrame) -> dict[str, Any]:
    """From :func:`batch1_overheads`: ms per call of each arm, their difference, and the operators only the exit
    path runs (their ms and names, largest first)."""
    total = breakdown.set_index("operator").loc["total"]
    ops = breakdown[~breakdown["operator"].isin(["total", "(other operators)"])]
    only = ops[ops["plain"] == 0].sort_values(IDLE_ARM, ascending=False)
    return {
        "plain_ms": float(total["plain"]),
        "exit_ms": float(total[IDLE_ARM]),
        "added_ms": float(total[IDLE_ARM] - total["plain"]),
        "exit_only_ms": float(only[IDLE_ARM].sum()),
        "exit_only_operators": ", ".join(only["operator"].head(4)),
    }


# ----------------------------------------------------------------------------------------------------------
# Batch sizes, ViT-B/16


def batch_sweep(
    study: ExitStudy,
    point: dict[str, Any],
    batch_sizes: Sequence[int],
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-sample exit at ``point`` against the plain model at each batch size (the first b test images, one
    comparison with its A/A control each), judged against the FLOP ideal of that batch's exits; and the raw times.

    Beside the measured gap, each arm's operators per image on the same batch, counted (``operators_per_image``),
    and plain's over the arm's (``operator_ideal_speedup``): what the exit can gain where every operator costs the
    same, as on a small model at a small batch, where the rows that stay still run every later block's operators.
    """
    exit_model = study.configured(point["variant"], point["exits"], point["threshold"], "sample")
    rows, raw = [], []
    for size in batch_sizes:
        images = timing_batch(study, size)
        count = len(images)
        plain_ops, exit_ops = (operators_per_image(model, images) for model in (study.vit, exit_model))
        plain_counted = {"operators_per_image": plain_ops, "operator_ideal_speedup": 1.0}
        comparison = bench.compare_models({"plain": study.vit, EXIT_ARM: exit_model}, images, settings, device)
        common = {"batch_size": count, **bench.protocol(comparison), "note": bench.table_note(comparison)}
        rows += [
            {
                "arm": "plain",
                **bench.speed_row(comparison, "plain", count, 1.0, bench.FLOP_IDEAL_TARGET),
                **common,
                **plain_counted,
            },
            {
                "arm": EXIT_ARM,
                **exit_row(study, comparison, EXIT_ARM, exit_model, count, bench.FLOP_IDEAL_TARGET),
                **common,
                "operators_per_image": exit_ops,
                "operator_ideal_speedup": operator_ideal(plain_ops, exit_ops),
            },
            {"arm": CONTROL_LABEL, **bench.control_row(comparison, count), **common, **plain_counted},
        ]
        raw.append(bench.raw_times(comparison, batch_size=count))
    frame = pd.DataFrame(rows)
    frame.insert(2, "ms_per_call", 1e3 * frame["seconds_per_call"])
    return frame, pd.concat(raw, ignore_index=True)


def vit_b_batch1(
    vit: torch.nn.Module,
    input_size: tuple[int, int, int],
    exits: Sequence[int],
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Table 5.1's protocol at batch 1: latency (ms) of the full model and of every image forced out after each exit
    on random input, its speed-up and FLOP ideal, the A/A control (:func:`.common.table_5_1`)."""
    table, comparison = table_5_1(vit, input_size, 1, exits, settings, device)
    table.insert(2, "latency_ms", 1e3 * table["seconds_per_call"])
    return table, comparison


# ----------------------------------------------------------------------------------------------------------
# Both methods at once


def drop_region(settings: SkipViTSettings) -> tuple[int, int]:
    """Blocks (1-indexed, inclusive) from SkipViT's first drop layer to its skip layer (or its last drop layer)."""
    marks = (*settings.drop_layers, *((settings.skip_layer,) if settings.skip_layer else ()))
    return min(marks), max(marks)


def compatible_exits(exits: Sequence[int], settings: SkipViTSettings) -> tuple[int, ...]:
    """The exits that do not cut SkipViT's drop region: an exit after block e cuts it when first <= e < last."""
    if not settings.active:
        return tuple(exits)
    first, last = drop_region(settings)
    return tuple(e for e in exits if not first <= e < last)


def with_skipvit(model: MultiExitViT, settings: SkipViTSettings | str) -> SkipExitViT:
    """A copy of a fitted exit model (backbone and heads) with SkipViT ``settings`` applied to its backbone and
    dropping on, as the core's :class:`~vitstudy.multiexit.SkipExitViT`; ``model`` is left as it was. Its exits must
    lie outside the drop region (:func:`compatible_exits`): :func:`composed_ideal` counts an exit's images as
    paying what they pay without SkipViT."""
    settings = skipvit.preset(settings) if isinstance(settings, str) else settings
    check(
        compatible_exits(model.exits, settings) == model.exits,
        "exits",
        model.exits,
        f"exits outside SkipViT's drop region {drop_region(settings)} ({settings.label})",
    )
    composed = copy.deepcopy(model)  # the heads keep their sharing (finetune: one head on exits and final output)
    if not isinstance(composed.vit, SkipViTMixin):
        skipvit.apply_skipvit(composed.vit, settings)
    skipvit.configure(composed.vit, dataclasses.replace(settings, enabled=True))
    composed.__class__ = SkipExitViT  # the knobs, heads and forward stay; only the backbone check is added
    return composed


def composed_ideal(costs: ExitCosts, exits: Sequence[int], exit_block: torch.Tensor, skip_ideal: float) -> float:
    """FLOP-ideal speed-up of the exit on a dropping backbone, counted per image: an image leaving at an exit
    before the drop region pays what it pays without SkipViT; one running to the end pays the plain model's
    FLOPs divided by SkipViT's ideal, plus every exit head it passed."""
    per_exit = costs.per_exit(exits).clone()
    per_exit[-1] = costs.plain() / skip_ideal + len(exits) * costs.exit_head
    blocks = torch.tensor([*exits, costs.depth])
    index = (exit_block.reshape(-1, 1) == blocks).long().argmax(1)
    return costs.plain() / per_exit[index].mean().item()


def _correct(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.eval()(images)
    return getattr(out, "logits", out).argmax(-1) == targets


def composition_table(
    study: ExitStudy,
    point: dict[str, Any],
    settings: SkipViTSettings | str,
    batch_size: int,
    timing: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """The per-sample exit at ``point`` (its exits outside the drop region), SkipViT dropping alone, both at once
    and the A/A control, timed on one batch of real test images; and the comparison.

    ``ideal_speedup`` of the ``both`` row is counted (:func:`composed_ideal`); ``product_of_ideals`` is the exit's
    FLOP ideal times SkipViT's, the yardstick of "does the saving compose", and ``measured_over_product`` the
    measured speed-up over it. Top-1 on the timed images beside each, with its paired interval against plain.
    """
    settings = skipvit.preset(settings) if isinstance(settings, str) else settings
    exits = compatible_exits(point["exits"], settings)
    check(
        bool(exits),
        "exits",
        point["exits"],
        f"at least one exit outside SkipViT's drop region {drop_region(settings)} ({settings.label})",
    )
    exit_model = study.configured(point["variant"], exits, point["threshold"], "sample")
    both = with_skipvit(exit_model, settings)
    images = timing_batch(study, batch_size)
    count = len(images)
    models = {"plain": study.vit, EXIT_ARM: exit_model, SKIP_ARM: both.vit, BOTH_ARM: both}
    comparison = bench.compare_models(models, images, timing, device)
    gain = skipvit.flop_gain(both.vit, study.splits.input_size)
    with torch.inference_mode():  # the timed batch's exits: the same in both exit arms (all before the drop region)
        exit_block = exit_model.eval()(images).exit_block
    ideals = {EXIT_ARM: study.costs.ideal_speedup(exits, exit_block), SKIP_ARM: gain["gflops_off"] / gain["gflops_on"]}
    ideals[BOTH_ARM] = composed_ideal(study.costs, exits, exit_block, ideals[SKIP_ARM])
    targets = study.features["test"].targets[:count]
    plain_correct = _correct(study.vit, images, targets)
    setting = f"{point['variant']}, exits {exits_label(exits)}, threshold {point['threshold']:g}"
    described = {EXIT_ARM: setting, SKIP_ARM: settings.label, BOTH_ARM: f"{setting} + {settings.label}"}
    rows = []
    for arm in (EXIT_ARM, SKIP_ARM, BOTH_ARM):
        loss, low, high = paired_loss_interval(plain_correct, _correct(models[arm], images, targets))
        rows.append(
            {
                "arm": arm,
                "setting": described[arm],
                **bench.speed_row(comparison, arm, count, ideals[arm], bench.FLOP_IDEAL_TARGET),
                "top1_loss": loss,
                "top1_loss_low": low,
                "top1_loss_high": high,
            }
        )
    product = ideals[EXIT_ARM] * ideals[SKIP_ARM]
    rows[-1] |= {
        "product_of_ideals": product,
        **{f"measured_over_product{end}": rows[-1][f"speedup{end}"] / product for end in ("", "_low", "_high")},
    }
    rows.append({"arm": CONTROL_LABEL, **bench.control_row(comparison, count)})
    exited_pct = 100 * (exit_block < study.depth).double().mean().item()
    frame = pd.DataFrame(rows).assign(
        batch_size=count, batch_exited_pct=exited_pct, **bench.protocol(comparison), note=bench.table_note(comparison)
    )
    return frame, comparison


# ----------------------------------------------------------------------------------------------------------
# Beside the field

FIELD_FILE = "field_edge_speed.csv"
PUBLISHED, OURS = "published", "ours (this run)"
# What each block may fill; the descriptive columns (method, model, dataset, measures, note) are shared.
PUBLISHED_COLUMNS = (
    "published_speedup",
    "published_top1_change_points",
    "published_flops_reduction_pct",
    "published_hardware",
    "published_batch_size",
    "published_source",
)
OURS_COLUMNS = (
    "ours_speedup",
    "ours_speedup_low",
    "ours_speedup_high",
    "ours_ideal_speedup",
    "ours_top1_change_points",
    "ours_top1_change_low",
    "ours_top1_change_high",
    "ours_batch_size",
    "ours_device",
)
FIELD_COLUMNS = ("block", "method", "model", "dataset", "measures", *PUBLISHED_COLUMNS, *OURS_COLUMNS, "note")


def load_field() -> pd.DataFrame:
    """The published rows as transcribed (one per method)."""
    return pd.read_csv(REFERENCE_DIR / FIELD_FILE)


def published_rows(field: pd.DataFrame) -> pd.DataFrame:
    """The transcription in the published block's columns."""
    renamed = {
        "speedup": "published_speedup",
        "top1_change_points": "published_top1_change_points",
        "flops_reduction_pct": "published_flops_reduction_pct",
        "hardware": "published_hardware",
        "batch_size": "published_batch_size",
        "source": "published_source",
    }
    return field.rename(columns=renamed).assign(block=PUBLISHED)


def our_row(
    method: str,
    measures: str,
    row: Mapping[str, Any],
    top1_loss: tuple[float, float, float],
    model: str,
    dataset: str,
    note: str = "",
) -> dict[str, Any]:
    """One of our measured rows (a speed row of this notebook's tables) in the ours block; ``top1_loss`` is the
    (points lost, low, high) of the same setting, written as a change (negative: lost)."""
    loss, low, high = top1_loss
    return {
        "block": OURS,
        "method": method,
        "model": model,
        "dataset": dataset,
        "measures": measures,
        "ours_speedup": row.get("speedup", math.nan),
        "ours_speedup_low": row.get("speedup_low", math.nan),
        "ours_speedup_high": row.get("speedup_high", math.nan),
        "ours_ideal_speedup": row.get("ideal_speedup", math.nan),
        "ours_top1_change_points": -loss,
        "ours_top1_change_low": -high,
        "ours_top1_change_high": -low,
        "ours_batch_size": row.get("batch_size", row.get("timed_batch_size", math.nan)),
        "ours_device": row.get("device", ""),
        "note": note or str(row.get("note") or ""),
    }


def beside_field(field: pd.DataFrame, ours: list[dict[str, Any]]) -> pd.DataFrame:
    """The published block, then ours, in :data:`FIELD_COLUMNS`; a column of one block is empty in the other."""
    frame = pd.concat([published_rows(field), pd.DataFrame(ours)], ignore_index=True)
    for column in FIELD_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return frame[list(FIELD_COLUMNS)]


# ----------------------------------------------------------------------------------------------------------
# What the run shows


def our_field_rows(
    latency: pd.DataFrame,
    sweep: pd.DataFrame,
    composition: pd.DataFrame,
    test_loss: tuple[float, float, float],
    model: str,
    dataset: str,
) -> list[dict[str, Any]]:
    """Our rows of the table beside the field: the exit at batch 1 (ratio of mean latencies), at the sweep's largest
    batch (throughput), and both methods at once; ``test_loss`` is the operating point's top-1 loss on test."""
    exit_b1 = _arm(latency, EXIT_ARM)
    ours = f"per-sample exit (ours: {exit_b1.get('setting') or 'the operating point'})"
    rows = []
    if exit_b1:
        rows.append(
            our_row(
                ours,
                "timed: mean latency per image at batch 1",
                {**exit_b1, "batch_size": 1},
                test_loss,
                model,
                dataset,
            )
        )
    largest = sweep[sweep["arm"] == EXIT_ARM].sort_values("batch_size").tail(1).to_dict("records")
    if largest:
        rows.append(
            our_row(
                ours,
                f"timed: throughput at batch {int(largest[0]['batch_size'])}",
                largest[0],
                test_loss,
                model,
                dataset,
            )
        )
    if both := _arm(composition, BOTH_ARM):
        loss = (both["top1_loss"], both["top1_loss_low"], both["top1_loss_high"])
        rows.append(
            our_row(
                f"per-sample exit + SkipViT dropping (ours: {both['setting']})",
                f"timed: throughput at batch {int(both['batch_size'])}",
                both,
                loss,
                model,
                dataset,
                note="top-1 change on the timed images only",
            )
        )
    return rows


def _arm(table: pd.DataFrame, arm: str) -> dict[str, Any]:
    rows = table[table["arm"] == arm]
    return rows.iloc[0].to_dict() if len(rows) else {}


def _saves_time(row: dict[str, Any]) -> str:
    low, high = row.get("speedup_low"), row.get("speedup_high")
    if is_missing(low) or is_missing(high):
        return "cannot say (not measured)"
    return "saves time" if low > 1 else "costs time" if high < 1 else "cannot be told from 1.00 on this run"


def _speed(row: dict[str, Any], ideal: str = "ideal_speedup") -> str:
    values = (row.get(f"speedup{end}", math.nan) for end in ("", "_low", "_high"))
    return bench.speed_phrase(*values, row.get(ideal, math.nan))


def _sweep_trust(sweep: pd.DataFrame) -> str:
    """The batch sweep stacks one comparison per batch size: each judged by its own A/A control."""
    failed = [
        f"batch {int(size)}"
        for size, group in sweep.groupby("batch_size")
        if bench.table_trust(group.drop(columns=["note"], errors="ignore"))
    ]
    return (
        f"not trustworthy at {', '.join(failed)} (A/A outside 1.00 ± {bench.CONTROL_TOLERANCE:.0%})" if failed else ""
    )


def _operator_bound(sweep: pd.DataFrame) -> str:
    """How much of the sweep's gap to the FLOP ideal is operator count: at each batch size, the FLOP ideal, the
    speed-up where every operator costs the same (plain's counted operators over the exit's) and the measured one."""
    if "operator_ideal_speedup" not in sweep:
        return ""
    exits = sweep[sweep["arm"] == EXIT_ARM].sort_values("batch_size")
    plain = sweep[sweep["arm"] == "plain"].set_index("batch_size")["operators_per_image"]
    parts = [
        f"at batch {int(row['batch_size'])}, {number(row['operators_per_image'], 0)} against "
        f"{number(plain.get(row['batch_size']), 0)} (FLOP ideal {number(row['ideal_speedup'], unit='×')}, "
        f"operator-count ideal {number(row['operator_ideal_speedup'], unit='×')}, measured "
        f"{number(row['speedup'], unit='×')})"
        for row in exits.to_dict("records")
        if not is_missing(row["operator_ideal_speedup"])
    ]
    if not parts:
        return ""
    return (
        "Operators per image, counted, the exit's against plain's: "
        + "; ".join(parts)
        + ". A small model at a small batch pays about the same for each operator whatever its rows, and the rows "
        "that stay still run every later block's operators: a speed-up measured below the FLOP ideal and near the "
        "operator-count ideal is bound by operator count, which no compaction shrinks."
    )


def findings(
    latency: pd.DataFrame,
    sweep: pd.DataFrame,
    vit_b: pd.DataFrame,
    composition: pd.DataFrame,
    overheads: dict[str, Any],
) -> str:
    """What notebook 10 shows, in a few sentences computed from its tables (Markdown): the per-sample exit at
    batch 1 against its FLOP ideal, what its machinery costs when nothing exits, the batch sweep's ends, ViT-B/16
    forced out at batch 1 and both methods at once; each speed judged only under its own passing A/A control."""
    exit_row_, idle = _arm(latency, EXIT_ARM), _arm(latency, IDLE_ARM)
    sentences = ["Does an early exit save time where the report wanted it, one image at a time?"]
    if exit_row_:
        sentences.append(
            f"Each of {exit_row_['images']} test images alone, the per-sample exit ({exit_row_['setting']}, "
            f"{number(exit_row_.get('exited_pct'), 1, ' %')} leaving early) runs {_speed(exit_row_)} on the mean: "
            f"{judged(exit_row_.get('verdict'), bench.table_trust(latency))}; at batch 1 it "
            f"{_saves_time(exit_row_)}."
        )
    if idle:
        added = overheads.get("added_ms", math.nan)
        extra = (
            ""
            if is_missing(added)
            else f"; one image's operator profile puts {abs(float(added)):.3f} ms {'more' if added >= 0 else 'less'} "
            "per call on the exit path"
        )
        cost = percent_cost(*(idle.get(f"overhead_pct{end}", math.nan) for end in ("", "_low", "_high")))
        plain_ops, idle_ops = _arm(latency, "plain").get("operators_per_image"), idle.get("operators_per_image")
        if not (is_missing(plain_ops) or is_missing(idle_ops)):
            extra += f"; counted, it runs {idle_ops:.0f} operators per image against plain's {plain_ops:.0f}"
        sentences.append(f"Exit machinery that never fires {cost} per image{extra}.")
    exits = sweep[sweep["arm"] == EXIT_ARM].sort_values("batch_size") if len(sweep) else sweep
    if len(exits):
        first, last = exits.iloc[0].to_dict(), exits.iloc[-1].to_dict()
        trust = _sweep_trust(sweep)
        sentences.append(
            f"With more images per call the same point goes from {number(first['speedup'], unit='×')} at batch "
            f"{int(first['batch_size'])} to {number(last['speedup'], unit='×')} at batch {int(last['batch_size'])} "
            f"(ideals {number(first['ideal_speedup'], unit='×')} and {number(last['ideal_speedup'], unit='×')})"
            f"{': ' + trust if trust else ''}."
        )
    if bound := _operator_bound(sweep):
        sentences.append(bound)
    forced = vit_b[vit_b["setting"].astype(str).str.startswith("forced exit")] if len(vit_b) else vit_b
    if len(forced):
        best = forced.sort_values("exit_block").iloc[0].to_dict()
        trust = bench.table_trust(vit_b)
        sentences.append(
            f"ViT-B/16 at batch 1, forced out after block {int(best['exit_block'])}: "
            f"{number(best.get('latency_ms'), 1)} ms per image, {_speed(best)}: {judged(best.get('verdict'), trust)}."
        )
    both = _arm(composition, BOTH_ARM)
    if both:
        loss = [both.get(f"top1_loss{end}", math.nan) for end in ("", "_low", "_high")]
        trust = bench.table_trust(composition)
        sentences.append(
            f"Both methods at once ({both['setting']}) run {_speed(both, 'product_of_ideals')} (the product of the "
            f"two FLOP ideals){': ' + trust if trust else ''}, and top-1 on the timed images "
            f"{points(-loss[0], -loss[2], -loss[1])}."
        )
    if len(sentences) == 1:
        sentences.append(f"Nothing was timed: {NOT_MEASURED}.")
    return paragraph(sentences)
