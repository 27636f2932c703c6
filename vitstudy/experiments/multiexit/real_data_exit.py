"""Notebook 02: early exit on real data, the report's Table 5.2.

Accuracy and exit shares come offline from a :class:`~vitstudy.multiexit.ExitStudy` (features recorded once);
speed-ups from one batch of real test images, every timed setting against the plain model in one
``bench.compare_models`` comparison with its A/A control, each row built by ``bench.speed_row``. The speed targets
and their controls are :mod:`.exit_speed_targets`; why the report's batch rule never fired, :mod:`.batch_rule`; the
``joint`` variant's training, :mod:`.joint_exit`; the accuracy / speed-up trade-off, :mod:`.exit_tradeoff`. Every
function compares the variants the study holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ... import bench
from ...bench import SMOKE_TIMING
from ...config import PAPER_SMOKE, Scale, check, scale_budget
from ...multiexit import (
    POLICIES,
    VARIANTS,
    ExitStudy,
    MultiExitViT,
    exits_label,
    logits_from_features,
    simulate,
)
from .max_speed_exit import CONTROL_LABEL, FORCED_TARGET

PER_SAMPLE_TARGET = (0.90, 1.03)  # the per-sample exit pays confidences and compaction the FLOP count leaves out
VARIANT_LABELS = {
    "same": "Same",
    "finetune": "Fine-Tune",
    "scratch": "Scratch",
    "separate": "separate (ours)",
    "joint": "joint (ours)",
}


@dataclass(frozen=True)
class RealDataBudget:
    """How much the real-data notebooks (02, and 03 / 07, which reuse its study) compute and time at one scale."""

    scale: str
    batch_size: int  # the batch of real test images timed, and the batch of the report's batch rule
    timing: bench.CompareSettings  # the measured sweep points, the speed targets, the per-sample controls
    table_timing: bench.CompareSettings  # Tables 5.2 / 5.3 compare up to 23 arms: fewer rounds keep them short
    threshold: float = 0.9  # Table 5.2's threshold: a 10-class max-softmax of 0.9 is a confident prediction
    max_loss: float = 0.5  # the operating point's 95% upper bound of validation top-1 points lost stays within this
    head_epochs: int = 30  # linear heads on frozen features converge well within 30 epochs
    table_variants: tuple[str, ...] = VARIANTS  # the settings of Tables 5.2 and 5.3: variant x exits x policy
    table_exit_sets: tuple[tuple[int, ...], ...] = ((3,), (6,), (9,))
    policies: tuple[str, ...] = POLICIES
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("batch_size", "head_epochs"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        check(0.0 <= self.threshold <= 1.0, "threshold", self.threshold, "a number in [0, 1]")
        check(self.max_loss >= 0, "max_loss", self.max_loss, "a number of top-1 points >= 0")


_QUICK = RealDataBudget(
    "quick",
    batch_size=256,
    # A forward of the quick baseline at batch 256 takes ~0.4 s on a 2-core CPU, so each arm's round is about two
    # calls (blocked_autorange sizes its block with one): 02 ~3 min, 03 ~1 min of timing.
    timing=bench.CompareSettings(rounds=6, min_run_time=0.3, warmup_calls=1),
    table_timing=bench.CompareSettings(rounds=5, min_run_time=0.2, warmup_calls=1),
    note="every multi-exit notebook within minutes on a 2-core CPU",
)
_LONGER = dict(  # full / paper: more rounds and longer blocks, for tighter intervals
    timing=bench.CompareSettings(rounds=12, min_run_time=0.6),
    table_timing=bench.CompareSettings(rounds=8, min_run_time=0.4),
)
_SMOKE = RealDataBudget("smoke", 64, SMOKE_TIMING, SMOKE_TIMING, note="CI: seconds, numbers meaningless")
# The paper path at smoke sizes: each final-head path (timm's head: same, separate; a fitted shared head: finetune)
# and joint's own backbone, at one exit and both policies, runs every line of Table 5.2 (10 ViT-B arms, not 32).
_PAPER_SMOKE_GRID = dict(table_variants=("same", "finetune", "separate", "joint"), table_exit_sets=((3,),))
BUDGETS: dict[str, RealDataBudget] = {
    "smoke": _SMOKE,
    "quick": _QUICK,
    "full": dataclasses.replace(_QUICK, scale="full", **_LONGER, note="longer timing on the full baseline"),
    "paper": dataclasses.replace(_QUICK, scale="paper", **_LONGER, note="longer timing, ViT-B/16 on ImageNet"),
    PAPER_SMOKE: dataclasses.replace(
        _SMOKE, scale=PAPER_SMOKE, batch_size=2, head_epochs=2, **_PAPER_SMOKE_GRID, note="a test on a CPU"
    ),
}


def budget(scale: Scale | str | None = None) -> RealDataBudget:
    """Notebook 02's budget at a scale (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


# ----------------------------------------------------------------------------------------------------------
# Timing on real test images


def timing_batch(study: ExitStudy, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` test images as one tensor ``[B, C, H, W]`` (real data for timing)."""
    count = min(batch_size, len(study.splits.test))
    return torch.stack([study.splits.test[i][0] for i in range(count)])


def batch_exits(study: ExitStudy, model: MultiExitViT, batch_size: int) -> dict[str, float]:
    """Share of the timed batch (the first ``batch_size`` test images) that leaves early under ``model``'s
    settings, and the FLOP-ideal speed-up of that batch's exit histogram.

    Computed from the recorded features (``simulate`` reproduces the forward; tested), so no backbone runs here.
    """
    logits = logits_from_features(model, study.features_of(model.variant)["test"].first(batch_size))
    sim = simulate(logits, model.exits, study.depth, model.threshold, model.policy, model.confidence, batch_size)
    return {
        "batch_exited_pct": 100 * (sim.exit_block < study.depth).double().mean().item(),
        "batch_ideal_speedup": study.costs.ideal_speedup(model.exits, sim.exit_block),
    }


def exit_row(
    study: ExitStudy,
    comparison: bench.Comparison,
    arm: str,
    model: MultiExitViT,
    images: int,
    target: tuple[float, float],
) -> dict[str, Any]:
    """A timed exit setting's speed row, judged against the FLOP ideal of the timed batch's own exits
    (``batch_ideal_speedup``, beside ``batch_exited_pct``)."""
    batch = batch_exits(study, model, images)
    return {**bench.speed_row(comparison, arm, images, batch["batch_ideal_speedup"], target), **batch}


def _setting_name(variant: str, exits: Sequence[int], policy: str) -> str:
    return f"{variant}/{exits_label(exits)}/{policy}"


def table_5_2(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.CompareSettings,
    variants: Sequence[str] | None = None,
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = POLICIES,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Table 5.2: variant x exit x policy at one threshold, then the A/A control row; and its comparison.

    Top-1 and exit shares come from the whole test set (offline); speed-ups from one batch of real test images.
    ``ideal_speedup`` is the FLOP-ideal of the whole test set's exits, ``batch_ideal_speedup`` that of the timed
    batch (what ``measured_over_ideal`` uses). ``variants``: default, every variant the study holds.
    """
    images = timing_batch(study, batch_size)
    grid = [(v, e, p) for v in variants or study.variants for e in exit_sets for p in policies]
    settings_models = {_setting_name(*s): study.configured(s[0], s[1], threshold, s[2]) for s in grid}
    timed_as = _timed_as(study, settings_models, len(images))
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    models.update({name: model for name, model in settings_models.items() if timed_as[name] == name})
    # Notebook 03 times a subset of notebook 02's arms on the same batch: within one report run it reads 02's
    # measurement (vitstudy.bench.shared) when every arm it needs ran with the same weights and settings.
    arm_ids = _arm_ids(models, images)
    key = bench.timing_key("table_5_2", settings=dataclasses.asdict(settings), device=str(device))
    comparison = bench.shared_subset(key, arm_ids)
    if comparison is None:
        comparison = bench.compare_models(models, images, settings, device)
        bench.share(comparison, key, arm_ids)
    rows = []
    for variant, exits, policy in grid:
        name = _setting_name(variant, exits, policy)
        target = PER_SAMPLE_TARGET if policy == "sample" else FORCED_TARGET
        offline = study.evaluate(variant, exits, threshold, policy, batch_size)
        speed = exit_row(study, comparison, timed_as[name], settings_models[name], len(images), target)
        rows.append(
            {"setting": name, **offline, **speed, "ideal_speedup": offline["ideal_speedup"], "timed_as": timed_as[name]}
        )
    rows.append({"setting": CONTROL_LABEL, "threshold": threshold, **bench.control_row(comparison, len(images))})
    frame = pd.DataFrame(rows)
    frame["plain_images_per_s"] = len(images) / comparison.speedup("plain")["seconds"]
    frame = frame.assign(timed_batch_size=len(images), **bench.protocol(comparison), note=bench.table_note(comparison))
    return frame, comparison


EXIT_KNOBS = ("variant", "exits", "threshold", "policy", "confidence", "forced_exit", "keep_every_row")


def _timed_as(study: ExitStudy, models: dict[str, MultiExitViT], images: int) -> dict[str, str]:
    """The arm each setting's speed is read from: itself, or, for a batch-rule setting whose timed batch never
    leaves early (simulated offline, :func:`batch_exits`) on the study's own backbone, the first such setting at
    the same exits. Those run the same operations (the backbone, then one linear head and the confidence test at
    each exit) and differ only in the heads' weights, so Table 5.2 times one of them per exit set, not five."""
    timed_as, first = {}, {}
    for name, model in models.items():
        same_ops = model.policy == "batch" and model.vit is study.vit
        if same_ops and batch_exits(study, model, images)["batch_exited_pct"] == 0:
            timed_as[name] = first.setdefault(model.exits, name)
        else:
            timed_as[name] = name
    return timed_as


def _arm_ids(models: dict[str, torch.nn.Module], images: torch.Tensor) -> dict[str, str]:
    """What each arm runs, as a fingerprint: its backbone (each distinct one hashed once) and the images, then
    each exit setting's knobs and heads."""
    backbones: dict[int, str] = {}
    ids = {}
    for name, model in models.items():
        vit = getattr(model, "vit", model)
        if id(vit) not in backbones:
            backbones[id(vit)] = bench.arm_fingerprint(vit, images)
        ids[name] = bench.arm_fingerprint(
            backbones[id(vit)],
            *(getattr(model, knob, None) for knob in EXIT_KNOBS),
            *getattr(model, "exit_heads", ()),
            getattr(model, "final_head", None),
        )
    return ids


# Table 5.2 as saved by notebook 02: ours, then the report's top-1 and speed-up, then how it was measured.
TABLE_5_2_COLUMNS = (
    "setting",
    "variant",
    "exits",
    "policy",
    "threshold",
    "top1",
    "top1_loss",
    "variant_final_top1",
    "exited_pct",
    "speedup",
    "speedup_low",
    "speedup_high",
    "ideal_speedup",
    "batch_ideal_speedup",
    "measured_over_ideal",
    "verdict",
    "batch_exited_pct",
    "timed_as",
    "paper_top1",
    "paper_speedup",
    *bench.MACHINE_USE_COLUMNS,
    "device",
    "threads",
    "rounds",
    "note",
)


def beside_paper(table: pd.DataFrame, paper: pd.DataFrame, prefix: str = "paper_") -> pd.DataFrame:
    """Add the report's top-1, speed-up and images/s (Table 5.2 or 5.3, long format) beside matching rows.

    Rows match on variant (the report's Same / Fine-Tune / Scratch) and single exit block; ``separate``, ``joint``
    and multi-exit rows have no counterpart and keep empty ``prefix`` columns. Filter ``paper`` to one device first.
    """
    wide = paper.pivot_table(index=["classifier", "exit_block"], columns="metric", values="value").reset_index()
    wide["variant"] = wide["classifier"].map({label: name for name, label in VARIANT_LABELS.items()})
    wide["exits"] = wide["exit_block"].astype(str)
    names = {"accuracy_pct": "top1", "speed_improvement": "speedup", "inference_speed_im_s": "images_per_s"}
    wide = wide.rename(columns={k: prefix + v for k, v in names.items()})
    keep = ["variant", "exits", *(prefix + v for v in names.values() if prefix + v in wide)]
    return table.merge(wide[keep], on=["variant", "exits"], how="left")
