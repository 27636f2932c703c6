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

Verdicts: the one vocabulary of :mod:`vitstudy.verdicts` (torch-free, so RESULTS.md reads tables through it),
every target and band named there once; :mod:`vitstudy.bench` exports it all.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ..config import check
from ..formatting import NOT_MEASURED
from ..verdicts import BASELINE_VERDICT, CONTROL_BAND, CONTROL_SUFFIX, control_verdict, flop_bound_verdict
from .comparison import CompareSettings, Comparison, compare
from .environment import NOT_MEASURED_NO_BF16, bf16_native, device_available
from .flops import BaselineWork, flops_per_image

BF16_SUFFIX = " (bf16)"  # a bf16 arm is its fp32 twin's name plus this
NOT_TIMED_BF16 = "not timed in bf16 at this scale"  # the bf16 verdict of a row whose bf16 arm the budget leaves out
NOT_COUNTED = "not counted"  # flops_counted of a comparison without BaselineWork
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
        verdict = control_verdict(speed["speedup"], speed["speedup_low"], speed["speedup_high"])
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
        "rounds": comparison.rounds_used,  # fewer than the cap when every interval reached its band
        "rounds_cap": settings.rounds,
        "min_run_time_s": settings.min_run_time,
        "order": settings.order,
        "isolation": settings.isolation,
        "torch": env["torch"],
        "timm": env["timm"],
    }


def table_note(comparison: Comparison) -> str:
    """The ``note`` of a timed table: why nothing was measured, or what the A/A control says (empty if fine), whether
    the timing hit its cap of rounds with an interval still wider than its band, and where a comparison shared within
    a report run (:mod:`.shared`) was timed."""
    if comparison.note:
        return comparison.note
    shared_from = comparison.environment.get("shared_from")
    reused = (
        f"timed once earlier in this report run ({shared_from}) and read here, not timed again" if shared_from else ""
    )
    return "; ".join(note for note in (comparison.control_note(), comparison.rounds_note(), reused) if note)


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
