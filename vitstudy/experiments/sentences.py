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
