"""The per-image latency timer: every image alone through every arm, the arms alternating image by image.

:func:`~vitstudy.bench.comparison.compare` times one fixed call for a fixed time and reports a median over rounds:
right for throughput, blind to what latency at batch 1 is about, the spread over images (an image that leaves an
early-exit model after block 3 and one that runs all 12 blocks differ about four-fold). Here each (image, arm) is
one timed call, so a table gives the mean, median, p90 and p99 per image and ratios paired by image, with the
conventions of ``compare``:

- the arms run in ``abba`` order image by image (:func:`~vitstudy.bench.comparison.round_orders`: A B C for image
  0, C B A for image 1, ...), so drift lands on every arm alike and no arm always runs right after another;
- the first ``warmup_images`` images go through every arm untimed first (lazy init, allocator growth);
- one call is timed by the standard library's ``timeit.Timer`` (the garbage collector off while it runs, the
  clock injectable for tests), the device synchronised inside the timed statement;
- a speed-up is the ratio of the baseline's mean (or median) time to the arm's, with a 95% percentile bootstrap
  interval over images (:func:`~vitstudy.bench.stats.paired_ratio_interval`: an image's two times are resampled
  together);
- the A/A control (a deep copy of the baseline, timed the same way) must read 1.00 ± 3%; verdicts are
  :mod:`.rows`' vocabulary; the raw per-image times are kept (:func:`raw_latencies`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import timeit
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import check
from ..formatting import NOT_MEASURED
from .comparison import control_note, round_orders
from .environment import NOT_MEASURED_NO_CUDA, device_available, environment_info, synchronize
from .flops import BaselineWork
from .peak import machine_peak
from .rows import (
    BASELINE_VERDICT,
    CONTROL_BAND,
    achieved_rate,
    control_verdict,
    flop_bound_verdict,
    inference_models,
)
from .stats import RESAMPLES, paired_ratio_interval

LATENCY_ORDER = "abba"  # by image
LATENCY_RAW_COLUMNS = ("image", "arm", "position", "seconds")
LATENCY_PERCENTILES = (90, 99)


@dataclass
class LatencyRun:
    """Raw per-image times of every arm, and how they were taken."""

    raw: pd.DataFrame  # one row per timed call: image, arm, position (in that image's order), seconds
    arms: tuple[str, ...]
    baseline: str
    control: str
    warmup_images: int
    environment: dict[str, Any]  # with the machine's fp32 peak, measured in this process (bench.machine_peak)
    note: str = ""  # set when the device is absent: then every number is NaN
    work: BaselineWork | None = None  # the baseline's FLOPs per image: its achieved GFLOP/s in every row

    def seconds(self) -> pd.DataFrame:
        """Seconds of each image (rows) in each arm (columns, in the arms' order)."""
        if self.raw.empty:
            return pd.DataFrame(columns=list(self.arms), dtype=float)
        return self.raw.pivot(index="image", columns="arm", values="seconds")[list(self.arms)]

    def protocol(self) -> dict[str, Any]:
        """How the run was timed, for every row of its table."""
        env = self.environment
        return {
            "device": f"{env['device_type']}: {env['device_name']}",
            "threads": env["cpu_threads"],
            "timed_images": self.raw["image"].nunique() if not self.raw.empty else 0,
            "warmup_images": self.warmup_images,
            "order": f"{LATENCY_ORDER} by image",
            "torch": env["torch"],
            "timm": env["timm"],
        }


def time_per_image(
    arms: Mapping[str, Callable[[torch.Tensor], Any]],
    images: torch.Tensor,
    baseline: str,
    control: str,
    warmup_images: int = 10,
    device: str | torch.device = "cpu",
    timer: Callable[[], float] | None = None,
) -> LatencyRun:
    """Time every arm on every image of ``images`` ``[N, C, H, W]`` alone (a batch of one); see the module docstring.

    ``arms`` maps a name to a callable taking one image ``[1, C, H, W]``; ``timer`` replaces the clock (tests).
    """
    check(baseline in arms, "baseline", baseline, f"one of the arms {list(arms)}")
    check(control in arms and control != baseline, "control", control, f"another of the arms {list(arms)}")
    check(warmup_images >= 0, "warmup_images", warmup_images, "an integer >= 0")
    check(images.ndim == 4 and len(images) >= 1, "images", tuple(images.shape), "a batch [N, C, H, W] with N >= 1")
    device = torch.device(device)
    names = tuple(arms)
    env = environment_info(device)
    # As compare does: the peak at the timed thread count, before the arms (NaN with a test clock)
    env["peak_fp32_gflop_per_s"] = machine_peak(device)["fp32"] if timer is None else math.nan
    if not device_available(device):
        empty = pd.DataFrame(columns=list(LATENCY_RAW_COLUMNS))
        return LatencyRun(empty, names, baseline, control, warmup_images, env, note=NOT_MEASURED_NO_CUDA)
    # One namespace per arm: the timed statement reads the current image from it, so one Timer serves every image.
    spaces = {name: {"fn": arms[name], "x": None, "sync": lambda: synchronize(device)} for name in names}
    timers = {
        name: timeit.Timer("fn(x); sync()", timer=timer or time.perf_counter, globals=spaces[name]) for name in names
    }
    orders = round_orders(list(names), len(images), LATENCY_ORDER)

    def call(index: int, name: str) -> float:
        spaces[name]["x"] = images[index : index + 1]
        return timers[name].timeit(number=1)

    for index in range(min(warmup_images, len(images))):
        for name in orders[index]:
            call(index, name)  # untimed: discarded
    records = [
        {"image": index, "arm": name, "position": position, "seconds": call(index, name)}
        for index, order in enumerate(orders)
        for position, name in enumerate(order)
    ]
    raw = pd.DataFrame(records, columns=list(LATENCY_RAW_COLUMNS))
    return LatencyRun(raw, names, baseline, control, warmup_images, env)


def time_models_per_image(
    models: Mapping[str, torch.nn.Module],
    images: torch.Tensor,
    warmup_images: int = 10,
    device: str | torch.device = "cpu",
    timer: Callable[[], float] | None = None,
    baseline: str = "plain",
) -> LatencyRun:
    """:func:`time_per_image` of inference forwards, as :func:`.rows.compare_models` times batches: a deep copy of
    ``models[baseline]`` (:func:`.rows.control_arm`) is added as the A/A control; eval mode,
    ``torch.inference_mode``; the models go back to the CPU afterwards."""
    check(baseline in models, "models", list(models), f"a mapping with a {baseline!r} entry (the baseline)")
    device = torch.device(device)
    with inference_models(models, images, baseline, device) as (models, control, x, work):
        run = time_per_image(models, x, baseline, control, warmup_images, device, timer)
    return dataclasses.replace(run, work=work)


def latency_rows(
    run: LatencyRun,
    ideals: Mapping[str, float],
    targets: Mapping[str, tuple[float, float]],
    resamples: int = RESAMPLES,
) -> pd.DataFrame:
    """One row per arm: mean, median, p90, p99 ms per image; the speed-up of means (``speedup``) and of medians
    over the baseline, each with its paired 95% interval; the FLOP ideal (``ideals[arm]``, 1 where absent), the
    speed-up of means over it and a verdict in :mod:`.rows`' vocabulary (``targets[arm]``, else
    :data:`.rows.CONTROL_BAND`); on every row, the baseline's achieved GFLOP/s and its share of the fp32 peak
    (:data:`.rows.MACHINE_USE_COLUMNS`)."""
    per_image = run.seconds()
    base = per_image[run.baseline].to_numpy(dtype=np.float64)
    mean_base = float(base.mean()) if len(base) else math.nan
    use = achieved_rate(mean_base, 1, run.work, float(run.environment.get("peak_fp32_gflop_per_s", math.nan)))
    rows = []
    for arm in run.arms:
        times = per_image[arm].to_numpy(dtype=np.float64)
        row: dict[str, Any] = {"arm": arm, "images": len(times)}
        row |= {f"{name}_ms": 1e3 * value for name, value in _spread(times).items()}
        for prefix, statistic in (("speedup", np.mean), ("speedup_of_medians", np.median)):
            mid, low, high = paired_ratio_interval(base, times, statistic, resamples)
            row |= {prefix: mid, f"{prefix}_low": low, f"{prefix}_high": high}
        ideal = float(ideals.get(arm, 1.0))
        over = {f"measured_over_ideal{end}": row[f"speedup{end}"] / ideal for end in ("", "_low", "_high")}
        row |= {"ideal_speedup": ideal, **over}
        if math.isnan(row["speedup"]):
            row["verdict"] = NOT_MEASURED
        elif arm == run.baseline:
            row["verdict"] = BASELINE_VERDICT
        elif arm == run.control:
            row["verdict"] = control_verdict(row["speedup"], row["speedup_low"], row["speedup_high"])
        else:
            interval = (over["measured_over_ideal_low"], over["measured_over_ideal_high"])
            row["verdict"] = flop_bound_verdict(
                over["measured_over_ideal"], targets.get(arm, CONTROL_BAND), interval=interval
            )
        rows.append(row | use)
    return pd.DataFrame(rows).assign(**run.protocol(), note=run.note or control_note(*_control(rows, run)))


def _spread(times: np.ndarray) -> dict[str, float]:
    if len(times) == 0:
        return dict.fromkeys(("mean", "median", *(f"p{q}" for q in LATENCY_PERCENTILES)), math.nan)
    return {
        "mean": float(times.mean()),
        "median": float(np.median(times)),
        **{f"p{q}": float(np.percentile(times, q)) for q in LATENCY_PERCENTILES},
    }


def _control(rows: list[dict[str, Any]], run: LatencyRun) -> tuple[float, float, float]:
    """The A/A control's speed-up and its interval."""
    row = next(row for row in rows if row["arm"] == run.control)
    return row["speedup"], row["speedup_low"], row["speedup_high"]


def raw_latencies(run: LatencyRun, **labels: Any) -> pd.DataFrame:
    """The run's per-image times with its protocol and ``labels`` as columns (for ``report.save_raw``)."""
    return run.raw.assign(**run.protocol(), **labels)
