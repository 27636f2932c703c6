"""The verdict vocabulary as read back from a table: the A/A control by its interval, a table's trust, the speed
phrase and verdict on measured ÷ ideal, and every branch of the accuracy verdict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vitstudy.bench import (
    CONTROL_SUFFIX,
    FLOP_IDEAL_TARGET,
    NO_CHANGE_POINTS,
    NOT_TRUSTWORTHY,
    WITHIN_TARGET,
    accuracy_verdict,
    control_passes,
    control_verdict,
    flop_bound_verdict,
    speed_phrase,
    speed_verdict,
    table_trust,
)
from vitstudy.formatting import NOT_MEASURED

NAN = math.nan


@pytest.mark.parametrize(
    ("low", "high", "passes"),
    [
        (0.97, 1.03, True),  # the band's ends belong to it
        (0.99, 1.01, True),
        (0.96, 1.00, False),  # the point may sit inside; the interval reaches out
        (1.00, 1.04, False),
        (NAN, NAN, False),
    ],
)
def test_control_passes_by_its_interval(low: float, high: float, passes: bool) -> None:
    assert control_passes(low, high) is passes


def timed_table(control: tuple[float, float, float], name_column: str = "arm", prefix: str = "") -> pd.DataFrame:
    speedup, low, high = control
    rows = [
        {name_column: "plain", "verdict": "baseline", "note": "A/A control read 1.034 (outside 1.00 ± 3%)"},
        {name_column: "faster", "verdict": "within target (0.9–1.03)", "note": ""},
        {name_column: "plain" + CONTROL_SUFFIX, "verdict": control_verdict(speedup), "note": ""},
    ]
    numbers = [(1.0, 1.0, 1.0), (1.5, 1.4, 1.6), control]
    for row, (value, lo, hi) in zip(rows, numbers, strict=True):
        row |= {f"{prefix}speedup": value, f"{prefix}speedup_low": lo, f"{prefix}speedup_high": hi}
    return pd.DataFrame(rows)


def test_table_trust_empty_when_the_control_passes() -> None:
    assert table_trust(timed_table((1.0, 0.98, 1.02))) == ""


def test_table_trust_names_the_failed_control_by_its_interval() -> None:
    # The point 1.00 reads "within" by control_verdict; the interval reaching 1.05 fails the control.
    assert table_trust(timed_table((1.0, 0.98, 1.05))) == "not trustworthy (A/A 1.00× (0.98–1.05), outside 1.00 ± 3%)"


def test_table_trust_finds_the_control_by_verdict_when_names_do_not_say() -> None:
    table = timed_table((1.04, 1.01, 1.06), name_column="setting").assign(setting=["a", "b", "c"])
    assert table_trust(table).startswith(NOT_TRUSTWORTHY)


def test_table_trust_ignores_a_note_that_quotes_the_control() -> None:
    # The baseline's note starts "A/A control read ...": the baseline's 1.00 (1.00–1.00) must not be read as the
    # control.
    assert table_trust(timed_table((1.04, 1.01, 1.06))) != ""


def test_table_trust_reads_prefixed_columns() -> None:
    assert table_trust(timed_table((1.04, 1.01, 1.06), prefix="cpu_"), prefix="cpu_").startswith(NOT_TRUSTWORTHY)


def test_table_trust_not_measured_and_no_control() -> None:
    assert table_trust(timed_table((NAN, NAN, NAN))) == NOT_MEASURED
    assert table_trust(timed_table((1.0, 0.99, 1.01)).iloc[:2]) == ""


def test_speed_phrase_writes_speedup_ideal_and_quotient() -> None:
    assert speed_phrase(1.27, 1.23, 1.34, 1.30) == "1.27× (1.23–1.34) of an ideal 1.30× = 0.98"
    assert speed_phrase(NAN, NAN, NAN, 1.30) == NOT_MEASURED


def test_speed_verdict_says_it_reads_the_quotient() -> None:
    verdict = speed_verdict(0.98, 0.95, 1.03, FLOP_IDEAL_TARGET)
    assert verdict == "measured ÷ ideal 0.98 (0.95–1.03): within target (0.9–1.03)"
    assert verdict.endswith(flop_bound_verdict(0.98, FLOP_IDEAL_TARGET))


def test_speed_verdict_under_a_failed_control_is_never_within() -> None:
    trust = table_trust(timed_table((1.04, 1.01, 1.06)))
    verdict = speed_verdict(0.98, 0.95, 1.03, FLOP_IDEAL_TARGET, trust=trust)
    assert verdict == trust
    assert WITHIN_TARGET not in verdict


def test_speed_verdict_not_measured() -> None:
    assert speed_verdict(NAN, NAN, NAN, FLOP_IDEAL_TARGET) == NOT_MEASURED


@pytest.mark.parametrize(
    ("ours", "low", "high", "paper", "seeds", "verdict"),
    [
        (NAN, NAN, NAN, -1.8, None, NOT_MEASURED),
        (0.5, 0.2, 0.8, NAN, None, "higher"),
        (-0.5, -0.8, -0.2, NAN, None, "lower"),
        (0.1, -0.2, 0.4, NAN, 7, "no difference resolved (7 seeds would resolve it)"),
        # The document claims no change: read as no loss beyond NO_LOSS_POINTS.
        (0.1, -0.3, 0.5, -NO_CHANGE_POINTS, None, "reproduced"),
        (1.3, -0.2, 2.8, -0.01, None, "reproduced"),  # a gain does not contradict "keeps top-1"
        (-2.0, -2.5, -1.5, -0.01, None, "contradicted"),
        (-0.6, -1.2, 0.1, -0.01, 10, "cannot tell (10 seeds would resolve it)"),
        # Paper inside the interval, 0 outside.
        (-1.5, -2.0, -1.0, -1.78, None, "reproduced"),
        # Paper and 0 both inside.
        (-0.9, -2.0, 0.2, -1.78, 9, "cannot tell (9 seeds would resolve it)"),
        (-0.9, -2.0, 0.2, -1.78, None, "cannot tell"),
        # Paper outside, 0 inside.
        (0.1, -0.5, 0.7, -1.78, None, "contradicted in size"),
        # Paper outside, 0 outside on the paper's side.
        (-0.8, -1.2, -0.4, -1.78, None, "direction reproduced, smaller"),
        (-3.0, -3.5, -2.5, -1.78, None, "direction reproduced, larger"),
        # Paper outside, 0 outside on the other side.
        (0.8, 0.4, 1.2, -1.78, None, "contradicted"),
    ],
)
def test_accuracy_verdict_every_branch(
    ours: float, low: float, high: float, paper: float, seeds: int | None, verdict: str
) -> None:
    assert accuracy_verdict(ours, low, high, paper, seeds) == verdict


def test_control_verdict_is_within_only_when_its_interval_is():
    """control_verdict: the point alone decides without an interval; with one, the whole interval must be inside."""
    within = "A/A control: within 1.00 ± 3%"
    assert control_verdict(1.01) == within and control_verdict(1.01, 0.98, 1.02) == within
    assert control_verdict(1.01, 0.92, 1.18) == "A/A control: point within 1.00 ± 3%, interval 0.92–1.18 outside it"
    assert control_verdict(0.90, 0.85, 0.95) == "A/A control: outside 1.00 ± 3%"
