"""SkipViT training-step timing behind notebook 04: every Table 1 row against the baseline and an A/A copy.

Each row's arm is one training step on random data (:func:`training_step_arm`, a module-level factory so the
comparison engine can rebuild it in a fresh process), timed by :func:`vitstudy.bench.compare` with the budget's
settings (balanced rounds, paired ratios with a 95% interval, ``isolation`` in one process or one per arm and
round). Rows whose speed-up strays from the FLOP-ideal get a ``torch.profiler`` breakdown (:func:`profile_rows`),
and a speed-up above the ideal is called explained only when that profile attributes it (:func:`explain_verdicts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import bench
from ..models import create_model
from .patch import apply_skipvit, configure, flop_gain
from .settings import BASELINE, TABLE1, SkipViTSettings
from .study import SkipViTBudget

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
    timing: bench.CompareSettings | None = None,
    **model_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training speed-up (random data) of every row over the baseline, beside its FLOP-ideal; and the raw times.

    Every row, the baseline and an A/A copy of the baseline get their own model copy and AdamW and are timed one
    training step per call by :func:`vitstudy.bench.compare` with ``timing`` (default ``budget.timing``). Per row:
    ``speedup`` (median over rounds of baseline time / row time) with its 95% interval, ``measured_over_ideal`` =
    speed-up ÷ FLOP-ideal speed-up (a ratio of speed-ups, not of gains) and its ``verdict``; the table's ``note``
    carries the control's reading. Returns (one row per arm, the comparison's raw per-block times for
    ``report.save_raw``). On an absent device every number is NaN and ``note`` says so.
    """
    device = torch.device(device or bench.default_device())
    timing = timing or budget.timing
    steps, flops = _train_steps(model_name, input_size, num_classes, batch_size, rows, device, True, **model_kwargs)
    comparison = bench.compare(steps, "baseline", CONTROL, timing, device)
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
            "rounds": timing.rounds,
            "min_run_time_s": timing.min_run_time,
            "order": timing.order,
            "isolation": timing.isolation,
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
