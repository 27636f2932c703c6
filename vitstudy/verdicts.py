"""The one verdict vocabulary of the study, and every target and band it judges against, named once. No torch, so
``python -m vitstudy results`` reads committed tables through it in a second; :mod:`vitstudy.bench` exports it all.

A speed verdict judges measured ÷ FLOP-ideal speed-up (a ratio of speed-ups), never the speed-up itself:

- ``"baseline"``: the arm every ratio divides.
- ``"within target (lo–hi)"``, ``"below target (lo–hi)"``, ``"above target (lo–hi)"``: a measured ÷ ideal
  against a two-sided target; with ``interval=(lo, hi)`` a point inside the target meets it only when its
  interval lies inside that band too, else ``"point within …, but interval … not inside …: not resolved"``.
- ``"exceeds the FLOP bound — measurement suspect"`` (measured ÷ ideal above :data:`FLOP_BOUND_SLACK`), or
  ``"above the FLOP ideal: explained by profile"`` when a committed profile explains it: never "met".
- ``"A/A control: within 1.00 ± 3%"`` / ``"A/A control: outside 1.00 ± 3%"`` (the point, as a timed row says it).
- ``"not trustworthy (A/A 1.04× (1.01–1.06), outside 1.00 ± 3%)"``: every speed verdict of a table whose A/A
  control's interval leaves :data:`CONTROL_BAND` (:func:`table_trust`); no target is met on a biased protocol.
- ``"not measured"``: the device is absent (every number NaN, the ``note`` says why).

Read back from a committed table (RESULTS.md, the notebooks' closings) the verdicts are derived from the numbers,
never from the stored strings: :func:`control_passes` judges an A/A control by its interval, :func:`table_trust`
says whether a table's speed-ups can be read at all, :func:`speed_phrase` writes a speed-up beside its FLOP ideal,
:func:`speed_verdict` states the verdict on measured ÷ ideal and says so. :func:`accuracy_verdict` judges a top-1
difference against a document's: reproduced, direction reproduced (smaller or larger), contradicted (in sign or in
size), cannot tell.
"""

from __future__ import annotations

import math

import pandas as pd

from .formatting import NOT_MEASURED, format_interval

CONTROL_TOLERANCE = 0.03  # the A/A control must read 1.00 ± 3%
FLOP_BOUND_SLACK = 1.03  # measured / FLOP-ideal above this is a measurement error until explained
BASELINE_VERDICT = "baseline"
CONTROL_SUFFIX = " (A/A copy)"  # the A/A control arm is the baseline's name plus this
# A target bounds measured ÷ FLOP-ideal speed-up (two-sided); the control band bounds an A/A ratio.
CONTROL_BAND = (1 - CONTROL_TOLERANCE, 1 + CONTROL_TOLERANCE)  # an arm that changes nothing reads 1.00 ± 3%
# An arm that runs only the blocks the FLOP count counts (forced exits: the same blocks, fewer of them) has no
# excuse to miss its ideal in either direction: the control's band.
NO_OVERHEAD_TARGET = CONTROL_BAND
# An arm that adds work the FLOP count leaves out (confidences, compaction, gathers, re-insertion) may fall up to 10%
# short of its ideal; above the ideal by more than the slack is a measurement error, whatever the arm.
FLOP_IDEAL_TARGET = (0.90, FLOP_BOUND_SLACK)
# Machinery that runs but never fires (an exit threshold no image reaches) may cost up to the control's tolerance and
# can gain nothing.
IDLE_TARGET = (CONTROL_BAND[0], 1.0)
# A measured ÷ ideal is resolved when its interval lies inside this band too (the interval rule of the forced exits;
# the bound a loading path must reach against no loader at all).
RESOLVED_BAND = (0.95, 1.05)
WITHIN_TARGET = "within target"  # how every verdict that meets its target begins (readers test for this prefix)
NOT_TRUSTWORTHY = "not trustworthy"  # how every verdict under a failed A/A control begins (readers test for this)
# A document's top-1 difference this small (points) claims no change ("maintaining accuracy"): both documents print
# top-1 to two decimals at best, and no seed count this study can afford resolves a tenth of a point.
NO_CHANGE_POINTS = 0.1
# A claim of no change is read as "no loss larger than one point": the difference the protocol is sized to resolve.
NO_LOSS_POINTS = 1.0
MOST_SEEDS = 100  # the most seeds an estimate of "seeds that would resolve it" looks for


def flop_bound_verdict(
    measured_over_ideal: float,
    target: tuple[float, float],
    explained: bool = False,
    interval: tuple[float, float] | None = None,
    interval_within: tuple[float, float] | None = None,
) -> str:
    """Verdict for a measured ÷ FLOP-ideal speed-up against a two-sided ``target`` (module docstring).

    With ``interval`` (the quotient's 95% interval) and ``interval_within`` (a band), a point inside the target
    meets it only when the interval lies inside the band.
    """
    if math.isnan(measured_over_ideal):
        return NOT_MEASURED
    if measured_over_ideal > FLOP_BOUND_SLACK:
        return (
            "above the FLOP ideal: explained by profile"
            if explained
            else "exceeds the FLOP bound — measurement suspect"
        )
    low, high = target
    if measured_over_ideal < low:
        return f"below target ({low:g}–{high:g})"
    if measured_over_ideal > high:
        return f"above target ({low:g}–{high:g})"
    if interval is not None and interval_within is not None:
        lo, hi = interval_within
        if not (lo <= interval[0] and interval[1] <= hi):
            return (
                f"point within {low:g}–{high:g}, but interval {interval[0]:.2f}–{interval[1]:.2f} not inside "
                f"{lo:g}–{hi:g}: not resolved"
            )
        return f"{WITHIN_TARGET} ({low:g}–{high:g}, interval inside {lo:g}–{hi:g})"
    return f"{WITHIN_TARGET} ({low:g}–{high:g})"


def control_verdict(control_speedup: float, low: float | None = None, high: float | None = None) -> str:
    """The A/A control's verdict as a timed row states it: within 1.00 ± 3% only when its point and, given its 95%
    interval ``(low, high)``, the whole interval lie inside :data:`CONTROL_BAND` (:func:`control_passes`)."""
    if math.isnan(control_speedup):
        return NOT_MEASURED
    band = f"1.00 ± {CONTROL_TOLERANCE:.0%}"
    if abs(control_speedup - 1) > CONTROL_TOLERANCE:
        return f"A/A control: outside {band}"
    if low is not None and high is not None and not control_passes(low, high):
        return f"A/A control: point within {band}, interval {low:.2f}–{high:.2f} outside it"
    return f"A/A control: within {band}"


def control_passes(low: float, high: float) -> bool:
    """An A/A control passes when its whole 95% interval lies inside :data:`CONTROL_BAND`: a point inside the band
    with an interval reaching out of it has not shown that the protocol is unbiased. NaN never passes."""
    return CONTROL_BAND[0] <= low and high <= CONTROL_BAND[1]


def control_trust(speedup: float, low: float, high: float) -> str:
    """``""`` when an A/A control reading ``speedup`` (95% interval ``low``–``high``) passes; else
    ``"not trustworthy (A/A 1.04× (1.01–1.06), outside 1.00 ± 3%)"``; ``"not measured"`` when it was not timed."""
    if any(math.isnan(value) for value in (speedup, low, high)):
        return NOT_MEASURED
    if control_passes(low, high):
        return ""
    return (
        f"{NOT_TRUSTWORTHY} (A/A {format_interval(speedup, low, high, unit='×')}, "
        f"outside 1.00 ± {CONTROL_TOLERANCE:.0%})"
    )


def control_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows of ``table`` are A/A controls: a cell outside the notes that starts ``"A/A control"`` (its
    verdict, or a setting that names it) or ends with :data:`CONTROL_SUFFIX` (its arm's name)."""
    text = table.select_dtypes(include=["object", "string"]).astype(str)
    text = text[[name for name in text.columns if "note" not in name]]  # a note may quote the control's reading
    found = text.apply(lambda column: column.str.startswith("A/A control") | column.str.endswith(CONTROL_SUFFIX))
    return found.any(axis=1) if not found.empty else pd.Series(False, index=table.index)


def table_trust(table: pd.DataFrame, prefix: str = "") -> str:
    """``""`` when ``table``'s A/A control passes by its interval (:func:`control_passes`) or the table has no
    control row (:func:`control_rows`); else :func:`control_trust`'s ``"not trustworthy (A/A …)"``, or ``"not
    measured"`` when the control was not timed.

    ``prefix`` picks a device's or model's columns in a table that holds several (``"cpu_"``: ``cpu_speedup``,
    ``cpu_speedup_low``, ...). Pass one timed group: a table that stacks several comparisons (one per batch size) is
    judged group by group.
    """
    rows = table[control_rows(table)]
    if rows.empty:
        return ""
    control = rows.iloc[0]
    return control_trust(*(float(control[f"{prefix}speedup{end}"]) for end in ("", "_low", "_high")))


def speed_phrase(speedup: float, low: float, high: float, ideal: float) -> str:
    """``"1.27× (1.23–1.34) of an ideal 1.30× = 0.98"``: a measured speed-up with its 95% interval, its FLOP ideal
    and their quotient, the number every speed verdict judges."""
    if math.isnan(speedup):
        return NOT_MEASURED
    return f"{format_interval(speedup, low, high, unit='×')} of an ideal {ideal:.2f}× = {speedup / ideal:.2f}"


def speed_verdict(
    measured_over_ideal: float,
    low: float,
    high: float,
    target: tuple[float, float],
    trust: str = "",
    interval_within: tuple[float, float] | None = None,
    explained: bool = False,
) -> str:
    """The verdict on measured ÷ FLOP ideal, saying what it reads: ``"measured ÷ ideal 0.98 (0.95–1.03): within
    target (0.9–1.03)"`` (the judgement as :func:`flop_bound_verdict` words it). Under a failed A/A control
    (``trust``, from :func:`table_trust`) the verdict is ``trust`` itself: no target is met on a biased protocol."""
    if trust:
        return trust
    if math.isnan(measured_over_ideal):
        return NOT_MEASURED
    judged = flop_bound_verdict(measured_over_ideal, target, explained, (low, high), interval_within)
    return f"measured ÷ ideal {format_interval(measured_over_ideal, low, high)}: {judged}"


def accuracy_verdict(ours: float, low: float, high: float, paper: float, seeds_needed: int | None = None) -> str:
    """Our top-1 difference (points: ``ours`` with its 95% interval ``low``–``high``) against a document's
    difference ``paper``. The partition, in the order it is tested:

    1. any of ours NaN: ``"not measured"``.
    2. ``paper`` NaN (our own question, no document to compare): ``"higher"`` / ``"lower"`` when the interval
       excludes 0, else ``"no difference resolved"``.
    3. ``|paper| ≤ NO_CHANGE_POINTS`` (the document claims no change, read as no loss beyond
       :data:`NO_LOSS_POINTS`): ``"reproduced"`` when the interval excludes such a loss (``low ≥ −1``),
       ``"contradicted"`` when it resolves one (``high < −1``), else ``"cannot tell"``.
    4. the interval contains ``paper`` and excludes 0: ``"reproduced"``.
    5. the interval contains both ``paper`` and 0: ``"cannot tell"``.
    6. ``paper`` outside, the interval contains 0: ``"contradicted in size"``.
    7. ``paper`` outside, the interval excludes 0 on ``paper``'s side: ``"direction reproduced, smaller"`` (our
       point nearer 0 than ``paper``) or ``"direction reproduced, larger"``.
    8. ``paper`` outside, the interval excludes 0 on the other side: ``"contradicted"``.

    Every "cannot tell" and "no difference resolved" adds ``"(N seeds would resolve it)"`` (``"(100 or more …)"`` at
    :data:`MOST_SEEDS`, where the estimate stops) when the caller knows
    ``seeds_needed``.
    """
    if any(math.isnan(value) for value in (ours, low, high)):
        return NOT_MEASURED
    if not seeds_needed:
        unresolved = ""
    elif seeds_needed >= MOST_SEEDS:  # the search stops there: the true number may be any larger one
        unresolved = f" ({MOST_SEEDS} or more seeds would resolve it)"
    else:
        unresolved = f" ({seeds_needed} seeds would resolve it)"
    has_zero = low <= 0 <= high
    if math.isnan(paper):
        return "no difference resolved" + unresolved if has_zero else ("higher" if low > 0 else "lower")
    if abs(paper) <= NO_CHANGE_POINTS:
        if low >= -NO_LOSS_POINTS:
            return "reproduced"
        return "contradicted" if high < -NO_LOSS_POINTS else "cannot tell" + unresolved
    if low <= paper <= high:
        return "cannot tell" + unresolved if has_zero else "reproduced"
    if has_zero:
        return "contradicted in size"
    if (low > 0) == (paper > 0):
        return "direction reproduced, " + ("smaller" if abs(ours) < abs(paper) else "larger")
    return "contradicted"
