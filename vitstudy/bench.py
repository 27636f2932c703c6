"""Timing and FLOP counting for ViT speed studies, shared by both methods.

Every measurement is a flat dict (one results row, like timm's ``benchmark.py``) that carries the
environment and the resolved timing settings. Numbers stay numbers: on a device that is not present
(e.g. ``"cuda"`` on a CPU-only machine) every measured number is NaN and the row's ``note`` says
:data:`NOT_MEASURED_NO_CUDA`, so notebooks and sweeps run anywhere and never show a made-up figure.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

NOT_MEASURED_NO_CUDA = "not measured (no CUDA device)"  # the `note` of a row whose device is absent

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


def device_available(device: str | torch.device) -> bool:
    """Whether `device` exists on this machine (CPU always does)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return device.index is None or device.index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return False


def default_device() -> str:
    """``"cuda"`` when a CUDA device is present, else ``"cpu"``: where the study computes by default."""
    return "cuda" if device_available("cuda") else "cpu"


def _cpu_name() -> str:
    # platform.processor() is often empty or just "x86_64" on Linux; /proc/cpuinfo names the model.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Flat description of the device and software a measurement ran on (no host or user names)."""
    device = torch.device(device)
    if not device_available(device):
        device_name = "not available"
    elif device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        device_name = _cpu_name()
    else:
        device_name = device.type
    return {
        "device_type": device.type,
        "device_name": device_name,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "timm": timm.__version__,
        "cuda_runtime": torch.version.cuda or "none",
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _synchronize(device: torch.device) -> None:
    # Kernels launch asynchronously; without a sync the clock measures launch time, not run time.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
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
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
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
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def batch_size_sweep(measure: Callable[[int], dict[str, Any]], batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One results row per batch size: ``batch_size_sweep(lambda b: measure_inference(m, b, s), [1, 8])``."""
    return [measure(batch_size) for batch_size in batch_sizes]


def flops_per_image(
    model: nn.Module,
    input_size: tuple[int, int, int],
    device: str | torch.device = "cpu",
) -> float:
    """Forward FLOPs for one image (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode.

    Counts matmuls, convolutions and attention; elementwise ops (norms, GELU, softmax, bias adds)
    count zero, as in torch's counter. FLOPs are arithmetic, not a measurement, so on an absent
    device the count is taken on CPU. The model is counted on a deep copy and is not modified.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size}")
    device = torch.device(device) if device_available(device) else torch.device("cpu")
    # A copy, so counting neither moves the caller's model nor changes its train/eval mode.
    counted = copy.deepcopy(model).to(device).eval()
    return count_flops(counted, torch.randn(1, *input_size, device=device))


def count_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of one call ``fn(*args)`` (multiply-add = 2), counted by torch's FlopCounterMode without grad.

    In torch 2.15 FlopCounterMode counts F.scaled_dot_product_attention on CPU too
    (aten._scaled_dot_product_flash_attention_for_cpu has a formula), so timm's fused attention
    needs no correction here; tests/test_bench.py checks a total against a hand count.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())


def format_measurement(value: float, digits: int = 1) -> str:
    """Table cell text: a number with `digits` decimals, or "not measured" for NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "not measured"
    return f"{value:.{digits}f}"
