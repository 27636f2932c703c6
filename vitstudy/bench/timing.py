"""Timing one callable: warm-up, synchronisation, the spread of repeated runs, and throughput rows.

Every measurement is a flat dict (one results row, like timm's ``benchmark.py``) that carries the
environment and the resolved timing settings. Numbers stay numbers: on a device that is not present
(e.g. ``"cuda"`` on a CPU-only machine) every measured number is NaN and the row's ``note`` says
:data:`NOT_MEASURED_NO_CUDA`, so notebooks and sweeps run anywhere and never show a made-up figure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .environment import NOT_MEASURED_NO_CUDA, device_available, environment_info, synchronize

# Keys of time_callable's result; listed once so the not-measured row has exactly the same keys.
_TIMING_KEYS = (
    "seconds_median",
    "seconds_min",
    "seconds_max",
    "seconds_p25",
    "seconds_p75",
    "seconds_iqr",
    "runs",
)


@dataclass(frozen=True)
class TimingSettings:
    """How many untimed and timed calls one measurement makes."""

    # First calls pay for lazy init, allocator growth and kernel selection (cuDNN/oneDNN); 3 covers them.
    warmup: int = 3
    # The median of 10 runs is stable to a few percent for ms-scale calls and keeps sweeps quick.
    runs: int = 10
    # 0 means exactly `runs` runs; raise it for sub-ms calls, where timer and launch noise dominate.
    min_run_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.min_run_seconds < 0:
            raise ValueError(f"min_run_seconds must be >= 0, got {self.min_run_seconds}")


def _settings_row(settings: TimingSettings) -> dict[str, Any]:
    # Prefixed so the requested `runs` does not clash with the `runs` actually timed.
    return {f"timing_{k}": v for k, v in dataclasses.asdict(settings).items()}


def time_callable(
    fn: Callable[[], Any],
    device: str | torch.device = "cpu",
    settings: TimingSettings = TimingSettings(),
) -> dict[str, Any]:
    """Call `fn` `settings.warmup` times untimed, then time each further call; seconds per call."""
    device = torch.device(device)
    if not device_available(device):
        return {**dict.fromkeys(_TIMING_KEYS, math.nan), "note": NOT_MEASURED_NO_CUDA}
    for _ in range(settings.warmup):
        fn()
    seconds: list[float] = []
    while len(seconds) < settings.runs or sum(seconds) < settings.min_run_seconds:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return {**timing_spread(seconds), "note": ""}


def timing_spread(seconds: Sequence[float]) -> dict[str, float]:
    """The package's one convention for the spread of repeated timings: median, min, max, quartiles
    (numpy's linear interpolation), interquartile range and the count."""
    values = np.asarray(seconds, dtype=np.float64)
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {
        "seconds_median": float(p50),
        "seconds_min": float(values.min()),
        "seconds_max": float(values.max()),
        "seconds_p25": float(p25),
        "seconds_p75": float(p75),
        "seconds_iqr": float(p75 - p25),
        "runs": len(values),
    }


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: str | torch.device = "cpu",
    settings: TimingSettings = TimingSettings(),
) -> dict[str, list[float]]:
    """Seconds of each call of several callables, timed round-robin: one call of each per round.

    For comparing variants of one model: timed one after the other, a slow spell of a shared machine lands on
    one variant and passes for a speed difference; interleaved, it slows them alike. ``settings.warmup``
    untimed rounds come first, then ``settings.runs`` timed rounds. The device must be present.
    """
    device = torch.device(device)
    for _ in range(settings.warmup):
        for fn in fns.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(settings.runs):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _throughput_row(
    mode: str,
    batch_size: int,
    input_size: tuple[int, int, int],
    device: torch.device,
    settings: TimingSettings,
    timing: dict[str, Any],
) -> dict[str, Any]:
    """One results row; images/s fields are NaN whenever timing is (the ``note`` says why)."""
    # The fastest run gives the highest throughput, so min/max swap here.
    speed = {
        "images_per_s": batch_size / timing["seconds_median"],
        "images_per_s_min": batch_size / timing["seconds_max"],
        "images_per_s_max": batch_size / timing["seconds_min"],
    }
    return {
        "mode": mode,
        **speed,
        "batch_size": batch_size,
        "input_size": "x".join(str(s) for s in input_size),
        **timing,
        **_settings_row(settings),
        **environment_info(device),
    }


def _check_batch(batch_size: int, input_size: tuple[int, int, int]) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size}")


def measure_inference(
    model: nn.Module,
    batch_size: int,
    input_size: tuple[int, int, int],
    device: str | torch.device = "cpu",
    settings: TimingSettings = TimingSettings(),
    inputs: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Inference throughput (images/s, median over runs) of `model` in eval mode.

    Moves `model` to `device`; its train/eval mode is restored afterwards. Without `inputs`, a
    random float32 batch `[batch_size, *input_size]` is used.
    """
    _check_batch(batch_size, input_size)
    device = torch.device(device)
    if inputs is not None and tuple(inputs.shape) != (batch_size, *input_size):
        raise ValueError(f"inputs shape {tuple(inputs.shape)} != (batch_size, *input_size) {(batch_size, *input_size)}")
    if not device_available(device):
        timing = time_callable(lambda: None, device, settings)
        return _throughput_row("inference", batch_size, input_size, device, settings, timing)

    was_training = model.training
    model.to(device).eval()
    x = torch.randn(batch_size, *input_size, device=device) if inputs is None else inputs.to(device)
    try:
        with torch.inference_mode():
            timing = time_callable(lambda: model(x), device, settings)
    finally:
        model.train(was_training)
    return _throughput_row("inference", batch_size, input_size, device, settings, timing)


def measure_train_step(
    model: nn.Module,
    batch_size: int,
    input_size: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
    settings: TimingSettings = TimingSettings(),
    optimizer_factory: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> dict[str, Any]:
    """Training throughput (images/s) of forward + cross-entropy + backward + optimizer step.

    This trains the model it is given (weights change, it moves to `device`); pass a
    ``copy.deepcopy`` to keep the original. `optimizer_factory` maps parameters to an optimizer
    (default AdamW, the usual ViT optimizer, so its per-step cost is included).
    """
    _check_batch(batch_size, input_size)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    device = torch.device(device)
    if device_available(device):
        was_training = model.training
        step = make_train_step(model, batch_size, input_size, num_classes, device, optimizer_factory)
        try:
            timing = time_callable(step, device, settings)
        finally:
            model.train(was_training)
    else:
        timing = time_callable(lambda: None, device, settings)  # the not-measured row, same keys
    return {
        **_throughput_row("train", batch_size, input_size, device, settings, timing),
        "num_classes": num_classes,
    }


def make_train_step(
    model: nn.Module,
    batch_size: int,
    input_size: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
    optimizer_factory: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> Callable[[], None]:
    """The step ``measure_train_step`` times: forward, cross-entropy, backward, optimizer step (model in train mode).

    Exposed so that studies timing several models in turn (one step each) time exactly the same work.
    """
    model.to(device).train()
    optimizer = (optimizer_factory or torch.optim.AdamW)(model.parameters())
    # Fixed random data: the step's cost does not depend on the values, and no loader time is timed.
    x = torch.randn(batch_size, *input_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        # Freed at the end, not the start: when arms are timed in turn, no arm holds gradients while another runs.
        optimizer.zero_grad(set_to_none=True)

    return step


def batch_size_sweep(measure: Callable[[int], dict[str, Any]], batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One results row per batch size: ``batch_size_sweep(lambda b: measure_inference(m, b, s), [1, 8])``."""
    return [measure(batch_size) for batch_size in batch_sizes]


def format_measurement(value: float, digits: int = 1) -> str:
    """Table cell text: a number with `digits` decimals, or "not measured" for NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "not measured"
    return f"{value:.{digits}f}"
