"""Where the time goes: a ``torch.profiler`` breakdown by operator of several arms, side by side.

A measured speed-up above its FLOP-ideal is a measurement error unless a profile names the operators that
shrink faster than their FLOPs (attention's softmax and its backward move memory, not FLOPs); a speed-up far
below it is explained the same way (the arm's own gather / scatter / argsort). :func:`operator_breakdown` gives
the per-call self time of every operator in each arm, so the two arms' totals can be read operator by operator.

The profiler's native library (Kineto) logs to stderr on its own: a line as each profile starts and stops and, on a
machine without CUDA, an ``ERROR`` that it found no GPU, although only the CPU is profiled there. None of it is a
fault, so :func:`operator_times` silences it (``KINETO_LOG_LEVEL``; set the variable to see it again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from ..config import check

KINETO_LOG_LEVEL = "KINETO_LOG_LEVEL"
# Above Kineto's highest level (its USDT start/stop lines). Kineto reads it once, when a process first profiles.
KINETO_SILENT = "6"


def operator_times(fn: Callable[[], Any], calls: int = 3, warmup_calls: int = 1) -> pd.DataFrame:
    """Self time per call (ms) of each operator ``fn`` runs, largest first: ``operator, self_ms, count``."""
    check(calls >= 1, "calls", calls, "an integer >= 1")
    for _ in range(warmup_calls):
        fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    os.environ.setdefault(KINETO_LOG_LEVEL, KINETO_SILENT)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", 0.0) or 0.0
        rows.append(
            {
                "operator": event.key,
                "self_ms": (event.self_cpu_time_total + device_us) / 1000 / calls,
                "count": event.count / calls,
            }
        )
    frame = pd.DataFrame(rows)
    return frame[frame["self_ms"] > 0].sort_values("self_ms", ascending=False, ignore_index=True)


def operator_breakdown(arms: Mapping[str, Callable[[], Any]], calls: int = 3, top: int = 12) -> pd.DataFrame:
    """Operators × arms: self ms per call in each arm, the ``top`` largest (by the first arm) and the rest summed.

    The last row, ``total``, is the sum over all operators: compare its ratio with the timed speed-up.
    """
    per_arm = {name: operator_times(fn, calls).set_index("operator")["self_ms"] for name, fn in arms.items()}
    table = pd.DataFrame(per_arm).fillna(0.0)
    first = next(iter(per_arm))
    table = table.sort_values(first, ascending=False)
    head, rest = table.iloc[:top], table.iloc[top:]
    out = pd.concat(
        [head, pd.DataFrame([rest.sum()], index=["(other operators)"]), pd.DataFrame([table.sum()], index=["total"])]
    )
    out.index.name = "operator"
    return out.reset_index()
