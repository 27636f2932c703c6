"""bench.compare stops timing when the answer is known (on a fake clock): at the fewest rounds on steady times, at
the cap on noisy ones, always after whole rounds in the capped order, and never with an interval outside its band."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import pytest

from vitstudy import bench
from vitstudy.bench.comparison import (
    CompareSettings,
    Comparison,
    arm_band,
    compare,
    ideal_band,
    round_orders,
)
from vitstudy.bench.stats import interval_inside

# The stopping rule on fake seconds: the engine's garbage collections are checked in test_compare.py.
pytestmark = pytest.mark.usefixtures("no_collections")

CAP = CompareSettings(rounds=9, min_run_time=1, warmup_calls=0, bootstrap=200)


@pytest.fixture
def timed(fake_clock) -> Callable[..., Comparison]:
    """``timed(costs, settings=CAP, noise=0.0, seed=0)``: ``costs`` (arm -> fake seconds per call) compared on a fake
    clock; the first arm is the baseline and an arm named "copy" the A/A control."""

    def run(costs: dict[str, float], settings: CompareSettings = CAP, noise: float = 0.0, seed: int = 0) -> Comparison:
        clock = fake_clock(seed, noise)
        arms = {name: clock.arm(cost) for name, cost in costs.items()}
        control = "copy" if "copy" in costs else None
        return compare(arms, next(iter(costs)), control, settings=settings, timer=clock)

    return run


def prefix(comparison: Comparison, rounds: int) -> Comparison:
    """The comparison as it stood after its first ``rounds`` rounds."""
    return dataclasses.replace(comparison, raw=comparison.raw[comparison.raw["round"] < rounds])


def test_steady_times_stop_at_the_fewest_rounds(timed):
    """Times that never vary put every interval on its point: the timing stops after min_rounds, and says so."""
    result = timed({"base": 2.0, "fast": 1.0, "copy": 2.0})
    assert result.rounds_used == 3 and result.band_met is True and result.outside_band == {}
    assert result.speedup("fast")["speedup"] == pytest.approx(2.0)
    rows = result.rows()
    assert (
        (rows["rounds"] == 3).all() and (rows["rounds_cap"] == CAP.rounds).all() and (rows["rounds_note"] == "").all()
    )
    protocol = bench.protocol(result)
    assert protocol["rounds"] == 3 and protocol["rounds_cap"] == CAP.rounds


def test_noisy_times_run_to_the_cap_and_the_note_says_so(timed):
    """Times too noisy for a ±3% interval in 9 rounds: every round runs, and the note names the cap and the arms."""
    result = timed({"base": 1.0, "fast": 0.5, "copy": 1.0}, noise=1.0)
    assert result.rounds_used == CAP.rounds and result.band_met is False
    assert sorted(result.raw["round"].unique()) == list(range(CAP.rounds))  # raw times stay complete
    note = result.rounds_note()
    assert note.startswith(f"hit the cap of {CAP.rounds} rounds: interval wider than the band")
    assert set(result.outside_band) <= {"fast", "copy"} and all(
        f"{arm}: interval" in note for arm in result.outside_band
    )
    assert note in bench.table_note(result)  # the table's note carries it beside the control's


def test_a_table_that_stopped_inside_its_bands_has_no_rounds_note(timed):
    """Steady times: the table's note says nothing about rounds."""
    assert "hit the cap" not in bench.table_note(timed({"base": 1.0, "fast": 0.5, "copy": 1.0}))


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.05, 0.1])
def test_the_timing_stops_at_the_first_round_whose_intervals_are_all_inside_their_bands(noise, timed):
    """Whatever the noise: a stop before the cap means every reported interval is inside its band, and no earlier
    whole round (from min_rounds on) had that; a stop at the cap with the band unmet reports it."""
    result = timed({"base": 1.0, "fast": 0.5, "copy": 1.0}, noise=noise, seed=4)
    for rounds in range(CAP.min_rounds, result.rounds_used):
        assert prefix(result, rounds).arms_outside_band(), rounds
    for arm in ("fast", "copy"):
        speed = result.speedup(arm)
        inside = interval_inside(
            speed["speedup_low"], speed["speedup_high"], arm_band(CAP, arm, speed["speedup"], "copy")
        )
        assert inside == (arm not in result.outside_band)
    assert result.band_met == (result.outside_band == {})
    assert result.band_met or result.rounds_used == CAP.rounds


def test_some_noise_stops_between_the_fewest_rounds_and_the_cap(timed):
    """A noise level where the third round is not enough but the cap is not needed (the rule is not all or
    nothing)."""
    used = {timed({"base": 1.0, "fast": 0.5}, noise=0.02, seed=seed).rounds_used for seed in range(6)}
    assert used & set(range(CAP.min_rounds + 1, CAP.rounds))


@pytest.mark.parametrize("order", ["abba", "random"])
def test_the_rounds_timed_are_whole_and_a_prefix_of_the_capped_order(order, timed):
    """Each round times every arm once, in the order the capped comparison would have used."""
    settings = dataclasses.replace(CAP, order=order)
    result = timed({"a": 1.0, "b": 0.5, "c": 0.25}, settings)
    timed_orders = [
        list(group.drop_duplicates("position").sort_values("position")["arm"])
        for _, group in result.raw.groupby("round")
    ]
    assert len(timed_orders) == result.rounds_used < settings.rounds
    assert timed_orders == round_orders(["a", "b", "c"], settings.rounds, order, settings.seed)[: result.rounds_used]


def test_a_biased_control_keeps_timing_to_the_cap(timed):
    """An A/A copy reading 0.91, however steady, is outside 1.00 ± 3%: the timing never stops early for it."""
    result = timed({"base": 1.0, "fast": 0.5, "copy": 1.1})
    assert result.rounds_used == CAP.rounds and list(result.outside_band) == ["copy"]
    assert "copy: interval 0.909–0.909 outside its band 0.970–1.030" in result.rounds_note()


def test_a_band_on_measured_over_ideal_stops_only_inside_it(timed):
    """A callable band (measured ÷ ideal inside 0.95–1.05, times each arm's ideal): an arm at its ideal stops the
    timing, an arm at 4/3 of it does not; an arm without an ideal keeps the relative rule."""
    at_ideal = dataclasses.replace(CAP, band=functools.partial(ideal_band, {"fast": 2.0}, bench.RESOLVED_BAND))
    assert timed({"base": 1.0, "fast": 0.5, "other": 0.25}, at_ideal).band_met is True
    off_ideal = dataclasses.replace(CAP, band=functools.partial(ideal_band, {"fast": 1.5}, bench.RESOLVED_BAND))
    result = timed({"base": 1.0, "fast": 0.5}, off_ideal)
    assert result.band_met is False and result.outside_band["fast"].endswith("outside its band 1.425–1.575")


def test_no_band_times_every_round(timed):
    """band=None: the cap is the number of rounds, as before, and nothing is said about a band."""
    result = timed({"base": 1.0, "fast": 0.5}, dataclasses.replace(CAP, band=None))
    assert result.rounds_used == CAP.rounds and result.band_met is None and result.rounds_note() == ""


def test_a_cap_below_min_rounds_is_the_cap(timed):
    """rounds=2 (the smoke timing) with the default min_rounds: two rounds, then the band is checked."""
    result = timed({"base": 1.0, "fast": 0.5}, dataclasses.replace(CAP, rounds=2))
    assert result.rounds_used == 2 and result.band_met is True


def test_bad_band_and_min_rounds_name_the_value():
    with pytest.raises(ValueError, match=r"band=1.5 is not allowed: expected a relative half-width in \(0, 1\)"):
        CompareSettings(band=1.5)
    with pytest.raises(ValueError, match=r"min_rounds=1 is not allowed"):
        CompareSettings(min_rounds=1)


def test_a_shared_comparison_keeps_how_its_timing_stopped(monkeypatch, tmp_path, timed):
    """Shared with a callable band: the band is kept as None (it has no JSON form), the outcome as it was."""
    monkeypatch.setenv(bench.SHARED_TIMINGS_ENV, str(tmp_path))
    settings = dataclasses.replace(CAP, band=functools.partial(ideal_band, {"fast": 1.5}, bench.RESOLVED_BAND))
    result = timed({"base": 1.0, "fast": 0.5}, settings)
    ids = {"base": "b", "fast": "f"}
    bench.share(result, "capped", ids)
    again = bench.shared_subset("capped", ids)
    assert again.band_met is False and again.outside_band == result.outside_band
    assert again.rounds_note() == result.rounds_note() and again.settings.band is None
