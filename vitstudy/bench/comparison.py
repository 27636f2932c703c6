"""The comparison engine: several arms (a baseline, its faster variants, an A/A copy) timed against each other.

Every timed table of the study goes through :func:`compare`:

- arms run in a balanced order: ``abba`` reverses the order every round (A B C, C B A, ...), so drift over a
  round (a warming CPU, a background process starting) lands on every arm alike; ``random`` shuffles per round;
- each arm is timed for a fixed minimum time per round by ``torch.utils.benchmark.Timer.blocked_autorange``
  (its own block sizing, CUDA synchronisation and thread setting), after untimed warm-up calls; its untimed
  block-sizing call also serves as a per-round warm-up, so no arm's timed calls pay for the switch from the previous
  arm (caches, allocator) — for a step longer than ``min_run_time`` that doubles the calls, a price worth the bias
  it removes;
- between arms the garbage collector runs, so one arm's freed tensors are not paid for by the next;
- a result per arm is the median over rounds of the per-round paired ratio (baseline time / arm time) with a
  95% bootstrap interval over rounds; the raw per-call times are kept (:attr:`Comparison.raw`) for a CSV;
- an A/A control (the baseline against an identical copy of itself) shows the protocol's own bias: it must read
  1.00 within ±3%, else the table's ``note`` says so (:func:`control_note`);
- ``isolation="process"`` times every (round, arm) in its own short-lived process, forked from a server that has
  imported torch once (``forkserver``): no arm's allocator state, caches or live gradients reach another arm's
  time. Arms are then given as :class:`ArmSpec` (a module-level factory and its arguments), which the child builds,
  warms up and times; the same specs run in one process with ``isolation="in_process"``.

Rows and verdicts built from a :class:`Comparison` live in :mod:`vitstudy.bench.rows`.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..config import check, check_choice
from ..verdicts import CONTROL_TOLERANCE
from .environment import NOT_MEASURED_NO_CUDA, device_available, environment_info
from .flops import BaselineWork
from .peak import PEAK_DTYPES, machine_peak, peak_size
from .stats import median_interval

ORDERS = ("abba", "random")
ISOLATIONS = ("in_process", "process")


@dataclass(frozen=True)
class CompareSettings:
    """How hard :func:`compare` times. Non-obvious defaults carry their reason."""

    rounds: int = 7  # paired rounds; 7 gives a bootstrap interval that is not just the extreme rounds
    min_run_time: float = 0.4  # seconds each arm is timed per round; blocked_autorange fits the calls in
    warmup_calls: int = 2  # untimed calls per arm before round 1: lazy init, allocator growth, kernel choice
    threads: int | None = None  # torch CPU threads while timing; None: the current setting (recorded)
    order: str = "abba"
    bootstrap: int = 2000  # resamples for the 95% interval of the median ratio
    seed: int = 0  # for the random order and the bootstrap
    # "process": each (round, arm) in its own process (the A/A control decides when in-process timing is biased);
    # its warm-up calls are then paid in every round, so it costs roughly (warmup_calls + 2) calls per arm and round.
    isolation: str = "in_process"
    # The machine's peak (.peak) is a square matmul of this size; None: the device's default (2048 on a CPU).
    peak_size: int | None = None

    def __post_init__(self) -> None:
        check(self.rounds >= 2, "rounds", self.rounds, "an integer >= 2 (a paired interval needs rounds)")
        check(self.min_run_time > 0, "min_run_time", self.min_run_time, "seconds > 0")
        check(self.warmup_calls >= 0, "warmup_calls", self.warmup_calls, "an integer >= 0")
        check(self.threads is None or self.threads >= 1, "threads", self.threads, "None or an integer >= 1")
        check_choice("order", self.order, ORDERS)
        check(self.bootstrap >= 100, "bootstrap", self.bootstrap, "an integer >= 100")
        check_choice("isolation", self.isolation, ISOLATIONS)
        check(self.peak_size is None or self.peak_size >= 16, "peak_size", self.peak_size, "None or an integer >= 16")


# The timing of every experiment's smoke budget (CI): seconds, numbers meaningless.
SMOKE_TIMING = CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=1, bootstrap=200, peak_size=256)
PEAK_MIN_RUN_TIME = 0.5  # seconds the peak's matmul is timed per dtype at most (less when the arms are timed less)


@dataclass(frozen=True)
class ArmSpec:
    """An arm another process can rebuild: ``factory(**kwargs)`` returns the no-argument callable to time.

    ``factory`` must be a module-level function (it is pickled by name) and ``kwargs`` picklable values.
    """

    factory: Callable[..., Callable[[], Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Callable[[], Any]:
        return self.factory(**self.kwargs)


def calibration_arm(iterations: int) -> Callable[[], int]:
    """A pure-Python busy loop of known cost (``iterations`` additions): arms of known ratio for engine checks."""
    return lambda: sum(range(iterations))


def round_orders(arms: Sequence[str], rounds: int, order: str = "abba", seed: int = 0) -> list[list[str]]:
    """The order of the arms in each round: ``abba`` alternates forward and reversed; ``random`` shuffles."""
    check_choice("order", order, ORDERS)
    if order == "abba":
        return [list(arms) if r % 2 == 0 else list(reversed(arms)) for r in range(rounds)]
    rng = random.Random(seed)
    return [rng.sample(list(arms), len(arms)) for _ in range(rounds)]


@dataclass
class Comparison:
    """Raw times of every arm in every round, and the paired ratios derived from them."""

    raw: pd.DataFrame  # one row per timed block: arm, round, position, seconds_per_call, calls
    baseline: str
    control: str | None
    settings: CompareSettings
    environment: dict[str, Any]  # environment_info, the timed threads and the machine's peak (peak_*_gflop_per_s)
    note: str = ""  # set when the device is absent: then every number is NaN
    work: BaselineWork | None = None  # what one image of the baseline arm costs in FLOPs; None: not counted

    def round_seconds(self) -> pd.DataFrame:
        """Seconds per call of each arm in each round (median over the round's blocks): rounds × arms."""
        if self.raw.empty:
            return pd.DataFrame()
        return self.raw.groupby(["round", "arm"], sort=False)["seconds_per_call"].median().unstack("arm")

    def speedup(self, arm: str, over: str | None = None) -> dict[str, float]:
        """Median over rounds of (``over`` time / arm time) with its 95% interval, and the arm's median seconds;
        ``over`` defaults to the baseline (a bf16 arm over its fp32 twin names the twin)."""
        per_round = self.round_seconds()
        if per_round.empty:
            return dict.fromkeys(("seconds", "speedup", "speedup_low", "speedup_high"), math.nan)
        ratios = (per_round[over or self.baseline] / per_round[arm]).to_numpy()
        mid, low, high = median_interval(ratios, self.settings.bootstrap, self.settings.seed)
        return {"seconds": float(per_round[arm].median()), "speedup": mid, "speedup_low": low, "speedup_high": high}

    def rows(self) -> pd.DataFrame:
        """One row per arm: median seconds per call, speed-up over the baseline with its interval, the protocol."""
        arms = list(dict.fromkeys(self.raw["arm"])) if not self.raw.empty else []
        rows = [{"arm": arm, **self.speedup(arm)} for arm in arms]
        frame = pd.DataFrame(rows)
        frame["rounds"] = self.settings.rounds
        frame["min_run_time_s"] = self.settings.min_run_time
        frame["order"] = self.settings.order
        frame["isolation"] = self.settings.isolation
        frame["threads"] = self.environment["cpu_threads"]
        frame["device"] = f"{self.environment['device_type']}: {self.environment['device_name']}"
        frame["torch"] = self.environment["torch"]
        return frame

    @property
    def control_speedup(self) -> float:
        return self.speedup(self.control)["speedup"] if self.control else math.nan

    def control_note(self) -> str:
        """Empty when the A/A control reads 1.00 ± 3%; else a sentence for the table's ``note``."""
        return control_note(self.control_speedup) if self.control else "no A/A control in this comparison"


def control_note(control_speedup: float) -> str:
    """The table note for an A/A control reading: empty inside 1.00 ± 3%, else why the table is suspect."""
    if math.isnan(control_speedup):
        return "A/A control not measured"
    if abs(control_speedup - 1) <= CONTROL_TOLERANCE:
        return ""
    return (
        f"A/A control read {control_speedup:.3f} (outside 1.00 ± {CONTROL_TOLERANCE:.0%}): the protocol is biased "
        "or the machine was disturbed on this run; speed-ups in this table are not trustworthy"
    )


def settings_peak(device: str | torch.device, threads: int, settings: CompareSettings) -> dict[str, float]:
    """The machine's peak (:func:`.peak.machine_peak`) as :func:`compare` measures it with ``settings``: their
    matmul size, timed at most :data:`PEAK_MIN_RUN_TIME` per dtype (less when the arms are timed less); cached."""
    return machine_peak(device, threads, settings.peak_size, min(settings.min_run_time, PEAK_MIN_RUN_TIME))


def compare(
    arms: Mapping[str, Callable[[], Any] | ArmSpec],
    baseline: str,
    control: str | None = None,
    settings: CompareSettings = CompareSettings(),
    device: str | torch.device = "cpu",
    timer: Callable[[], float] | None = None,
    work: BaselineWork | None = None,
) -> Comparison:
    """Time every arm in balanced order over ``settings.rounds`` rounds; see the module docstring.

    ``arms`` maps a name to a no-argument callable (one forward, one training step…) or an :class:`ArmSpec` that
    builds one (required for ``settings.isolation="process"``); ``baseline`` names the arm
    every ratio divides; ``control`` names an arm that is an identical copy of the baseline (the A/A control).
    ``timer`` replaces the clock (tests); the default is ``torch.utils.benchmark``'s, which syncs CUDA.
    ``work`` (the baseline's FLOPs per image) turns its images/s into FLOP/s; the machine's peak
    (:func:`.peak.machine_peak`, once per process) is measured here, at the timed thread count, before the arms,
    into ``environment`` (NaN with a test clock: fake seconds have no peak).
    """
    check(baseline in arms, "baseline", baseline, f"one of the arms {list(arms)}")
    check(control is None or control in arms, "control", control, f"None or one of the arms {list(arms)}")
    device = torch.device(device)
    env = environment_info(device)
    threads = settings.threads or torch.get_num_threads()
    peak = settings_peak(device, threads, settings) if timer is None else dict.fromkeys(PEAK_DTYPES, math.nan)
    env |= {f"peak_{dtype}_gflop_per_s": value for dtype, value in peak.items()}
    env["peak_matmul_size"] = peak_size(device, settings.peak_size)
    if not device_available(device):
        return Comparison(pd.DataFrame(), baseline, control, settings, env, note=NOT_MEASURED_NO_CUDA, work=work)
    env["cpu_threads"] = threads
    env["isolation"] = settings.isolation
    orders = round_orders(list(arms), settings.rounds, settings.order, settings.seed)
    if settings.isolation == "process":
        records = _time_in_processes(arms, orders, settings, threads, timer)
        return Comparison(pd.DataFrame(records), baseline, control, settings, env, work=work)
    arms = {name: arm.build() if isinstance(arm, ArmSpec) else arm for name, arm in arms.items()}
    for fn in arms.values():
        for _ in range(settings.warmup_calls):
            fn()
    records = []
    # Everything alive now (modules, models, inputs) lives through the whole comparison: frozen, it is left out of
    # the collections between blocks, which then scan only what the arms allocated (a full scan of a process that
    # imported torch takes a fifth of a second, and there is one per arm and round).
    gc.collect()
    gc.freeze()
    try:
        for round_index, names in enumerate(orders):
            for position, name in enumerate(names):
                gc.collect()  # the previous arm's freed tensors are released here, not inside the next arm's time
                times, number = _blocked_times(arms[name], settings.min_run_time, threads, timer)
                records += _records(name, round_index, position, times, number)
    finally:
        gc.unfreeze()
    return Comparison(pd.DataFrame(records), baseline, control, settings, env, work=work)


def _records(name: str, round_index: int, position: int, times: Sequence[float], number: int) -> list[dict]:
    return [
        {
            "arm": name,
            "round": round_index,
            "position": position,
            "block": block,
            "seconds_per_call": seconds,
            "calls": number,
        }
        for block, seconds in enumerate(times)
    ]


def _blocked_times(
    fn: Callable[[], Any], min_run_time: float, threads: int, timer: Callable[[], float] | None
) -> tuple[list[float], int]:
    """Seconds per call of each timed block, and calls per block (``Timer.blocked_autorange``)."""
    # Imported here: torch.utils.benchmark loads torch's C++-extension helper, which logs a CUDA-toolkit warning on
    # machines without a GPU; at module level that line would precede the command line's one-line errors.
    from torch.utils.benchmark import Timer

    extra = {} if timer is None else {"timer": timer}
    result = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, **extra).blocked_autorange(
        min_run_time=min_run_time
    )
    return list(result.times), result.number_per_run


def _time_arm_in_child(spec: ArmSpec, warmup_calls: int, min_run_time: float, threads: int) -> tuple[list, int]:
    """Runs in a fresh process: build the arm, warm it up, time it."""
    torch.set_num_threads(threads)
    fn = spec.build()
    for _ in range(warmup_calls):
        fn()
    return _blocked_times(fn, min_run_time, threads, None)


def _time_in_processes(
    arms: Mapping[str, Any],
    orders: list[list[str]],
    settings: CompareSettings,
    threads: int,
    timer: Callable[[], float] | None,
) -> list[dict]:
    """Every (round, arm) in a new process forked from a forkserver that imported torch and the arms' modules."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    not_specs = [name for name, arm in arms.items() if not isinstance(arm, ArmSpec)]
    check(not not_specs, "arms", not_specs, "ArmSpec values (a module-level factory) for isolation='process'")
    check(timer is None, "timer", timer, "None for isolation='process' (each child uses the real clock)")
    context = multiprocessing.get_context("forkserver")
    # Imported once by the fork server, so a child starts in a fraction of a second instead of re-importing torch.
    # torch.utils.benchmark too: its import logs a CUDA-toolkit warning, once there rather than once per child.
    arm_modules = sorted({arm.factory.__module__ for arm in arms.values()})
    context.set_forkserver_preload(["torch", "torch.utils.benchmark", "timm", *arm_modules])
    records = []
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        for round_index, names in enumerate(orders):
            for position, name in enumerate(names):
                future = pool.submit(
                    _time_arm_in_child, arms[name], settings.warmup_calls, settings.min_run_time, threads
                )
                times, number = future.result()
                records += _records(name, round_index, position, times, number)
    return records
