"""The statistics of a study's result tables: a group's mean, standard deviation and confidence
interval over seeds, and the paired comparison of a method with the random genotypes of the same
seeds (Li & Talwalkar 2019; Yang et al. 2020: NAS results are credible only against a random
baseline under the same protocol).

- `describe(values)`: n, mean, the sample standard deviation (n - 1) and the two-sided Student-t
  interval of the mean, `mean +- t_{(1+c)/2, n-1} s / sqrt(n)`.
- `paired(a, b)`: the per-seed differences a - b, their mean and t interval, and the paired
  t-test (`scipy.stats.ttest_rel`, two-sided) of "no difference".

With one value (or one pair) the spread and the interval are undefined: NaN, which the tables
print as '-'. NaN inputs (a failed trial) are refused: drop the trial, and the table says how
many seeds each row has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Description(NamedTuple):
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n = 1
    ci_low: float
    ci_high: float


class Paired(NamedTuple):
    n: int  # pairs
    mean_diff: float  # mean of a - b
    ci_low: float
    ci_high: float
    t: float
    p_value: float  # two-sided paired t-test of mean_diff = 0; NaN for n = 1 or equal pairs


def _values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what}: expected a non-empty list of numbers, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {x.tolist()} has a value that is not finite (a failed trial?)")
    return x


def _interval(x: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(mean, std, low, high) of the Student-t interval of the mean of x."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    from scipy import stats  # here: importing scipy.stats cost every `dnas` process 1.6 s

    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return mean, std, mean - half, mean + half


def describe(values: Sequence[float], confidence: float = 0.95) -> Description:
    x = _values(values, "describe")
    mean, std, low, high = _interval(x, confidence)
    return Description(int(x.size), mean, std, low, high)


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """a against b, pair by pair (the same seeds, in the same order)."""
    x, y = _values(a, "paired a"), _values(b, "paired b")
    if x.shape != y.shape:
        raise ValueError(f"paired: {x.size} values against {y.size}; pair them by seed")
    d = x - y
    mean, _, low, high = _interval(d, confidence)
    # No spread (to float rounding: 100 * 353 / 360 - 100 * 358 / 360 and 100 * 354 / 360 -
    # 100 * 359 / 360 differ in the last bits): the t statistic is undefined, not huge.
    if d.size < 2 or np.ptp(d) <= 1e-9 * max(1.0, float(np.abs(d).max())):
        return Paired(int(d.size), mean, low, high, math.nan, math.nan)
    from scipy import stats

    test = stats.ttest_rel(x, y)
    return Paired(int(d.size), mean, low, high, float(test.statistic), float(test.pvalue))


__all__ = ["Description", "Paired", "describe", "paired"]
