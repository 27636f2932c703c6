"""The speed row, built once for every timed table, and the one verdict vocabulary that judges it.

A timed table is a :class:`~vitstudy.bench.comparison.Comparison` turned into rows: each faster arm's measured
speed-up over the baseline with its 95% interval, beside the FLOP-ideal speed-up, their quotient (a ratio of
speed-ups, not of gains) with its interval, and a verdict; the A/A control's row; and the protocol columns
(device, threads, rounds, seconds per arm and round, order, isolation, versions) on every row.

Every row also says how close the baseline runs to the machine (:func:`machine_use`): the baseline's achieved
GFLOP/s (its FLOPs per image, as ``flops_counted`` says, times its images/s), the machine's matmul peak in the
baseline's precision measured in the same process (``peak_gflop_per_s``, ``peak_dtype``) and their quotient
(``baseline_fraction_of_peak``). A bf16 arm (:func:`bf16_arm`, run under ``torch.autocast``) adds
:func:`bf16_columns` beside its fp32 twin's row: its speed-up over fp32 and its measured ÷ FLOP ideal in bf16.

Verdicts, the whole vocabulary:

- ``"baseline"``: the arm every ratio divides.
- ``"within target (lo–hi)"``, ``"below target (lo–hi)"``, ``"above target (lo–hi)"``: a measured ÷ ideal
  against a two-sided target; with ``interval=(lo, hi)`` a point inside the target meets it only when its
  interval lies inside that band too, else ``"point within …, but interval … not inside …: not resolved"``.
- ``"exceeds the FLOP bound — measurement suspect"`` (measured ÷ ideal above :data:`FLOP_BOUND_SLACK`), or
  ``"above the FLOP ideal: explained by profile"`` when a committed profile explains it: never "met".
- ``"A/A control: within 1.00 ± 3%"`` / ``"A/A control: outside 1.00 ± 3%"``.
- ``"not measured"``: the device is absent (every number NaN, the ``note`` says why).

Read back from a committed table (RESULTS.md, the notebooks' closings), the same vocabulary is derived from the numbers,
never from the stored strings: :func:`control_passes` judges an A/A control by its interval, :func:`table_trust` says
whether a table's speed-ups can be read at all, :func:`speed_phrase` writes a speed-up beside its FLOP ideal,
:func:`speed_verdict` states a verdict on measured ÷ ideal and says so (or ``"not trustworthy (A/A …)"`` under a
failed control, never "within target"), and :func:`accuracy_verdict` judges a top-1 difference against a document's.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ..config import check
from ..formatting import NOT_MEASURED, format_interval
from .comparison import CONTROL_TOLERANCE, FLOP_BOUND_SLACK, CompareSettings, Comparison, compare
from .environment import NOT_MEASURED_NO_BF16, bf16_native, device_available
from .flops import BaselineWork, flops_per_image

BASELINE_VERDICT = "baseline"
CONTROL_SUFFIX = " (A/A copy)"  # the A/A control arm is the baseline's name plus this
BF16_SUFFIX = " (bf16)"  # a bf16 arm is its fp32 twin's name plus this
NOT_TIMED_BF16 = "not timed in bf16 at this scale"  # the bf16 verdict of a row whose bf16 arm the budget leaves out
NOT_COUNTED = "not counted"  # flops_counted of a comparison without BaselineWork
# Every target and band of the study, named once. A target bounds measured ÷ FLOP-ideal speed-up (two-sided); the
# control band bounds an A/A ratio.
CONTROL_BAND = (1 - CONTROL_TOLERANCE, 1 + CONTROL_TOLERANCE)  # an arm that changes nothing reads 1.00 ± 3%
# An arm that runs only the blocks the FLOP count counts (forced exits: the same blocks, fewer of them) has no
# excuse to miss its ideal in either direction: the control's band.
NO_OVERHEAD_TARGET = CONTROL_BAND
# An arm that adds work the FLOP count leaves out (confidences, compaction, gathers, re-insertion) may fall up to 10%
# short of its ideal; above the ideal by more than the slack is a measurement error, whatever the arm.
FLOP_IDEAL_TARGET = (0.90, FLOP_BOUND_SLACK)
# Machinery that runs but never fires (an exit threshold no image reaches) may cost up to the control's tolerance and
# can gain nothing.
IDLE_TARGET = (CONTROL_BAND[0], 1.0)
# A measured ÷ ideal is resolved when its interval lies inside this band too (the interval rule of the forced exits;
# the bound a loading path must reach against no loader at all).
RESOLVED_BAND = (0.95, 1.05)
WITHIN_TARGET = "within target"  # how every verdict that meets its target begins (readers test for this prefix)
# What machine_use adds to every row: a table that picks its columns keeps these, so every timed table says how
# close its baseline runs to the machine.
MACHINE_USE_COLUMNS = (
    "baseline_gflop_per_s",
    "peak_gflop_per_s",
    "baseline_fraction_of_peak",
    "peak_dtype",
    "flops_counted",
)
# What a timed table with bf16 twins shows after its fp32 columns: bf16 beside fp32 (NaN where a row was not timed in
# bf16), then how close the baseline runs to the machine in each precision.
BF16_AND_MACHINE_COLUMNS = (
    "bf16_speedup_over_fp32",
    "bf16_speedup_over_fp32_low",
    "bf16_speedup_over_fp32_high",
    "bf16_measured_over_ideal",
    "bf16_measured_over_ideal_low",
    "bf16_measured_over_ideal_high",
    "bf16_verdict",
    "baseline_gflop_per_s",
    "peak_gflop_per_s",
    "baseline_fraction_of_peak",
    "bf16_baseline_gflop_per_s",
    "bf16_peak_gflop_per_s",
    "bf16_baseline_fraction_of_peak",
    "flops_counted",
)
BF16_NUMBERS = tuple(
    f"bf16_{name}"
    for name in (
        "images_per_s",
        "speedup_over_fp32",
        "speedup_over_fp32_low",
        "speedup_over_fp32_high",
        "measured_over_ideal",
        "measured_over_ideal_low",
        "measured_over_ideal_high",
    )
)


def bf16_arm(name: str) -> str:
    """The name of ``name``'s bf16 twin: ``"plain"`` -> ``"plain (bf16)"``."""
    return name + BF16_SUFFIX


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
        return (
            "above the FLOP ideal: explained by profile"
            if explained
            else ("exceeds the FLOP bound — measurement suspect")
        )
    low, high = target
    if measured_over_ideal < low:
        return f"below target ({low:g}–{high:g})"
    if measured_over_ideal > high:
        return f"above target ({low:g}–{high:g})"
    if interval is not None and interval_within is not None:
        lo, hi = interval_within
        if not (lo <= interval[0] and interval[1] <= hi):
            return (
                f"point within {low:g}–{high:g}, but interval {interval[0]:.2f}–{interval[1]:.2f} not inside "
                f"{lo:g}–{hi:g}: not resolved"
            )
        return f"{WITHIN_TARGET} ({low:g}–{high:g}, interval inside {lo:g}–{hi:g})"
    return f"{WITHIN_TARGET} ({low:g}–{high:g})"


def control_verdict(control_speedup: float) -> str:
    """The A/A control's verdict: it must read 1.00 within ±3%."""
    if math.isnan(control_speedup):
        return NOT_MEASURED
    inside = abs(control_speedup - 1) <= CONTROL_TOLERANCE
    return f"A/A control: {'within' if inside else 'outside'} 1.00 ± {CONTROL_TOLERANCE:.0%}"


def control_passes(low: float, high: float) -> bool:
    """An A/A control passes when its whole 95% interval lies inside :data:`CONTROL_BAND`: a point inside the band
    with an interval reaching out of it has not shown that the protocol is unbiased. NaN never passes."""
    return CONTROL_BAND[0] <= low and high <= CONTROL_BAND[1]


NOT_TRUSTWORTHY = "not trustworthy"  # how every verdict under a failed A/A control begins (readers test for this)


def table_trust(table: pd.DataFrame, prefix: str = "") -> str:
    """``""`` when ``table``'s A/A control passes by its interval (:func:`control_passes`) or the table has no
    control row; else ``"not trustworthy (A/A 1.04× (1.01–1.06), outside 1.00 ± 3%)"``, or ``"not measured"`` when
    the control was not timed.

    The control row is the one with a cell outside the notes that starts ``"A/A control"`` (its verdict, or a
    setting that names it) or ends with :data:`CONTROL_SUFFIX` (its arm's name). ``prefix`` picks a device's or
    model's columns in a table that holds several (``"cpu_"``: ``cpu_speedup``, ``cpu_speedup_low``, ...). Pass one
    timed group: a table that stacks several comparisons (one per batch size) is judged group by group.
    """
    text = table.select_dtypes(include=["object", "string"]).astype(str)
    text = text[[name for name in text.columns if "note" not in name]]  # a note may quote the control's reading
    is_control = text.apply(lambda column: column.str.startswith("A/A control") | column.str.endswith(CONTROL_SUFFIX))
    rows = table[is_control.any(axis=1)]
    if rows.empty:
        return ""
    control = rows.iloc[0]
    speedup, low, high = (float(control[f"{prefix}speedup{end}"]) for end in ("", "_low", "_high"))
    if any(math.isnan(value) for value in (speedup, low, high)):
        return NOT_MEASURED
    if control_passes(low, high):
        return ""
    band = f"1.00 ± {CONTROL_TOLERANCE:.0%}"
    return f"{NOT_TRUSTWORTHY} (A/A {format_interval(speedup, low, high, unit='×')}, outside {band})"


def speed_phrase(speedup: float, low: float, high: float, ideal: float) -> str:
    """``"1.27× (1.23–1.34) of an ideal 1.30× = 0.98"``: a measured speed-up with its 95% interval, its FLOP ideal
    and their quotient, the number every speed verdict judges."""
    if math.isnan(speedup):
        return NOT_MEASURED
    return f"{format_interval(speedup, low, high, unit='×')} of an ideal {ideal:.2f}× = {speedup / ideal:.2f}"


def speed_verdict(
    measured_over_ideal: float,
    low: float,
    high: float,
    target: tuple[float, float],
    trust: str = "",
    interval_within: tuple[float, float] | None = None,
    explained: bool = False,
) -> str:
    """The verdict on measured ÷ FLOP ideal, saying what it reads: ``"measured ÷ ideal 0.98 (0.95–1.03): within
    target (0.9–1.03)"`` (the judgement as :func:`flop_bound_verdict` words it). Under a failed A/A control
    (``trust``, from :func:`table_trust`) the verdict is ``trust`` itself: no target is met on a biased protocol."""
    if trust:
        return trust
    if math.isnan(measured_over_ideal):
        return NOT_MEASURED
    interval = (low, high)
    judged = flop_bound_verdict(measured_over_ideal, target, explained, interval, interval_within)
    return f"measured ÷ ideal {format_interval(measured_over_ideal, low, high)}: {judged}"


# A document's top-1 difference this small (points) claims no change: both documents print top-1 to two decimals at
# best, and no seed count this study can afford resolves a tenth of a point.
NO_CHANGE_POINTS = 0.1


def accuracy_verdict(ours: float, low: float, high: float, paper: float, seeds_needed: int | None = None) -> str:
    """Our top-1 difference (points, ``ours`` with its 95% interval ``low``–``high``) against a document's
    difference ``paper``. The partition, in the order it is tested:

    1. any of ours NaN: ``"not measured"``; ``paper`` NaN (our own question, no document to compare):
       ``"higher"`` / ``"lower"`` when the interval excludes 0, else ``"no difference resolved"``.
    2. ``|paper| ≤ NO_CHANGE_POINTS`` (the document claims no change): ``"reproduced"`` when the interval contains 0,
       else ``"contradicted"``.
    3. the interval contains ``paper`` and excludes 0: ``"reproduced"``.
    4. the interval contains both ``paper`` and 0: ``"cannot tell (N seeds would resolve it)"`` with
       ``seeds_needed`` (the caller's estimate), plain ``"cannot tell"`` without.
    5. ``paper`` outside, the interval contains 0: ``"contradicted in size"``.
    6. ``paper`` outside, the interval excludes 0 on ``paper``'s side: ``"direction reproduced, smaller"`` (the
       interval lies between 0 and ``paper``) or ``"direction reproduced, larger"`` (beyond ``paper``).
    7. ``paper`` outside, the interval excludes 0 on the other side: ``"contradicted"``.
    """
    if any(math.isnan(value) for value in (ours, low, high)):
        return NOT_MEASURED
    has_zero = low <= 0 <= high
    if math.isnan(paper):
        return "no difference resolved" if has_zero else ("higher" if low > 0 else "lower")
    if abs(paper) <= NO_CHANGE_POINTS:
        return "reproduced" if has_zero else "contradicted"
    if low <= paper <= high:
        if not has_zero:
            return "reproduced"
        return f"cannot tell ({seeds_needed} seeds would resolve it)" if seeds_needed else "cannot tell"
    if has_zero:
        return "contradicted in size"
    if (low > 0) == (paper > 0):
        return "direction reproduced, " + ("smaller" if abs(ours) < abs(paper) else "larger")
    return "contradicted"


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
        **machine_use(comparison, comparison.baseline, images, comparison.work),
    }


def machine_use(comparison: Comparison, arm: str, images: int, work: BaselineWork | None) -> dict[str, Any]:
    """How close ``arm`` (the baseline, in every row) runs to the machine: ``baseline_gflop_per_s`` =
    ``work.flops_per_image`` × its images/s, the peak in ``work.dtype`` recorded in the comparison's environment,
    their quotient, and what the FLOPs count. NaN where the FLOPs were not counted or nothing was timed."""
    dtype = work.dtype if work is not None else "fp32"
    seconds = comparison.speedup(arm)["seconds"] if arm in _timed_arms(comparison) else math.nan
    peak = float(comparison.environment.get(f"peak_{dtype}_gflop_per_s", math.nan))
    return achieved_rate(seconds, images, work, peak)


def achieved_rate(seconds: float, images: int, work: BaselineWork | None, peak: float) -> dict[str, Any]:
    """:data:`MACHINE_USE_COLUMNS` of a baseline that does ``work`` on ``images`` images in ``seconds`` per call,
    against a peak of ``peak`` GFLOP/s in ``work.dtype``; NaN where the FLOPs were not counted."""
    dtype = work.dtype if work is not None else "fp32"
    achieved = (work.flops_per_image if work is not None else math.nan) * images / seconds
    return {
        "baseline_gflop_per_s": achieved / 1e9,
        "peak_gflop_per_s": peak,
        "baseline_fraction_of_peak": achieved / 1e9 / peak,
        "peak_dtype": dtype,
        "flops_counted": work.counted if work is not None else NOT_COUNTED,
    }


def _timed_arms(comparison: Comparison) -> set[str]:
    return set(comparison.raw["arm"]) if not comparison.raw.empty else set()


def bf16_columns(
    comparison: Comparison,
    arm: str,
    images: int,
    ideal: float,
    target: tuple[float, float],
    interval_within: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``arm``'s bf16 columns, for its fp32 row: its bf16 twin's speed-up over ``arm`` (the same work in fp32) with
    its 95% interval, and the twin's speed-up over the bf16 baseline ÷ ``ideal`` with its interval and verdict
    (``"baseline"`` for the baseline). The bf16 baseline's GFLOP/s against the bf16 peak on every row. A twin the
    comparison did not time gives NaN and :data:`NOT_TIMED_BF16`, or :data:`.environment.NOT_MEASURED_NO_BF16` on a
    device without bf16 kernels (where :func:`compare_models` and the training-step tables time no bf16 twin)."""
    twin, base = bf16_arm(arm), bf16_arm(comparison.baseline)
    fp32_work = comparison.work
    work = None if fp32_work is None else BaselineWork(fp32_work.flops_per_image, fp32_work.counted, "bf16")
    use = machine_use(comparison, base, images, work)
    use = {f"bf16_{k}": use[k] for k in ("baseline_gflop_per_s", "peak_gflop_per_s", "baseline_fraction_of_peak")}
    if not {twin, base} <= _timed_arms(comparison):
        if comparison.raw.empty:
            verdict = NOT_MEASURED
        elif not comparison.environment.get("bf16_native", True):
            verdict = NOT_MEASURED_NO_BF16
        else:
            verdict = NOT_TIMED_BF16
        return {**dict.fromkeys(BF16_NUMBERS, math.nan), "bf16_verdict": verdict, **use}
    over_fp32, speed = comparison.speedup(twin, over=arm), comparison.speedup(twin, over=base)
    low, high = speed["speedup_low"] / ideal, speed["speedup_high"] / ideal
    verdict = (
        BASELINE_VERDICT
        if twin == base
        else (flop_bound_verdict(speed["speedup"] / ideal, target, False, (low, high), interval_within))
    )
    return {
        "bf16_images_per_s": images / speed["seconds"],
        "bf16_speedup_over_fp32": over_fp32["speedup"],
        "bf16_speedup_over_fp32_low": over_fp32["speedup_low"],
        "bf16_speedup_over_fp32_high": over_fp32["speedup_high"],
        "bf16_measured_over_ideal": speed["speedup"] / ideal,
        "bf16_measured_over_ideal_low": low,
        "bf16_measured_over_ideal_high": high,
        "bf16_verdict": verdict,
        **use,
    }


def control_row(comparison: Comparison, images: int) -> dict[str, Any]:
    """The A/A control's row: the baseline against its identical copy (ideal 1.00)."""
    check(comparison.control is not None, "comparison.control", None, "a comparison timed with an A/A control")
    return speed_row(comparison, comparison.control, images, 1.0, CONTROL_BAND)


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
    """The ``note`` of a timed table: why nothing was measured, or what the A/A control says (empty if fine), and
    where a comparison shared within a report run (:mod:`.shared`) was timed."""
    if comparison.note:
        return comparison.note
    shared_from = comparison.environment.get("shared_from")
    reused = (
        f"timed once earlier in this report run ({shared_from}) and read here, not timed again" if shared_from else ""
    )
    return "; ".join(note for note in (comparison.control_note(), reused) if note)


def raw_times(comparison: Comparison, **labels: Any) -> Any:
    """The comparison's raw per-call times with the protocol and ``labels`` as columns (for ``save_raw``)."""
    return comparison.raw.assign(**protocol(comparison), **labels)


def compare_models(
    models: Mapping[str, torch.nn.Module],
    inputs: torch.Tensor,
    settings: CompareSettings,
    device: str | torch.device = "cpu",
    baseline: str = "plain",
    bf16: Sequence[str] = (),
) -> Comparison:
    """Time one inference forward of each model on the same batch with :func:`compare`; ``models[baseline]`` is
    the baseline and a deep copy of it, :func:`control_arm` ``(baseline)``, is always added as the A/A control.
    Every model named in ``bf16`` gets a twin arm, :func:`bf16_arm` ``(name)``, the same model run under
    ``torch.autocast(dtype=torch.bfloat16)`` (the fp32 arms stay the headline), where the device has bf16 kernels
    (:func:`.environment.bf16_native`; elsewhere the bf16 columns say :data:`.environment.NOT_MEASURED_NO_BF16`).

    Models run in eval mode under ``torch.inference_mode`` on ``device`` and go back to the CPU afterwards. The
    baseline's forward FLOPs per image (:func:`.flops.flops_per_image`) are the comparison's ``work``. On an
    absent device nothing runs: the comparison is empty and its ``note`` says why.
    """
    check(baseline in models, "models", list(models), f"a mapping with a {baseline!r} entry (the baseline)")
    check(set(bf16) <= set(models), "bf16", tuple(bf16), f"names among the models {list(models)}")
    device = torch.device(device)
    with inference_models(models, inputs, baseline, device) as (models, control, x, work):
        arms = {name: (lambda m=model: m(x)) for name, model in models.items()}
        arms |= {bf16_arm(name): _autocast_call(models[name], x) for name in bf16 if bf16_native(device)}
        return compare(arms, baseline, control, settings, device, work=work)


@contextlib.contextmanager
def inference_models(
    models: Mapping[str, torch.nn.Module], inputs: torch.Tensor, baseline: str, device: torch.device
) -> Iterator[tuple[dict[str, torch.nn.Module], str, torch.Tensor, BaselineWork]]:
    """The models as every inference timer runs them: ``models`` plus a deep copy of ``models[baseline]`` named
    :func:`control_arm` ``(baseline)`` (the A/A control), in eval mode on ``device`` (the CPU where it is absent),
    under ``torch.inference_mode``, the inputs beside them, and the baseline's forward FLOPs per image as the
    work. Yields ``(models, control, inputs on the device, work)``; the models go back to the CPU afterwards."""
    control = control_arm(baseline)
    models = {**models, control: copy.deepcopy(models[baseline])}
    available = device_available(device)
    x = inputs.to(device) if available else inputs
    try:
        for model in models.values():
            model.eval().to(device if available else "cpu")
        # Counted on a copy and one random image (FLOPs do not depend on the values), so the models see only x.
        work = BaselineWork(flops_per_image(models[baseline], tuple(inputs.shape[1:]), device))
        with torch.inference_mode():
            yield models, control, x, work
    finally:
        for model in models.values():
            model.to("cpu")


def _autocast_call(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model(x)

    return call
