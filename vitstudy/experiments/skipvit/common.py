"""What notebooks 04, 05, 08 and 09 share: training one SkipViT row, and timing rows' training steps.

Training (04, 05, 08): a row is one training run with the row's :class:`~vitstudy.skipvit.SkipViTSettings`
(dropping from epoch ``warmup`` on), cached under ``data/cache/skipvit/`` so a re-run loads it, and evaluated on the
test split with token dropping kept on and switched off (:func:`train_row`). :class:`RowTraining` is the recipe the
notebooks' budgets share; :func:`budget_for` picks a notebook's budget for a scale.

Timing (04, 09 and ``vitstudy.measure.isolation``): each row's arm is one training step on random data
(:func:`training_step_arm`, a module-level factory so the comparison engine can rebuild it in a fresh process), timed
by :func:`vitstudy.bench.compare` (balanced rounds, paired ratios with a 95% interval, ``isolation`` in one process or
one per arm and round) beside the baseline and an A/A copy of it (:data:`CONTROL`), and turned into rows by
:mod:`vitstudy.bench.rows` against :data:`vitstudy.bench.FLOP_IDEAL_TARGET` (:func:`timing_runs`). Rows whose
speed-up strays from the FLOP-ideal get a ``torch.profiler`` breakdown (:func:`profile_rows`), and a speed-up above
the ideal is called explained only when that profile attributes it (:func:`explain_verdicts`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from ... import bench
from ...config import SCALES, Scale, TrainConfig, check, check_choice, get_scale, scale_budget
from ...data import make_loader
from ...files import cache_dir, fingerprint
from ...models import create_model
from ...skipvit import (
    BASELINE,
    HEADLINE,
    TABLE1,
    SkipViTSettings,
    apply_skipvit,
    configure,
    dropping,
    flop_gain,
    warmup_epochs_for,
    warmup_hook,
)
from ...steps import evaluate, random_batch_step
from ...train import baseline, baseline_run_dir, config_fingerprint, default_model_factory, train

# ----------------------------------------------------------------------------------------------------------
# Training one row

STARTS = ("scratch", "baseline")
# The data notebooks 04 and 05 train on at smoke and quick: a subset of the scale's, so their rows train in minutes.
# Smoke: two training steps per epoch and one evaluation batch, the fewest that run every line of a row.
SMOKE_DATA = dataclasses.replace(SCALES["smoke"].train, train_size=128, val_size=64, test_size=128)
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


# ----------------------------------------------------------------------------------------------------------
# Timing rows' training steps

CONTROL = bench.control_arm("baseline")  # the A/A control arm: a second copy of the baseline, timed like every row
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # a training arm's precision -> its autocast dtype
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
    precision: str = "fp32",
) -> Callable[[], torch.Tensor]:
    """One training step (:func:`vitstudy.steps.random_batch_step`) of ``model_name`` with ``settings``, in fp32
    or, ``precision="bf16"``, with its forward under ``torch.autocast(dtype=torch.bfloat16)``.

    Module-level so that :func:`vitstudy.bench.compare` can rebuild it in a fresh process
    (``isolation="process"``); the seed gives every arm the same initial weights.
    """
    torch.manual_seed(seed)
    model = configure(
        apply_skipvit(create_model(model_name, num_classes=num_classes, **(model_kwargs or {}))), settings
    )
    return random_batch_step(model, batch_size, input_size, num_classes, device, autocast_dtype=PRECISIONS[precision])


def _train_steps(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    rows: dict[str, SkipViTSettings],
    device: torch.device,
    control: bool,
    bf16_rows: Sequence[str] = (),
    **model_kwargs: Any,
) -> tuple[dict[str, bench.ArmSpec], dict[str, dict[str, float]]]:
    """(one training-step arm per row: baseline, every row, the A/A copy, then a bf16 twin of each of
    ``bf16_rows`` where ``device`` has bf16 kernels (:func:`vitstudy.bench.bf16_native`); FLOPs and FLOP-ideal per
    row)."""
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs))
    flops_off = bench.flops_per_image(configure(model, BASELINE), input_size)
    arms = {"baseline": BASELINE, **{n: s for n, s in rows.items() if n != "baseline"}}
    flops = {name: flop_gain(configure(model, s), input_size, flops_off) for name, s in arms.items()}
    if control:
        arms[CONTROL] = BASELINE
        flops[CONTROL] = flops["baseline"]
    common = dict(
        model_name=model_name,
        input_size=input_size,
        num_classes=num_classes,
        batch_size=batch_size,
        device=str(device),
        model_kwargs=model_kwargs,
    )
    specs = {name: bench.ArmSpec(training_step_arm, dict(common, settings=s)) for name, s in arms.items()}
    specs |= {
        bench.bf16_arm(name): bench.ArmSpec(training_step_arm, dict(common, settings=arms[name], precision="bf16"))
        for name in bf16_rows
        if bench.bf16_native(device)
    }
    return specs, flops


def timing_runs(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    timing: bench.CompareSettings,
    rows: dict[str, SkipViTSettings] = TABLE1,
    device: str | None = None,
    bf16_rows: Sequence[str] = (),
    **model_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training speed-up (random data) of every row over the baseline, beside its FLOP-ideal; and the raw times.

    Every row, the baseline and an A/A copy of the baseline get their own model copy and AdamW and are timed one
    training step per call. Per row: :func:`vitstudy.bench.speed_row` (the baseline's and the A/A control's
    :func:`~vitstudy.bench.control_row` too), ``gain_pct`` = 100·(speed-up − 1), the FLOPs, the protocol and the
    table's note. The rows named in ``bf16_rows`` (the baseline among them) are timed in bf16 too, in the same
    rounds: :func:`vitstudy.bench.bf16_columns` on every row (NaN where not timed in bf16). The baseline's FLOPs
    per image count a training step as 3 × forward (:meth:`vitstudy.bench.BaselineWork.training_step`). Returns
    (one row per fp32 arm, the raw per-block times for ``report.save_raw``). On an absent device every number is
    NaN and ``note`` says so.
    """
    check(
        not bf16_rows or ("baseline" in bf16_rows and set(bf16_rows) <= {"baseline", *rows}),
        "bf16_rows",
        tuple(bf16_rows),
        "rows of this table with 'baseline' among them",
    )
    device = torch.device(device or bench.default_device())
    steps, flops = _train_steps(
        model_name, input_size, num_classes, batch_size, rows, device, True, bf16_rows, **model_kwargs
    )
    work = bench.BaselineWork.training_step(flops["baseline"]["gflops_off"] * 1e9)
    comparison = bench.compare(steps, "baseline", CONTROL, timing, device, work=work)
    labels = {**{n: s.label for n, s in rows.items()}, "baseline": BASELINE.label, CONTROL: "baseline (A/A control)"}
    protocol, note = bench.protocol(comparison), bench.table_note(comparison)
    out = []
    for name in flops:  # the fp32 arms; bf16 twins fill their row's bf16 columns
        ideal = 1 + flops[name]["ideal_gain_pct"] / 100  # = gflops_off / gflops_on
        if name == CONTROL:
            speed = bench.control_row(comparison, batch_size)
        else:
            speed = bench.speed_row(comparison, name, batch_size, ideal, bench.FLOP_IDEAL_TARGET)
        bf16 = (
            bench.bf16_columns(comparison, name, batch_size, ideal, bench.FLOP_IDEAL_TARGET)
            if bf16_rows and name != CONTROL
            else {}
        )
        out.append(
            {
                "row": name,
                "setting": labels[name],
                "model": model_name,
                "batch_size": batch_size,
                **speed,
                "gain_pct": 100 * (speed["speedup"] - 1),
                **flops[name],
                **bf16,
                **protocol,
                "note": note,
            }
        )
    return pd.DataFrame(out), bench.raw_times(comparison, model=model_name, batch_size=batch_size)


def rows_to_profile(speed: pd.DataFrame, limit: int = 2, always: bool = False) -> list[str]:
    """Rows of a :func:`timing_runs` table to profile: those outside the target, the headline row first, then
    the one farthest from its FLOP-ideal; at most ``limit``. ``always``: the headline row (else the first row)
    when none is flagged."""
    rows = speed[~speed["row"].isin(["baseline", CONTROL])]
    ratio = rows["measured_over_ideal"]
    flagged = rows[(ratio > bench.FLOP_IDEAL_TARGET[1]) | (ratio < bench.FLOP_IDEAL_TARGET[0])]
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
        steps, _ = _train_steps(
            model_name, input_size, num_classes, batch_size, {name: settings}, device, False, **model_kwargs
        )
        out[name] = bench.operator_breakdown({arm: spec.build() for arm, spec in steps.items()}, calls, top)
    return out


def profile_explains(breakdown: pd.DataFrame, row: str, ideal_speedup: float) -> bool:
    """Whether a profile attributes a speed-up beyond the FLOP-ideal to attention's memory-bound operators.

    An operator's saving beyond the ideal is ``baseline_ms / ideal − row_ms`` (what it saves beyond shrinking
    like the FLOPs). True when the profile itself shows the excess (total ratio above ``bench.FLOP_BOUND_SLACK`` ×
    ideal) and the :data:`ATTENTION_OPERATORS` save at least the whole excess of the total.
    """
    table = breakdown.set_index("operator")
    beyond = table["baseline"] / ideal_speedup - table[row]
    total = table.loc["total"]
    if total["baseline"] / total[row] <= bench.FLOP_BOUND_SLACK * ideal_speedup:
        return False
    named = [op for op in table.index if any(part in op.lower() for part in ATTENTION_OPERATORS)]
    return bool(beyond[named].sum() >= beyond["total"])


def explain_verdicts(speed: pd.DataFrame, profiles: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``speed`` with the verdict of every profiled row above ``bench.FLOP_BOUND_SLACK`` re-drawn by
    :func:`vitstudy.bench.flop_bound_verdict` (as :func:`vitstudy.bench.speed_row` draws it): "explained by profile"
    only when :func:`profile_explains` attributes the excess to named operators."""
    speed = speed.copy()
    for name, breakdown in profiles.items():
        at = speed["row"] == name
        ratio = float(speed.loc[at, "measured_over_ideal"].iloc[0])
        ideal = float(speed.loc[at, "ideal_speedup"].iloc[0])
        explained = ratio > bench.FLOP_BOUND_SLACK and profile_explains(breakdown, name, ideal)
        speed.loc[at, "verdict"] = bench.flop_bound_verdict(ratio, bench.FLOP_IDEAL_TARGET, explained)
    return speed
