"""SkipViT training-step speed: every row against the baseline and an A/A copy of it, beside its FLOP-ideal.

Each row's arm is one training step on random data (:func:`training_step_arm`, a module-level factory so the
comparison engine can rebuild it in a fresh process), timed by :func:`vitstudy.bench.compare` (balanced rounds,
paired ratios with a 95% interval, ``isolation`` in one process or one per arm and round) and turned into rows by
:mod:`vitstudy.bench.rows`. Rows whose speed-up strays from the FLOP-ideal get a ``torch.profiler`` breakdown
(:func:`profile_rows`), and a speed-up above the ideal is called explained only when that profile attributes it
(:func:`explain_verdicts`). Used by notebook 04 (Table 1), notebook 09 (model size) and the isolation measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ... import bench
from ...config import check
from ...models import create_model
from ...skipvit import BASELINE, HEADLINE, TABLE1, SkipViTSettings, apply_skipvit, configure, flop_gain
from ...steps import random_batch_step

CONTROL = bench.control_arm("baseline")  # the A/A control arm: a second copy of the baseline, timed like every row
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # a training arm's precision -> its autocast dtype
TARGET = (0.90, 1.03)  # measured ÷ FLOP-ideal speed-up: issue 8's two-sided target for a training step
# Operator-name fragments of attention's memory-bound work (softmax and its backward, the fused attention
# kernels): it shrinks with the square of the tokens kept, which a FLOP count of the matmuls undercounts.
ATTENTION_OPERATORS = ("softmax", "attention")
# Smoke sizes: the fewest rounds and resamples the engine accepts (numbers meaningless, every code path runs).


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
            speed = bench.speed_row(comparison, name, batch_size, ideal, TARGET)
        bf16 = bench.bf16_columns(comparison, name, batch_size, ideal, TARGET) if bf16_rows and name != CONTROL else {}
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
        steps, _ = _train_steps(
            model_name, input_size, num_classes, batch_size, {name: settings}, device, False, **model_kwargs
        )
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
    """``speed`` with the verdict of every profiled row above 1.03 re-drawn by :func:`vitstudy.bench.flop_bound_verdict`
    (as :func:`vitstudy.bench.speed_row` draws it): "explained by profile" only when :func:`profile_explains`
    attributes the excess to named operators."""
    speed = speed.copy()
    for name, breakdown in profiles.items():
        at = speed["row"] == name
        ratio = float(speed.loc[at, "measured_over_ideal"].iloc[0])
        ideal = float(speed.loc[at, "ideal_speedup"].iloc[0])
        explained = ratio > bench.FLOP_BOUND_SLACK and profile_explains(breakdown, name, ideal)
        speed.loc[at, "verdict"] = bench.flop_bound_verdict(ratio, TARGET, explained)
    return speed
