"""How text writes a measured number, once for every table note, notebook finding and RESULTS.md; no torch, so the
cheap ``python -m vitstudy results`` can use it."""

from __future__ import annotations

import math

NOT_MEASURED = "not measured"  # a NaN measurement (an absent device, a setting not timed) reads this in text


def format_interval(
    value: float | None, low: float | None = None, high: float | None = None, digits: int = 2, unit: str = ""
) -> str:
    """``"1.91× (1.83–1.92)"``: a measured value with its 95% interval; without an interval only the value; NaN
    (or None) reads ``"not measured"``."""
    if value is None or math.isnan(value):
        return NOT_MEASURED
    if low is None or high is None:
        return f"{value:.{digits}f}{unit}"
    return f"{value:.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"
