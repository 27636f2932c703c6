"""Measuring speed, shared by both methods: where it runs, FLOPs, comparing arms (the only timer), the speed row.

- ``environment``: device presence, :func:`default_device`, :func:`environment_info` (recorded in every row).
- ``flops``: :func:`count_flops` / :func:`flops_per_image` with torch's FlopCounterMode (FLOP-ideal speed-ups).
- ``comparison``: the comparison engine, the one timer (:func:`compare`: balanced rounds, paired ratios with 95%
  bootstrap intervals, raw times, the A/A control; ``isolation="process"`` times each arm in its own process from
  an :class:`ArmSpec`).
- ``rows``: the speed row every timed table is built from (:func:`speed_row`, :func:`control_row`,
  :func:`protocol`), the one verdict vocabulary (:func:`flop_bound_verdict`), :func:`compare_models` (inference
  forwards of several models with an A/A copy: one model's images/s is ``compare_models({"plain": model}, ...)``).
  A timed training step is :func:`vitstudy.steps.random_batch_step`.
- ``profile``: :func:`operator_breakdown`, a ``torch.profiler`` table of where each arm's time goes.

Numbers stay numbers: on an absent device (``"cuda"`` here) every measured number is NaN and the row's
``note`` says :data:`NOT_MEASURED_NO_CUDA`.
"""

from ..formatting import format_interval
from .comparison import (
    CONTROL_TOLERANCE,
    FLOP_BOUND_SLACK,
    SMOKE_TIMING,
    ArmSpec,
    CompareSettings,
    Comparison,
    calibration_arm,
    compare,
    control_note,
    median_interval,
)
from .environment import NOT_MEASURED_NO_CUDA, default_device, device_available, environment_info, synchronize
from .flops import count_flops, flops_per_image
from .profile import operator_breakdown, operator_times
from .rows import (
    BASELINE_VERDICT,
    compare_models,
    control_arm,
    control_row,
    control_verdict,
    flop_bound_verdict,
    protocol,
    raw_times,
    speed_row,
    table_note,
)

__all__ = [
    "format_interval",
    "SMOKE_TIMING",
    "BASELINE_VERDICT",
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
