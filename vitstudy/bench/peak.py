"""The machine's peak: the FLOP/s a large square matmul reaches on a device at the timed thread count, in fp32 and
bf16, measured once per process (and per device, thread count and size) and recorded.

A timed table says how its faster arms compare with their FLOP ideal; the peak says how close the baseline itself
runs to what the machine can do (:func:`vitstudy.bench.rows.machine_use`: achieved FLOP/s ÷ peak). A matmul of
``size`` × ``size`` costs ``2 · size³`` FLOPs (multiply-add = 2, as :mod:`.flops` counts) and is the work a ViT spends
most of its time in, so its rate is the ceiling a ViT's rate is read against. It is timed with
``torch.utils.benchmark.Timer.blocked_autorange`` (whose default clock synchronises CUDA, so a GPU's kernels are
timed, not their launch; its untimed block-sizing call is the warm-up), into a preallocated output (no allocator
time).

The report runner points ``$VITSTUDY_PEAK_RECORD`` at a file; every new measurement rewrites it (atomically) with
all the peaks this process measured, and the runner copies them into the manifest: the peak of the process that
timed, not of another one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import torch

from ..files import atomic_write_json
from .environment import bf16_native, device_available
from .timer import Timer

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Big enough to be compute-bound on a CPU core (its time is dominated by arithmetic, not by memory or dispatch); a
# GPU needs a larger one to fill its units.
DEFAULT_SIZES = {"cpu": 2048, "cuda": 8192}
PEAK_RECORD_ENV = "VITSTUDY_PEAK_RECORD"  # the report runner's file for the peaks this process measured

# (device, threads, size, dtype, whether that dtype has kernels there) -> record
_measured: dict[tuple[str, int, int, str, bool], dict[str, Any]] = {}


def peak_size(device: str | torch.device, size: int | None = None) -> int:
    """The matmul size measured on ``device``: ``size``, else :data:`DEFAULT_SIZES` of its type."""
    return size or DEFAULT_SIZES.get(torch.device(device).type, DEFAULT_SIZES["cpu"])


def matmul_gflop_per_s(
    size: int,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    min_run_time: float = 0.5,
    timer: Callable[[], float] | None = None,
) -> float:
    """GFLOP/s of one ``size`` × ``size`` matmul in ``dtype`` on ``device``: ``2 · size³`` FLOPs ÷ the median
    seconds per call of ``blocked_autorange`` (``timer`` replaces its clock in tests). NaN on an absent device."""
    if not device_available(device):
        return math.nan
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    # No warm-up call of our own: blocked_autorange's untimed block-sizing call pays for kernel choice and lazy init.
    extra = {} if timer is None else {"timer": timer}
    measurement = Timer(
        stmt="torch.mm(a, b, out=out)",
        globals={"torch": torch, "a": a, "b": b, "out": out},
        num_threads=threads or torch.get_num_threads(),
        **extra,
    ).blocked_autorange(min_run_time=min_run_time)
    return 2 * size**3 / measurement.median / 1e9


def machine_peak(
    device: str | torch.device = "cpu",
    threads: int | None = None,
    size: int | None = None,
    min_run_time: float = 0.5,
) -> dict[str, float]:
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}`` of a square matmul on ``device`` at ``threads`` (default: torch's
    current setting), measured once per process for each (device, threads, size) and cached; NaN on an absent
    device (not cached); the bf16 peak is NaN, not measured, on a device without bf16 kernels
    (:func:`.environment.bf16_native`). Each new measurement is written to ``$VITSTUDY_PEAK_RECORD`` when it is set."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    size = peak_size(device, size)
    if not device_available(device):
        return dict.fromkeys(PEAK_DTYPES, math.nan)
    out = {}
    for name, dtype in PEAK_DTYPES.items():
        native = dtype != torch.bfloat16 or bf16_native(device)
        key = (str(device), threads, size, name, native)  # with $VITSTUDY_BF16 a process may see both answers
        if key not in _measured:
            gflop_per_s = matmul_gflop_per_s(size, dtype, device, threads, min_run_time) if native else math.nan
            _measured[key] = {
                "device": str(device),
                "threads": threads,
                "matmul_size": size,
                "dtype": name,
                "gflop_per_s": gflop_per_s,
                "min_run_time_s": min_run_time,
            }
            _write_record()
        out[name] = _measured[key]["gflop_per_s"]
    return out


def measured_peaks() -> list[dict[str, Any]]:
    """Every peak this process measured: device, threads, matmul size, dtype, GFLOP/s."""
    return [dict(record) for record in _measured.values()]


def _write_record() -> None:
    path = os.environ.get(PEAK_RECORD_ENV)
    if path:
        atomic_write_json(path, measured_peaks())


def read_peak_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The peaks a process wrote to ``path`` (``$VITSTUDY_PEAK_RECORD``); empty when it timed nothing."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return []
