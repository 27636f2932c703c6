"""The one bootstrap: a statistic of one sample, or of several paired samples, with its 95% percentile interval.

Every interval of the study that is not a t interval over seeds comes from :func:`bootstrap_interval`
(``scipy.stats.bootstrap``, percentile method, a seeded ``numpy`` generator): the median of a timing's rounds, the
paired ratio of two arms' per-image times, the paired top-1 difference of two models on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..config import check

CONFIDENCE = 0.95
RESAMPLES = 2000


def bootstrap_interval(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(*samples)`` and its 95% percentile-bootstrap interval: ``(value, low, high)``.

    Several samples are paired: they are resampled together (element ``i`` of each stays one unit, an image or a
    round), so ``statistic`` sees matched rows; it must take ``axis`` like numpy's reductions. NaN throughout when
    there is no element or an element is NaN; one element gives its value as the interval (every resample of one
    element is that element, and scipy refuses a sample of one)."""
    arrays = [np.asarray(sample, dtype=np.float64) for sample in samples]
    check(
        len(arrays) > 0 and all(a.ndim == 1 and a.shape == arrays[0].shape for a in arrays),
        "samples",
        [a.shape for a in arrays],
        "one or more [N] arrays of the same length",
    )
    if len(arrays[0]) == 0 or any(np.isnan(a).any() for a in arrays):
        return math.nan, math.nan, math.nan
    value = float(statistic(*arrays))
    if len(arrays[0]) == 1:
        return value, value, value
    interval = stats.bootstrap(
        tuple(arrays),
        statistic,
        paired=len(arrays) > 1,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return value, float(interval.low), float(interval.high)


def median_interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` and its 95% bootstrap interval: ``(median, low, high)``."""
    return bootstrap_interval((values,), np.median, resamples, seed)


def paired_ratio_interval(
    baseline: np.ndarray,
    arm: np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(baseline) / statistic(arm)`` over the same units (images) and its 95% bootstrap interval,
    resampling units with both their values."""

    def ratio(b: np.ndarray, a: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(b, axis=axis) / statistic(a, axis=axis)

    return bootstrap_interval((baseline, arm), ratio, resamples, seed)


def paired_difference_interval(
    first: np.ndarray, second: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``first - second`` over the same units (images) and its 95% bootstrap interval (resampling a unit's
    difference pairs the two arms on it)."""
    difference = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    return bootstrap_interval((difference,), np.mean, resamples, seed)


def interval_inside(low: float, high: float, band: tuple[float, float]) -> bool:
    """Whether the interval ``[low, high]`` lies inside ``band`` (ends included); never for a NaN end."""
    return band[0] <= low and high <= band[1]
