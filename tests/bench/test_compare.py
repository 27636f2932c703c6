"""Tests for the comparison engine (vitstudy.bench.compare): known-cost arms, the A/A control, the FLOP bound."""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import time

import pytest

from vitstudy.bench import ArmSpec, calibration_arm, flop_bound_verdict
from vitstudy.bench import comparison as engine
from vitstudy.bench.comparison import SMOKE_TIMING, CompareSettings, compare, control_note, round_orders

FAST = CompareSettings(rounds=9, min_run_time=0.02, warmup_calls=1, bootstrap=500)
# On the real clock: the smoke timing's small peak matmul (the peak is not what these tests check).
TWO_ROUNDS = CompareSettings(
    rounds=2, min_run_time=0.02, warmup_calls=1, bootstrap=100, peak_size=SMOKE_TIMING.peak_size
)


def sleeping_arm(seconds: float) -> ArmSpec:
    """An arm that sleeps ``seconds`` per call. A fresh process must import an ArmSpec's factory by name, which a
    function of this test module is not, so the factory is made of standard-library parts."""
    return ArmSpec(functools.partial(functools.partial, time.sleep, seconds))


def seconds_per_call(result: engine.Comparison) -> dict[str, float]:
    """The smallest seconds per call each arm measured in any block."""
    return result.raw.groupby("arm")["seconds_per_call"].min().to_dict()


def test_garbage_an_arm_leaves_is_collected_before_the_next_arm_and_nothing_stays_frozen(fake_clock):
    """Between blocks the engine collects what the previous arm left in a reference cycle (objects alive before the
    comparison are frozen meanwhile, so each collection is cheap), and it unfreezes them when it ends."""
    clock, collected = fake_clock(), []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            collected.append(clock.now)

    def leaves_a_cycle() -> None:
        Cycle()
        clock.arm(1.0)()

    gc.disable()  # only the engine's own collections run
    try:
        settings = CompareSettings(rounds=2, min_run_time=1, warmup_calls=0)
        compare({"a": leaves_a_cycle, "b": clock.arm(1.0)}, "a", settings=settings, timer=clock)
    finally:
        gc.enable()
    assert collected and gc.get_freeze_count() == 0


@pytest.mark.usefixtures("no_collections")
def test_known_ratio_is_inside_its_interval(fake_clock):
    """Arms of cost 1 and 2 (noisy, fake clock): the speed-up of the cheaper arm is 2.00 inside its interval, and
    each arm's median time is its cost per call."""
    clock = fake_clock()
    result = compare(
        {"slow": clock.arm(2.0), "fast": clock.arm(1.0)},
        "slow",
        settings=CompareSettings(rounds=15, min_run_time=5, bootstrap=1000),
        timer=clock,
    )
    row = result.speedup("fast")
    assert row["speedup_low"] <= 2.0 <= row["speedup_high"]
    assert row["speedup"] == pytest.approx(2.0, rel=0.05)
    assert row["seconds"] == pytest.approx(1.0, rel=0.05)
    assert result.speedup("slow")["seconds"] == pytest.approx(2.0, rel=0.05)


@pytest.mark.usefixtures("no_collections")
def test_aa_control_reads_one(fake_clock):
    """The baseline against an identical copy reads 1.00 inside its interval, and the control note is empty (the
    per-call noise is small enough for that interval to lie inside 1.00 ± 3%, as the note requires)."""
    clock = fake_clock(seed=3, noise=0.02)
    base = clock.arm(1.0)
    result = compare(
        {"base": base, "copy": clock.arm(1.0)},
        "base",
        control="copy",
        settings=CompareSettings(rounds=15, min_run_time=5, bootstrap=1000),
        timer=clock,
    )
    row = result.speedup("copy")
    assert row["speedup_low"] <= 1.0 <= row["speedup_high"]
    assert result.control_note() == ""


def test_default_clock_is_real_time():
    """Without ``timer=``, arms are timed by the real clock: an arm sleeping s seconds per call measures at least s
    in every block (``time.sleep`` never returns early; how far it overshoots depends on the machine's load, so
    only the floor is asserted: the engine's ratios are checked with the fake clock)."""
    arms = {"double": sleeping_arm(0.004).build(), "single": sleeping_arm(0.002).build()}
    result = compare(arms, "double", settings=TWO_ROUNDS)
    floors = seconds_per_call(result)
    assert floors["double"] >= 0.004 and floors["single"] >= 0.002


def test_arms_alternate_in_abba_order():
    """Each round reverses the previous round's order, so every arm runs first as often as last."""
    assert round_orders(["a", "b", "c"], 4) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"], ["c", "b", "a"]]
    shuffled = round_orders(["a", "b", "c"], 6, order="random", seed=3)
    assert all(sorted(r) == ["a", "b", "c"] for r in shuffled)


@pytest.mark.usefixtures("no_collections")
def test_raw_times_are_kept_per_block(fake_clock):
    """The raw table has one row per timed block with the arm, round and position in the round."""
    clock = fake_clock()
    result = compare({"a": clock.arm(1.0), "b": clock.arm(1.0)}, "a", settings=FAST, timer=clock)
    assert set(result.raw.columns) >= {"arm", "round", "position", "seconds_per_call", "calls"}
    assert sorted(result.raw["round"].unique()) == list(range(FAST.rounds))
    rows = result.rows()
    assert list(rows["arm"]) == ["a", "b"] and rows["rounds"].eq(FAST.rounds).all()


@pytest.mark.usefixtures("no_cuda")
def test_absent_device_gives_nan_and_a_note():
    """On an absent CUDA device nothing is called; speed-ups are NaN and the note says why."""
    calls = []
    result = compare({"a": lambda: calls.append(1)}, "a", device="cuda", settings=FAST)
    assert calls == [] and math.isnan(result.speedup("a")["speedup"])
    assert result.note == engine.NOT_MEASURED_NO_CUDA


def test_control_outside_tolerance_is_noted():
    """An A/A reading outside 1.00 ± 3% produces a note; inside it, none."""
    assert control_note(1.02) == "" and control_note(1.02, 0.98, 1.03) == ""
    assert "outside" in control_note(1.05) and "outside" in control_note(0.96)
    # a point inside the band whose interval reaches out of it has not shown the protocol unbiased
    assert "(0.950–1.100)" in control_note(1.01, 0.95, 1.10)


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [
        (1.10, "exceeds the FLOP bound — measurement suspect"),
        (1.00, "within target (0.97–1.03)"),
        (0.90, "below target (0.97–1.03)"),
        (math.nan, "not measured"),
    ],
)
def test_ratio_above_the_flop_bound_is_flagged(ratio, verdict):
    """A measured/ideal ratio above 1.03 is never 'within target'; it is flagged as suspect."""
    assert flop_bound_verdict(ratio, (0.97, 1.03)) == verdict


def test_bad_settings_name_the_value():
    """Settings are checked at the boundary with the value and what is allowed."""
    with pytest.raises(ValueError, match=r"rounds=1 is not allowed"):
        CompareSettings(rounds=1)
    with pytest.raises(ValueError, match=r"order='zigzag' is not allowed"):
        CompareSettings(order="zigzag")


def test_operator_breakdown_names_the_heavier_operator():
    """The profile table has one column per arm and a total; the per-call operator counts are exact.

    Times on a shared 2-core VM are too noisy to order two arms in a unit test (CI once read the four-matmul arm
    faster than the one-matmul arm), so the test checks counts, which the profiler records exactly.
    """
    import torch

    from vitstudy.bench import operator_breakdown
    from vitstudy.bench.profile import operator_times

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    arms = {"one": lambda: a @ b, "four": lambda: [a @ b for _ in range(4)]}
    table = operator_breakdown(arms, calls=3)
    assert list(table.columns) == ["operator", "one", "four"]
    by_operator = table.set_index("operator")
    assert {"aten::mm", "total"} <= set(by_operator.index)
    assert (by_operator.loc["total"] > 0).all()
    counts = {
        name: operator_times(fn, calls=3).set_index("operator").loc["aten::mm", "count"] for name, fn in arms.items()
    }
    assert counts == {"one": 1.0, "four": 4.0}


def test_process_isolation_times_each_arm_in_its_own_process():
    """isolation="process": arms given as ArmSpec are rebuilt and timed in their own worker processes, each under
    its own name (an arm sleeping s seconds per call measures at least s in every block), every round is kept and the
    isolation is recorded."""
    settings = dataclasses.replace(TWO_ROUNDS, isolation="process")
    result = compare({"double": sleeping_arm(0.004), "single": sleeping_arm(0.002)}, "double", settings=settings)
    floors = seconds_per_call(result)
    assert floors["double"] >= 0.004 and floors["single"] >= 0.002
    assert sorted(result.raw["round"].unique()) == [0, 1]
    assert result.environment["isolation"] == "process" and set(result.rows()["isolation"]) == {"process"}


def test_process_isolation_needs_arm_specs_and_in_process_builds_them():
    """A plain callable cannot cross into another process: one clear error; in one process an ArmSpec is built."""
    with pytest.raises(ValueError, match=r"ArmSpec"):
        compare({"a": lambda: None}, "a", settings=CompareSettings(rounds=2, isolation="process"))
    with pytest.raises(ValueError, match=r"isolation='threads' is not allowed"):
        CompareSettings(isolation="threads")
    result = compare({"a": ArmSpec(calibration_arm, {"iterations": 1000})}, "a", settings=TWO_ROUNDS)
    assert result.speedup("a")["speedup"] == 1.0
