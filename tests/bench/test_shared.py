"""bench.shared: a comparison one notebook of a report run keeps for a later one that times a subset of its arms."""

import itertools

import pytest
import torch

from vitstudy import bench
from vitstudy.bench import shared

FAKE = bench.CompareSettings(rounds=4, min_run_time=0.01, warmup_calls=0, bootstrap=100)


def _fake_clock(step_of: dict[str, float], calls: list[str]):
    """A clock that advances by the running arm's cost per call: arm ``a`` costs ``step_of[a]`` seconds."""
    now = itertools.count()
    state = {"t": 0.0}

    def arm(name: str):
        def call() -> None:
            calls.append(name)
            state["t"] += step_of[name]

        return call

    def clock() -> float:
        next(now)
        return state["t"]

    return arm, clock


@pytest.fixture
def timed(monkeypatch, tmp_path):
    """A four-arm comparison on a fake clock, inside a report run (``$VITSTUDY_REPORT_TIMINGS`` set)."""
    monkeypatch.setenv(bench.SHARED_TIMINGS_ENV, str(tmp_path))
    calls: list[str] = []
    steps = {"plain": 0.010, "plain (A/A copy)": 0.010, "fast": 0.005, "slow": 0.020}
    arm, clock = _fake_clock(steps, calls)
    comparison = bench.compare({name: arm(name) for name in steps}, "plain", "plain (A/A copy)", FAKE, timer=clock)
    ids = {name: bench.arm_fingerprint(name) for name in steps}
    return comparison, ids, calls


def test_a_later_notebook_reads_the_same_paired_ratios_for_its_arms(timed):
    """Shared, then read for two of its arms: the same raw times of those arms and the same ratios; nothing timed."""
    comparison, ids, calls = timed
    bench.share(comparison, "t52", ids)
    before = len(calls)
    again = bench.shared_subset("t52", {"plain": ids["plain"], "fast": ids["fast"]})
    assert len(calls) == before
    assert set(again.raw["arm"]) == {"plain", "plain (A/A copy)", "fast"}  # the baseline's A/A control comes along
    assert again.speedup("fast") == comparison.speedup("fast")
    assert again.control_speedup == comparison.control_speedup
    assert "timed once earlier in this report run (t52)" in bench.table_note(again)
    assert "earlier" not in bench.table_note(comparison)


def test_an_arm_that_ran_something_else_is_timed_again(timed):
    """A fingerprint that differs (other weights, knobs or images), or an arm never timed: None, so it is timed."""
    comparison, ids, _ = timed
    bench.share(comparison, "t52", ids)
    assert bench.shared_subset("t52", {"plain": ids["plain"], "fast": bench.arm_fingerprint("other weights")}) is None
    assert bench.shared_subset("t52", {"plain": ids["plain"], "never timed": "x"}) is None
    assert bench.shared_subset("another key", {"plain": ids["plain"]}) is None


def test_outside_a_report_run_nothing_is_kept(timed, monkeypatch, tmp_path):
    """Without ``$VITSTUDY_REPORT_TIMINGS`` (a notebook opened by hand) share writes nothing and nothing is read."""
    comparison, ids, _ = timed
    monkeypatch.delenv(bench.SHARED_TIMINGS_ENV)
    bench.share(comparison, "t52", ids)
    assert list(tmp_path.iterdir()) == []
    assert bench.shared_subset("t52", ids) is None


def test_subset_names_an_arm_it_does_not_have(timed):
    comparison, _, _ = timed
    with pytest.raises(ValueError, match=r"arms=\['gone'\] are not in the shared comparison"):
        shared.subset(comparison, ["gone"])


def test_fingerprint_sees_weights_and_values_not_identity():
    """Equal weights and knobs hash alike, whatever the object; a changed weight or knob does not."""
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert bench.arm_fingerprint(a, 0.9, "sample") == bench.arm_fingerprint(b, 0.9, "sample")
    assert bench.arm_fingerprint(a, 0.9, "sample") != bench.arm_fingerprint(a, 0.9, "batch")
    with torch.no_grad():
        b.bias += 1
    assert bench.arm_fingerprint(a) != bench.arm_fingerprint(b)
