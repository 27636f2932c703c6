"""Paired differences over seeds: the 95 % paired t interval of (row − reference) and the seeds that would resolve
it. Notebook 08 (rows trained from scratch) and notebook 11 (rules fine-tuned from the baseline) pair every arm with
its reference by seed; both read their differences and verdicts through these two functions.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from ..verdicts import MOST_SEEDS, NO_LOSS_POINTS


def paired_difference(values: pd.Series, reference: pd.Series) -> dict[str, float]:
    """Mean of (values − reference) over the seeds (index) both have, with its 95 % paired t interval
    (``scipy.stats.ttest_rel``) and half-width; fewer than 2 pairs: no interval."""
    pairs = pd.concat([values, reference], axis=1).dropna()
    n = len(pairs)
    mean = float((pairs.iloc[:, 0] - pairs.iloc[:, 1]).mean()) if n else math.nan
    if n < 2:
        return {"diff": mean, "diff_low": math.nan, "diff_high": math.nan, "resolvable": math.nan, "pairs": n}
    low, high = stats.ttest_rel(pairs.iloc[:, 0], pairs.iloc[:, 1]).confidence_interval()
    return {
        "diff": mean,
        "diff_low": float(low),
        "diff_high": float(high),
        "resolvable": float(high) - mean,
        "pairs": n,
    }


def seeds_to_resolve(paired: dict[str, float], direction: str, most: int = MOST_SEEDS) -> float:
    """How many seeds would turn "cannot tell" into a verdict if the spread of the paired differences and their
    mean stayed as measured: the smallest n with t(n−1)·s/√n below |mean| (below 1 point + mean for "keeps
    top-1", ``direction="none"``). NaN with fewer than 2 pairs or a mean of zero; ``most``+ is reported as
    ``most``."""
    n, half = paired["pairs"], paired["resolvable"]
    if n < 2 or math.isnan(half):
        return math.nan
    spread = half * math.sqrt(n) / stats.t.ppf(0.975, n - 1)
    goal = NO_LOSS_POINTS + paired["diff"] if direction == "none" else abs(paired["diff"])
    if goal <= 0:
        return math.nan
    for seeds in range(2, most + 1):
        if stats.t.ppf(0.975, seeds - 1) * spread / math.sqrt(seeds) < goal:
            return float(seeds)
    return float(most)
