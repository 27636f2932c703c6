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
- rounds stop when the answer is known: after every whole round from ``min_rounds`` on, each arm's interval is
  checked against its band (:func:`arm_band`: the A/A control's is 1.00 ± 3%, another arm's by default its own
  ratio ± 3%, ``CompareSettings.band``), and timing stops once every interval lies inside its band, or at the cap
  of ``rounds`` rounds, which the table's note then names (:meth:`Comparison.rounds_note`). A round is never cut:
  every arm runs once in each, so the order is a prefix of the capped order, and the intervals reported are the
  ones the rule checked;
- an A/A control (the baseline against an identical copy of itself) shows the protocol's own bias: it must read
  1.00 within ±3%, else the table's ``note`` says so (:func:`control_note`);
- ``isolation="process"`` gives every arm its own long-lived worker process, forked from a server that has
  imported torch once (``forkserver``): each builds its arm once from an :class:`ArmSpec` (a module-level factory
  and its arguments), warms it up once, then times one round whenever the engine asks (a message on a pipe), so
  the rounds alternate between processes as they alternate between arms in one. No arm's allocator state, caches
  or live gradients reach another arm's time: they live in another address space, so the A/A control still
  measures what it did (the baseline and its copy differ only in which process runs them, and the order balances
  what the processes share: the cores, the memory bandwidth, the clock). Each process is stopped at the end and on
  any error. Every arm is alive at once, one per process (on a GPU, a context each): when that does not fit in
  memory, ``isolation="process_per_round"`` times every (round, arm) in its own short-lived process instead, one
  arm alive at a time, for a process start and a build per round and arm. The same specs run in one process with
  ``isolation="in_process"``.

Rows and verdicts built from a :class:`Comparison` live in :mod:`vitstudy.bench.rows`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..config import check, check_choice
from ..verdicts import CONTROL_TOLERANCE
from .environment import NOT_MEASURED_NO_CUDA, device_available, environment_info
from .flops import BaselineWork
from .peak import PEAK_DTYPES, machine_peak, peak_size
from .stats import interval_inside, median_interval
from .timer import Timer

ORDERS = ("abba", "random")
ISOLATIONS = ("in_process", "process", "process_per_round")
# The default band of an arm other than the A/A control: its interval inside its own ratio ± 3%, the control's
# tolerance, so a speed-up is known as precisely as the protocol's bias allows.
INTERVAL_HALF_WIDTH = 0.03
# An arm's band on its speed-up over the baseline, (low, high), from its name; None: the default rule for that arm.
ArmBand = Callable[[str], "tuple[float, float] | None"]


@dataclass(frozen=True)
class CompareSettings:
    """How hard :func:`compare` times. Non-obvious defaults carry their reason."""

    # The cap on paired rounds; 7 gives a bootstrap interval that is not just the extreme rounds. Timing stops
    # earlier when every interval is inside its band (``band``).
    rounds: int = 7
    min_run_time: float = 0.4  # seconds each arm is timed per round; blocked_autorange fits the calls in
    warmup_calls: int = 2  # untimed calls per arm before round 1: lazy init, allocator growth, kernel choice
    threads: int | None = None  # torch CPU threads while timing; None: the current setting (recorded)
    order: str = "abba"
    bootstrap: int = 2000  # resamples for the 95% interval of the median ratio
    seed: int = 0  # for the random order and the bootstrap
    # "process": one long-lived process per arm (the A/A control decides when in-process timing is biased), every
    # arm alive at once; "process_per_round": each (round, arm) in its own process, one arm alive at a time, its
    # warm-up calls paid in every round (roughly (warmup_calls + 2) calls per arm and round).
    isolation: str = "in_process"
    # The machine's peak (.peak) is a square matmul of this size; None: the device's default (2048 on a CPU).
    peak_size: int | None = None
    # When the answer is known (:func:`arm_band`): a number w puts every arm but the A/A control inside its own
    # ratio ± w; a callable gives an arm's band (low, high) on its speed-up from its name, or None for the default
    # rule (a table judged by measured ÷ ideal inside a band passes that band times each arm's ideal, see
    # :func:`ideal_band`); None times every round up to the cap. The A/A control's band is always 1.00 ± 3%.
    band: float | ArmBand | None = INTERVAL_HALF_WIDTH
    # The fewest rounds before the band may stop the timing (at most ``rounds``): with 3, the median's bootstrap
    # interval is already the rounds' range, so a stop means three rounds agreed within the band.
    min_rounds: int = 3

    def __post_init__(self) -> None:
        check(self.rounds >= 2, "rounds", self.rounds, "an integer >= 2 (a paired interval needs rounds)")
        check(self.min_run_time > 0, "min_run_time", self.min_run_time, "seconds > 0")
        check(self.warmup_calls >= 0, "warmup_calls", self.warmup_calls, "an integer >= 0")
        check(self.threads is None or self.threads >= 1, "threads", self.threads, "None or an integer >= 1")
        check_choice("order", self.order, ORDERS)
        check(self.bootstrap >= 100, "bootstrap", self.bootstrap, "an integer >= 100")
        check_choice("isolation", self.isolation, ISOLATIONS)
        check(self.peak_size is None or self.peak_size >= 16, "peak_size", self.peak_size, "None or an integer >= 16")
        relative = isinstance(self.band, int | float) and not isinstance(self.band, bool) and 0 < self.band < 1
        check(
            self.band is None or relative or callable(self.band),
            "band",
            self.band,
            "a relative half-width in (0, 1), a callable giving an arm's (low, high), or None",
        )
        check(self.min_rounds >= 2, "min_rounds", self.min_rounds, "an integer >= 2 (a paired interval needs rounds)")

    @property
    def first_stop(self) -> int:
        """The first round count after which the band may stop the timing."""
        return min(self.min_rounds, self.rounds)


# The timing of every experiment's smoke budget (CI): seconds, numbers meaningless.
SMOKE_TIMING = CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=1, bootstrap=200, peak_size=256)
# Smoke runs whose arms are slow enough that SMOKE_TIMING's 0.01 s makes blocked_autorange time blocks of several
# calls (a model's forward on a batch, a training step): blocks of one call and no warm-up call.
SMOKE_ONE_CALL_TIMING = dataclasses.replace(SMOKE_TIMING, min_run_time=0.001, warmup_calls=0)
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


def probe_arm(record: str, seconds: float = 0.0, fail_on_call: int | None = None) -> Callable[[], None]:
    """An arm for checks of the process isolations: building it appends this process's pid to the file
    ``record``; each call sleeps ``seconds``; call number ``fail_on_call`` (1-based) raises ``RuntimeError``."""
    with open(record, "a") as log:
        log.write(f"{os.getpid()}\n")
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        if calls == fail_on_call:
            raise RuntimeError(f"probe arm failed on call {calls}, as asked")
        time.sleep(seconds)

    return call


def ideal_band(ideals: Mapping[str, float], within: tuple[float, float], arm: str) -> tuple[float, float] | None:
    """The band on ``arm``'s speed-up that puts its measured ÷ ideal inside ``within``: ``within`` times
    ``ideals[arm]``; None (the default rule) for an arm without an ideal. Bind the first two arguments with
    ``functools.partial`` for ``CompareSettings.band``."""
    ideal = ideals.get(arm)
    return None if ideal is None else (within[0] * ideal, within[1] * ideal)


def arm_band(settings: CompareSettings, arm: str, speedup: float, control: str | None) -> tuple[float, float]:
    """The band ``arm``'s speed-up interval must lie inside before the timing may stop: 1.00 ± 3% for the A/A
    control; else ``settings.band``'s for the arm when it is a callable that names one; else ``speedup`` ± the
    relative half-width (``settings.band``, or :data:`INTERVAL_HALF_WIDTH` when the band is not a number)."""
    if arm == control:
        return (1 - CONTROL_TOLERANCE, 1 + CONTROL_TOLERANCE)
    named = settings.band(arm) if callable(settings.band) else None
    if named is not None:
        return named
    half_width = settings.band if isinstance(settings.band, int | float) else INTERVAL_HALF_WIDTH
    return (speedup * (1 - half_width), speedup * (1 + half_width))


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
    # Whether the timing stopped with every interval inside its band: None when no band was asked for (every round
    # up to the cap ran) or nothing was timed; False when it hit the cap, and then ``outside_band`` says, per arm,
    # which interval was not inside which band.
    band_met: bool | None = None
    outside_band: dict[str, str] = field(default_factory=dict)

    @property
    def rounds_used(self) -> int:
        """The rounds actually timed (the cap, ``settings.rounds``, or fewer when the band stopped the timing)."""
        return int(self.raw["round"].nunique()) if not self.raw.empty else 0

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

    def arms_outside_band(self) -> dict[str, str]:
        """Every timed arm but the baseline whose speed-up interval is not inside its band (:func:`arm_band`), with
        ``"interval lo–hi wider than (or outside) its band lo–hi"``; empty when all are inside."""
        arms = list(dict.fromkeys(self.raw["arm"])) if not self.raw.empty else []
        outside = {}
        for arm in arms:
            if arm == self.baseline:
                continue
            speed = self.speedup(arm)
            low, high = speed["speedup_low"], speed["speedup_high"]
            band = arm_band(self.settings, arm, speed["speedup"], self.control)
            if not interval_inside(low, high, band):
                how = "wider than" if high - low > band[1] - band[0] else "outside"
                outside[arm] = f"interval {low:.3f}–{high:.3f} {how} its band {band[0]:.3f}–{band[1]:.3f}"
        return outside

    def rounds_note(self) -> str:
        """Empty unless the timing hit its cap with an interval not inside its band; then a sentence for the
        table's ``note`` naming the cap and each such arm (of those still in this comparison)."""
        if self.band_met is not False:
            return ""
        timed = set(self.raw["arm"]) if not self.raw.empty else set()
        arms = [f"{arm}: {text}" for arm, text in self.outside_band.items() if arm in timed]
        if not arms:
            return ""
        return f"hit the cap of {self.settings.rounds} rounds: interval wider than the band ({'; '.join(arms)})"

    def rows(self) -> pd.DataFrame:
        """One row per arm: median seconds per call, speed-up over the baseline with its interval, the protocol."""
        arms = list(dict.fromkeys(self.raw["arm"])) if not self.raw.empty else []
        rows = [{"arm": arm, **self.speedup(arm)} for arm in arms]
        frame = pd.DataFrame(rows)
        frame["rounds"] = self.rounds_used
        frame["rounds_cap"] = self.settings.rounds
        frame["rounds_note"] = self.rounds_note()
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
        """Empty when the A/A control's interval lies inside 1.00 ± 3%; else a sentence for the table's ``note``."""
        if not self.control:
            return "no A/A control in this comparison"
        speed = self.speedup(self.control)
        return control_note(speed["speedup"], speed["speedup_low"], speed["speedup_high"])


def control_note(control_speedup: float, low: float | None = None, high: float | None = None) -> str:
    """The table note for an A/A control reading: empty when it (and, given, its 95% interval) lies inside
    1.00 ± 3%, else why the table is suspect."""
    if math.isnan(control_speedup):
        return "A/A control not measured"
    inside = abs(control_speedup - 1) <= CONTROL_TOLERANCE
    interval_inside = low is None or high is None or (1 - CONTROL_TOLERANCE <= low and high <= 1 + CONTROL_TOLERANCE)
    if inside and interval_inside:
        return ""
    reading = f"{control_speedup:.3f}" + ("" if low is None or high is None else f" ({low:.3f}–{high:.3f})")
    return (
        f"A/A control read {reading} (outside 1.00 ± {CONTROL_TOLERANCE:.0%}): the protocol is biased or the "
        "machine was disturbed on this run; speed-ups in this table are not trustworthy"
    )


def settings_peak(device: str | torch.device, threads: int, settings: CompareSettings) -> dict[str, float]:
    """The machine's peak (:func:`.peak.machine_peak`) as :func:`compare` measures it with ``settings``: their
    matmul size, timed at most :data:`PEAK_MIN_RUN_TIME` per dtype (less when the arms are timed less); cached."""
    return machine_peak(device, threads, settings.peak_size, min(settings.min_run_time, PEAK_MIN_RUN_TIME))


# Times one round of the named arm: (seconds per call of each timed block, calls per block).
TimeArm = Callable[[str], "tuple[list[float], int]"]


def compare(
    arms: Mapping[str, Callable[[], Any] | ArmSpec],
    baseline: str,
    control: str | None = None,
    settings: CompareSettings = CompareSettings(),
    device: str | torch.device = "cpu",
    timer: Callable[[], float] | None = None,
    work: BaselineWork | None = None,
) -> Comparison:
    """Time every arm in balanced order, round after round, until every interval is inside its band or
    ``settings.rounds`` rounds have run; see the module docstring.

    ``arms`` maps a name to a no-argument callable (one forward, one training step…) or an :class:`ArmSpec` that
    builds one (required for the process isolations); ``baseline`` names the arm every ratio divides; ``control``
    names an arm that is an identical copy of the baseline (the A/A control).
    ``timer`` replaces the clock (tests); the default is ``torch.utils.benchmark``'s, which syncs CUDA.
    ``work`` (the baseline's FLOPs per image) turns its images/s into FLOP/s; the machine's peak
    (:func:`.peak.machine_peak`, once per process) is measured here, at the timed thread count, before the arms,
    into ``environment`` (NaN with a test clock: fake seconds have no peak).
    """
    check(baseline in arms, "baseline", baseline, f"one of the arms {list(arms)}")
    check(control is None or control in arms, "control", control, f"None or one of the arms {list(arms)}")
    if settings.isolation != "in_process":
        not_specs = [name for name, arm in arms.items() if not isinstance(arm, ArmSpec)]
        check(not not_specs, "arms", not_specs, f"ArmSpec values (a module-level factory) for {settings.isolation=}")
        check(timer is None, "timer", timer, f"None for {settings.isolation=} (each process uses the real clock)")
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
    empty = Comparison(pd.DataFrame(), baseline, control, settings, env, work=work)
    timing = {"process": _arm_workers, "process_per_round": _process_per_round}.get(settings.isolation, _in_process)
    with timing(arms, settings, threads, timer) as time_arm:
        return _timed_rounds(list(arms), empty, time_arm)


def _timed_rounds(names: list[str], empty: Comparison, time_arm: TimeArm) -> Comparison:
    """Whole rounds in the settings' order until every interval is inside its band (from ``first_stop`` rounds
    on) or the cap: the comparison of the rounds timed, saying how the timing stopped."""
    settings = empty.settings
    records: list[dict] = []
    for round_index, order in enumerate(round_orders(names, settings.rounds, settings.order, settings.seed)):
        for position, name in enumerate(order):
            times, number = time_arm(name)
            records += _records(name, round_index, position, times, number)
        rounds = round_index + 1
        if settings.band is None or rounds < settings.first_stop:
            continue
        so_far = dataclasses.replace(empty, raw=pd.DataFrame(records))
        outside = so_far.arms_outside_band()
        if not outside or rounds == settings.rounds:
            return dataclasses.replace(so_far, band_met=not outside, outside_band=outside)
    return dataclasses.replace(empty, raw=pd.DataFrame(records))


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
    extra = {} if timer is None else {"timer": timer}
    result = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, **extra).blocked_autorange(
        min_run_time=min_run_time
    )
    return list(result.times), result.number_per_run


@contextlib.contextmanager
def _in_process(
    arms: Mapping[str, Any], settings: CompareSettings, threads: int, timer: Callable[[], float] | None
) -> Iterator[TimeArm]:
    """Every arm in this process, built and warmed up here."""
    built = {name: arm.build() if isinstance(arm, ArmSpec) else arm for name, arm in arms.items()}
    for fn in built.values():
        for _ in range(settings.warmup_calls):
            fn()

    def time_arm(name: str) -> tuple[list[float], int]:
        gc.collect()  # the previous arm's freed tensors are released here, not inside the next arm's time
        return _blocked_times(built[name], settings.min_run_time, threads, timer)

    # Everything alive now (modules, models, inputs) lives through the whole comparison: frozen, it is left out of
    # the collections between blocks, which then scan only what the arms allocated (a full scan of a process that
    # imported torch takes a fifth of a second, and there is one per arm and round).
    gc.collect()
    gc.freeze()
    try:
        yield time_arm
    finally:
        gc.unfreeze()


def _forkserver(arms: Mapping[str, ArmSpec]) -> Any:
    """The ``forkserver`` context, its server preloading torch and the arms' modules: a process forked from it
    starts in a fraction of a second instead of re-importing torch, and the timer (:mod:`.timer`) ready."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    arm_modules = sorted({arm.factory.__module__ for arm in arms.values()})
    context.set_forkserver_preload(["torch", "vitstudy.bench.timer", "timm", *arm_modules])
    return context


def _time_arm_in_child(spec: ArmSpec, warmup_calls: int, min_run_time: float, threads: int) -> tuple[list, int]:
    """Runs in a fresh process: build the arm, warm it up, time it."""
    torch.set_num_threads(threads)
    fn = spec.build()
    for _ in range(warmup_calls):
        fn()
    return _blocked_times(fn, min_run_time, threads, None)


@contextlib.contextmanager
def _process_per_round(
    arms: Mapping[str, ArmSpec], settings: CompareSettings, threads: int, timer: None
) -> Iterator[TimeArm]:
    """Every (round, arm) in a new process forked from the forkserver: built, warmed up and timed there."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=_forkserver(arms), max_tasks_per_child=1) as pool:

        def time_arm(name: str) -> tuple[list[float], int]:
            task = (arms[name], settings.warmup_calls, settings.min_run_time, threads)
            return pool.submit(_time_arm_in_child, *task).result()

        yield time_arm


# The messages between the engine and an arm's worker process.
TIME_ROUND, STOP = "time one round", "stop"
READY, TIMES, FAILED = "ready", "times", "failed"
WORKER_EXIT_S = 10.0  # seconds a worker gets to leave after "stop" before it is terminated


def _arm_worker(connection: Any, spec: ArmSpec, warmup_calls: int, min_run_time: float, threads: int) -> None:
    """An arm's worker process: build the arm and warm it up once, then time one round per message until told
    to stop; a failure goes back as its traceback."""
    try:
        torch.set_num_threads(threads)
        fn = spec.build()
        for _ in range(warmup_calls):
            fn()
        # As in one process: what is alive now lives through every round, so frozen it is left out of the collection
        # before each round (a full scan of a process that imported torch costs more than a smoke round's timing).
        gc.collect()
        gc.freeze()
        connection.send((READY, None))
        while connection.recv() == TIME_ROUND:
            gc.collect()  # this arm's own garbage from its previous round is not paid inside this round's time
            connection.send((TIMES, _blocked_times(fn, min_run_time, threads, None)))
    except Exception:
        with contextlib.suppress(OSError):  # the engine has gone: nobody to tell
            connection.send((FAILED, traceback.format_exc()))
    finally:
        connection.close()


@dataclass
class _Worker:
    name: str
    process: Any
    connection: Any

    def receive(self, expected: str) -> Any:
        """The worker's next reply, which must be ``expected``; its failure or its disappearance is an error."""
        try:
            kind, payload = self.connection.recv()
        except EOFError:
            self.process.join(WORKER_EXIT_S)
            raise RuntimeError(
                f"arm {self.name!r}: its worker process ended (exit code {self.process.exitcode}) without a reply"
            ) from None
        if kind == FAILED:
            error = RuntimeError(f"arm {self.name!r} failed in its worker process: {payload.strip().splitlines()[-1]}")
            error.add_note(payload)
            raise error
        check(kind == expected, "reply", kind, f"{expected!r} from arm {self.name!r}'s worker")
        return payload

    def stop(self) -> None:
        """Ask the worker to leave; terminate it if it does not, kill it if that fails too."""
        with contextlib.suppress(OSError):
            self.connection.send(STOP)
        self.process.join(WORKER_EXIT_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(WORKER_EXIT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


@contextlib.contextmanager
def _arm_workers(
    arms: Mapping[str, ArmSpec], settings: CompareSettings, threads: int, timer: None
) -> Iterator[TimeArm]:
    """One long-lived worker process per arm from the forkserver, started one after another (no build or warm-up
    competes with another's); each round of an arm is one message to its worker. Every worker is stopped on the
    way out, whether the comparison ended or failed."""
    context = _forkserver(arms)
    workers: dict[str, _Worker] = {}
    try:
        for name, spec in arms.items():
            ours, theirs = context.Pipe()
            task = (theirs, spec, settings.warmup_calls, settings.min_run_time, threads)
            process = context.Process(target=_arm_worker, args=task, name=f"vitstudy arm {name}", daemon=True)
            process.start()
            theirs.close()  # only the worker holds its end now, so its exit reads as EOF here
            workers[name] = _Worker(name, process, ours)
            workers[name].receive(READY)

        def time_arm(name: str) -> tuple[list[float], int]:
            workers[name].connection.send(TIME_ROUND)
            return workers[name].receive(TIMES)

        yield time_arm
    finally:
        for worker in workers.values():
            worker.stop()
