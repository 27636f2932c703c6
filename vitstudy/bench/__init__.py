"""Measuring speed, shared by both methods: where it runs, FLOPs, timing one callable, comparing arms.

- ``environment``: device presence, :func:`default_device`, :func:`environment_info` (recorded in every row).
- ``flops``: :func:`count_flops` / :func:`flops_per_image` with torch's FlopCounterMode (FLOP-ideal speed-ups).
- ``timing``: :func:`time_callable` and throughput rows (one model, warm-up, sync, :func:`timing_spread`).

Numbers stay numbers: on an absent device (``"cuda"`` here) every measured number is NaN and the row's
``note`` says :data:`NOT_MEASURED_NO_CUDA`.
"""

from .environment import NOT_MEASURED_NO_CUDA, default_device, device_available, environment_info, synchronize
from .flops import count_flops, flops_per_image
from .timing import (
    TimingSettings,
    batch_size_sweep,
    format_measurement,
    make_train_step,
    measure_inference,
    measure_train_step,
    time_callable,
    time_interleaved,
    timing_spread,
)

__all__ = [
    "NOT_MEASURED_NO_CUDA",
    "TimingSettings",
    "batch_size_sweep",
    "count_flops",
    "default_device",
    "device_available",
    "environment_info",
    "flops_per_image",
    "format_measurement",
    "make_train_step",
    "measure_inference",
    "measure_train_step",
    "synchronize",
    "time_callable",
    "time_interleaved",
    "timing_spread",
]
