"""The speed row, built once for every timed table, and the one verdict vocabulary that judges it.

A timed table is a :class:`~vitstudy.bench.comparison.Comparison` turned into rows: each faster arm's measured
speed-up over the baseline with its 95% interval, beside the FLOP-ideal speed-up, their quotient (a ratio of
speed-ups, not of gains) with its interval, and a verdict; the A/A control's row; and the protocol columns
(device, threads, rounds, seconds per arm and round, order, isolation, versions) on every row.

Verdicts, the whole vocabulary:

- ``"baseline"``: the arm every ratio divides.
- ``"within target (lo–hi)"``, ``"below target (lo–hi)"``, ``"above target (lo–hi)"``: a measured ÷ ideal
  against a two-sided target; with ``interval=(lo, hi)`` a point inside the target meets it only when its
  interval lies inside that band too, else ``"point within …, but interval … not inside …: not resolved"``.
- ``"exceeds the FLOP bound — measurement suspect"`` (measured ÷ ideal above :data:`FLOP_BOUND_SLACK`), or
  ``"above the FLOP ideal: explained by profile"`` when a committed profile explains it: never "met".
- ``"A/A control: within 1.00 ± 3%"`` / ``"A/A control: outside 1.00 ± 3%"``.
- ``"not measured"``: the device is absent (every number NaN, the ``note`` says why).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..config import check
from ..formatting import NOT_MEASURED
from .comparison import CONTROL_TOLERANCE, FLOP_BOUND_SLACK, CompareSettings, Comparison, compare
from .environment import device_available

BASELINE_VERDICT = "baseline"
CONTROL_SUFFIX = " (A/A copy)"  # the A/A control arm is the baseline's name plus this


def control_arm(baseline: str) -> str:
    """The name of the A/A control arm of ``baseline``: ``"plain"`` -> ``"plain (A/A copy)"``."""
    return baseline + CONTROL_SUFFIX


def flop_bound_verdict(
    measured_over_ideal: float,
    target: tuple[float, float],
    explained: bool = False,
    interval: tuple[float, float] | None = None,
    interval_within: tuple[float, float] | None = None,
) -> str:
    """Verdict for a measured ÷ FLOP-ideal speed-up against a two-sided ``target`` (module docstring).

    With ``interval`` (the quotient's 95% interval) and ``interval_within`` (a band), a point inside the target
    meets it only when the interval lies inside the band.
    """
    if math.isnan(measured_over_ideal):
        return NOT_MEASURED
    if measured_over_ideal > FLOP_BOUND_SLACK:
        return "above the FLOP ideal: explained by profile" if explained else (
            "exceeds the FLOP bound — measurement suspect"
        )  # fmt: skip
    low, high = target
    if measured_over_ideal < low:
        return f"below target ({low:g}–{high:g})"
    if measured_over_ideal > high:
        return f"above target ({low:g}–{high:g})"
    if interval is not None and interval_within is not None:
        lo, hi = interval_within
        if not (lo <= interval[0] and interval[1] <= hi):
            return (f"point within {low:g}–{high:g}, but interval {interval[0]:.2f}–{interval[1]:.2f} not inside "
                    f"{lo:g}–{hi:g}: not resolved")  # fmt: skip
        return f"within target ({low:g}–{high:g}, interval inside {lo:g}–{hi:g})"
    return f"within target ({low:g}–{high:g})"


def control_verdict(control_speedup: float) -> str:
    """The A/A control's verdict: it must read 1.00 within ±3%."""
    if math.isnan(control_speedup):
        return NOT_MEASURED
    inside = abs(control_speedup - 1) <= CONTROL_TOLERANCE
    return f"A/A control: {'within' if inside else 'outside'} 1.00 ± {CONTROL_TOLERANCE:.0%}"


def speed_row(
    comparison: Comparison,
    arm: str,
    images: int,
    ideal: float,
    target: tuple[float, float],
    interval_within: tuple[float, float] | None = None,
    explained: bool = False,
) -> dict[str, Any]:
    """One arm's measured speed-up over the baseline (95% interval) beside its FLOP-ideal ``ideal``.

    ``images`` is how many images one timed call processes (``images_per_s`` = images / seconds per call). The
    baseline's own row gets the verdict ``"baseline"``, the comparison's control arm :func:`control_verdict`.
    """
    speed = comparison.speedup(arm)
    over = speed["speedup"] / ideal
    low, high = speed["speedup_low"] / ideal, speed["speedup_high"] / ideal
    if arm == comparison.baseline:
        verdict = BASELINE_VERDICT if not math.isnan(speed["seconds"]) else NOT_MEASURED
    elif arm == comparison.control:
        verdict = control_verdict(speed["speedup"])
    else:
        verdict = flop_bound_verdict(over, target, explained, (low, high), interval_within)
    return {
        "seconds_per_call": speed["seconds"],
        "images_per_s": images / speed["seconds"],
        "speedup": speed["speedup"],
        "speedup_low": speed["speedup_low"],
        "speedup_high": speed["speedup_high"],
        "ideal_speedup": ideal,
        "measured_over_ideal": over,
        "measured_over_ideal_low": low,
        "measured_over_ideal_high": high,
        "verdict": verdict,
    }


def control_row(comparison: Comparison, images: int) -> dict[str, Any]:
    """The A/A control's row: the baseline against its identical copy (ideal 1.00)."""
    check(comparison.control is not None, "comparison.control", None, "a comparison timed with an A/A control")
    return speed_row(comparison, comparison.control, images, 1.0, (1 - CONTROL_TOLERANCE, 1 + CONTROL_TOLERANCE))


def protocol(comparison: Comparison) -> dict[str, Any]:
    """How a comparison was timed, for every row of its table: device, threads, rounds, seconds per arm and
    round, order, isolation and the versions."""
    env, settings = comparison.environment, comparison.settings
    return {
        "device": f"{env['device_type']}: {env['device_name']}",
        "threads": env["cpu_threads"],
        "rounds": settings.rounds,
        "min_run_time_s": settings.min_run_time,
        "order": settings.order,
        "isolation": settings.isolation,
        "torch": env["torch"],
        "timm": env["timm"],
    }


def table_note(comparison: Comparison) -> str:
    """The ``note`` of a timed table: why nothing was measured, or what the A/A control says (empty if fine)."""
    return comparison.note or comparison.control_note()


def raw_times(comparison: Comparison, **labels: Any) -> Any:
    """The comparison's raw per-call times with the protocol and ``labels`` as columns (for ``save_raw``)."""
    return comparison.raw.assign(**protocol(comparison), **labels)


def compare_models(
    models: Mapping[str, torch.nn.Module],
    inputs: torch.Tensor,
    settings: CompareSettings,
    device: str | torch.device = "cpu",
    baseline: str = "plain",
) -> Comparison:
    """Time one inference forward of each model on the same batch with :func:`compare`; ``models[baseline]`` is
    the baseline and a deep copy of it, :func:`control_arm` ``(baseline)``, is always added as the A/A control.

    Models run in eval mode under ``torch.inference_mode`` on ``device`` and go back to the CPU afterwards. On an
    absent device nothing runs: the comparison is empty and its ``note`` says why.
    """
    check(baseline in models, "models", list(models), f"a mapping with a {baseline!r} entry (the baseline)")
    device = torch.device(device)
    control = control_arm(baseline)
    models = {**models, control: copy.deepcopy(models[baseline])}
    available = device_available(device)
    x = inputs.to(device) if available else inputs
    try:
        for model in models.values():
            model.eval().to(device if available else "cpu")
        with torch.inference_mode():
            arms = {name: (lambda m=model: m(x)) for name, model in models.items()}
            return compare(arms, baseline, control, settings, device)
    finally:
        for model in models.values():
            model.to("cpu")
