"""The small idioms every notebook's "What this run shows" is written with: a measured value with its 95% interval
(or why it was not measured), a number or "not measured", and sentences joined into one Markdown paragraph.

Every experiment module's ``findings(...)`` builds its sentences from its own tables with these, so a NaN (a device
that is absent, a smoke-scale table) reads the same everywhere and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .. import bench
from ..formatting import NOT_MEASURED


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA: a number this run did not produce."""
    try:
        return value is None or bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return True


def measured(row: Mapping[str, Any], prefix: str = "", name: str = "speedup", unit: str = "×") -> str:
    """``row[prefix + name]`` with its ``_low`` / ``_high`` interval (:func:`vitstudy.bench.format_interval`); a
    missing value reads "not measured", with the row's ``note`` when that says why (e.g. no CUDA device)."""
    value = row.get(prefix + name, math.nan)
    if is_missing(value):
        note = str(row.get("note") or "")
        return note if note.startswith(NOT_MEASURED) else NOT_MEASURED
    low, high = (float(row.get(f"{prefix}{name}_{end}", math.nan)) for end in ("low", "high"))
    return bench.format_interval(float(value), low, high, unit=unit)


def number(value: Any, digits: int = 2, unit: str = "") -> str:
    """``value`` with ``digits`` decimals and ``unit``, or "not measured"."""
    return NOT_MEASURED if is_missing(value) else f"{float(value):.{digits}f}{unit}"


def paragraph(sentences: Iterable[str]) -> str:
    """The non-empty sentences as one Markdown paragraph."""
    return " ".join(s.strip() for s in sentences if s and s.strip())


def machine_use(row: Mapping[str, Any], prefix: str = "", dtype: str = "fp32") -> str:
    """How close the baseline runs to the machine, from a speed row's ``bench.machine_use`` columns (``prefix``:
    a table's model prefix, ``"bf16_"`` for the bf16 baseline): achieved GFLOP/s, the peak, their quotient."""
    achieved, peak = row.get(f"{prefix}baseline_gflop_per_s"), row.get(f"{prefix}peak_gflop_per_s")
    if is_missing(achieved) or is_missing(peak):
        return f"the baseline's share of the {dtype} peak: {NOT_MEASURED}"
    share = float(achieved) / float(peak)
    return (
        f"the baseline runs at {float(achieved):.1f} GFLOP/s, {share:.0%} of this machine's {dtype} matmul peak "
        f"({float(peak):.1f} GFLOP/s)"
    )


def points(gain: Any, low: Any = math.nan, high: Any = math.nan) -> str:
    """A top-1 difference in words, its sign as a verb: ``"gains 1.29 points (0.79–1.80)"``, ``"loses 0.25 points
    (-0.16–0.66)"`` (the interval turned with the verb, so it reads as the amount gained or lost), ``"keeps top-1"``
    at exactly 0; ``gain`` is new minus old, "not measured" when missing."""
    if is_missing(gain):
        return NOT_MEASURED
    gain = float(gain)
    if gain == 0:
        return "keeps top-1"
    verb, sign = ("gains", 1.0) if gain > 0 else ("loses", -1.0)
    ends = sorted(sign * float(end) for end in (low, high)) if not (is_missing(low) or is_missing(high)) else None
    interval = f" ({ends[0]:.2f}–{ends[1]:.2f})" if ends else ""
    return f"{verb} {abs(gain):.2f} points{interval}"


def percent_cost(cost_pct: Any, low: Any = math.nan, high: Any = math.nan) -> str:
    """A time change in percent, its sign as a verb: ``"costs 9.9 % (9.2–10.6)"`` for more time, ``"saves 4.0 %"``
    for less; "not measured" when missing."""
    if is_missing(cost_pct):
        return NOT_MEASURED
    cost = float(cost_pct)
    verb, sign = ("costs", 1.0) if cost >= 0 else ("saves", -1.0)
    ends = sorted(sign * float(end) for end in (low, high)) if not (is_missing(low) or is_missing(high)) else None
    interval = f" ({ends[0]:.1f}–{ends[1]:.1f})" if ends else ""
    return f"{verb} {abs(cost):.1f} %{interval}"


def judged(verdict: Any, trust: str) -> str:
    """A speed verdict as a closing may state it: ``trust`` (:func:`vitstudy.bench.table_trust`, non-empty when
    the table's A/A control failed) replaces any verdict, so no target reads as met on a biased protocol."""
    if trust:
        return trust
    return verdict if isinstance(verdict, str) and verdict else NOT_MEASURED


def share_of_peak(row: Mapping[str, Any], prefix: str = "") -> str:
    """``"91 % of this machine's fp32 matmul peak"``: how close a speed row's baseline runs, or "not measured"."""
    achieved, peak = row.get(f"{prefix}baseline_gflop_per_s"), row.get(f"{prefix}peak_gflop_per_s")
    if is_missing(achieved) or is_missing(peak):
        return "an unmeasured share of this machine's fp32 matmul peak"
    return f"{float(achieved) / float(peak):.0%} of this machine's fp32 matmul peak"
