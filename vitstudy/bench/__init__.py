"""Measuring speed, shared by both methods: where it runs, FLOPs, comparing arms (one timer per kind:
throughput and per-image latency), the speed row.

- ``environment``: device presence, :func:`default_device`, :func:`environment_info` (recorded in every row).
- ``flops``: :func:`count_flops` / :func:`flops_per_image` with torch's FlopCounterMode (FLOP-ideal speed-ups);
  :class:`BaselineWork`, the baseline's FLOPs per image (a training step counts 3 × forward).
- ``peak``: :func:`machine_peak`, the fp32 and bf16 FLOP/s of a square matmul at the timed thread count, measured
  once per process by :func:`compare` and recorded (``$VITSTUDY_PEAK_RECORD``, the report's manifest).
- ``comparison``: the comparison engine, the throughput timer (:func:`compare`: balanced rounds, paired ratios with 95%
  bootstrap intervals, raw times, the A/A control; ``isolation="process"`` times each arm in its own process from
  an :class:`ArmSpec`).
- ``rows``: the speed row every timed table is built from (:func:`speed_row`, :func:`control_row`,
  :func:`protocol`), :func:`compare_models` (inference
  forwards of several models with an A/A copy: one model's images/s is ``compare_models({"plain": model}, ...)``),
  how close the baseline runs to the peak (:func:`machine_use`, in every row) and a bf16 twin's columns
  (:func:`bf16_columns`).
  A timed training step is :func:`vitstudy.steps.random_batch_step`.
- ``latency``: the per-image timer (:func:`time_models_per_image`: every image alone through every arm, ``abba``
  by image, an A/A copy; :func:`latency_rows`: mean / median / p90 / p99 per image, speed-ups paired by image with
  95% bootstrap intervals and :mod:`.rows`' verdicts; :func:`raw_latencies`), for latency at batch 1.
- the one verdict vocabulary and every target and band, from :mod:`vitstudy.verdicts` (torch-free):
  :func:`flop_bound_verdict`, :func:`control_verdict`; read back from a committed table :func:`control_passes`,
  :func:`table_trust`, :func:`speed_phrase`, :func:`speed_verdict`, :func:`accuracy_verdict`.
- ``shared``: a comparison one notebook of a report run keeps for a later one that times a subset of its arms
  (:func:`share`, :func:`shared_subset`; ``$VITSTUDY_REPORT_TIMINGS``).
- ``profile``: :func:`operator_breakdown`, a ``torch.profiler`` table of where each arm's time goes.
- ``operators``: :func:`~.operators.count_operators` / :func:`~.operators.operators_per_image`, the operators a call
  dispatches (no clock), and :func:`~.operators.operator_ideal`, plain's count over an arm's: what a small model at a
  small batch, bound by operator count, can gain.

Numbers stay numbers: on an absent device (``"cuda"`` here) every measured number is NaN and the row's
``note`` says :data:`NOT_MEASURED_NO_CUDA`.
"""

from ..formatting import format_interval
from ..verdicts import (
    BASELINE_VERDICT,
    CONTROL_BAND,
    CONTROL_SUFFIX,
    CONTROL_TOLERANCE,
    FLOP_BOUND_SLACK,
    FLOP_IDEAL_TARGET,
    IDLE_TARGET,
    NO_CHANGE_POINTS,
    NO_LOSS_POINTS,
    NO_OVERHEAD_TARGET,
    NOT_TRUSTWORTHY,
    RESOLVED_BAND,
    WITHIN_TARGET,
    accuracy_verdict,
    control_passes,
    control_rows,
    control_trust,
    control_verdict,
    flop_bound_verdict,
    speed_phrase,
    speed_verdict,
    table_trust,
)
from .comparison import (
    SMOKE_ONE_CALL_TIMING,
    SMOKE_TIMING,
    ArmSpec,
    CompareSettings,
    Comparison,
    calibration_arm,
    compare,
    control_note,
    settings_peak,
)
from .environment import (
    NOT_MEASURED_NO_BF16,
    NOT_MEASURED_NO_CUDA,
    bf16_native,
    default_device,
    device_available,
    environment_info,
    synchronize,
)
from .flops import FORWARD, TRAINING_STEP, BaselineWork, count_flops, flops_per_image
from .latency import LatencyRun, latency_rows, raw_latencies, time_models_per_image, time_per_image
from .peak import PEAK_RECORD_ENV, machine_peak, matmul_gflop_per_s, measured_peaks, read_peak_record
from .profile import operator_breakdown, operator_times
from .rows import (
    BF16_AND_MACHINE_COLUMNS,
    MACHINE_USE_COLUMNS,
    NOT_TIMED_BF16,
    achieved_rate,
    bf16_arm,
    bf16_columns,
    compare_models,
    control_arm,
    control_row,
    machine_use,
    protocol,
    raw_times,
    speed_row,
    table_note,
)
from .shared import SHARED_TIMINGS_ENV, arm_fingerprint, share, shared_subset, timing_key
from .stats import bootstrap_interval, median_interval, paired_difference_interval, paired_ratio_interval

__all__ = [
    "LatencyRun",
    "latency_rows",
    "raw_latencies",
    "time_models_per_image",
    "time_per_image",
    "SHARED_TIMINGS_ENV",
    "arm_fingerprint",
    "share",
    "shared_subset",
    "timing_key",
    "format_interval",
    "SMOKE_ONE_CALL_TIMING",
    "SMOKE_TIMING",
    "NOT_MEASURED_NO_BF16",
    "bf16_native",
    "BASELINE_VERDICT",
    "NOT_TIMED_BF16",
    "bf16_arm",
    "bf16_columns",
    "machine_use",
    "MACHINE_USE_COLUMNS",
    "achieved_rate",
    "WITHIN_TARGET",
    "NOT_TRUSTWORTHY",
    "NO_CHANGE_POINTS",
    "NO_LOSS_POINTS",
    "control_rows",
    "control_trust",
    "accuracy_verdict",
    "control_passes",
    "speed_phrase",
    "speed_verdict",
    "table_trust",
    "BF16_AND_MACHINE_COLUMNS",
    "CONTROL_BAND",
    "CONTROL_SUFFIX",
    "FLOP_IDEAL_TARGET",
    "IDLE_TARGET",
    "NO_OVERHEAD_TARGET",
    "RESOLVED_BAND",
    "FORWARD",
    "TRAINING_STEP",
    "BaselineWork",
    "PEAK_RECORD_ENV",
    "machine_peak",
    "matmul_gflop_per_s",
    "measured_peaks",
    "read_peak_record",
    "compare_models",
    "control_arm",
    "control_row",
    "control_verdict",
    "protocol",
    "raw_times",
    "speed_row",
    "table_note",
    "CONTROL_TOLERANCE",
    "FLOP_BOUND_SLACK",
    "ArmSpec",
    "Comparison",
    "CompareSettings",
    "calibration_arm",
    "compare",
    "control_note",
    "flop_bound_verdict",
    "median_interval",
    "bootstrap_interval",
    "paired_ratio_interval",
    "paired_difference_interval",
    "settings_peak",
    "operator_breakdown",
    "operator_times",
    "NOT_MEASURED_NO_CUDA",
    "count_flops",
    "default_device",
    "device_available",
    "environment_info",
    "flops_per_image",
    "synchronize",
]
