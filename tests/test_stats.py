"""dnas/stats.py against independent computations: the t quantile from a printed table, the
paired t statistic by its formula, and its two-sided p-value by integrating Student's t density
with numpy (not scipy, which the module uses)."""

import math

import numpy as np
import pytest

from dnas import stats

# Two-sided 95% critical values of Student's t (any statistics textbook's table).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262}


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom, by the trapezoid rule."""
    x = np.linspace(abs(t), abs(t) + 400.0, 2_000_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
    return 2 * float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("values", [[1, 2, 3, 4, 5], [94.37, 93.76, 94.02], [0.5, 0.7]])
def test_describe_is_the_student_t_interval(values):
    d = stats.describe(values)
    n, mean = len(values), sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975[n - 1] * std / math.sqrt(n)
    assert d.n == n and d.mean == pytest.approx(mean) and d.std == pytest.approx(std)
    assert d.ci_low == pytest.approx(mean - half, rel=1e-3)
    assert d.ci_high == pytest.approx(mean + half, rel=1e-3)
    wider = stats.describe(values, confidence=0.99)
    assert wider.ci_low < d.ci_low and wider.ci_high > d.ci_high


def test_paired_comparison_is_the_paired_t_test():
    searched = [94.1, 93.5, 94.3, 93.9, 93.2]
    random = [93.0, 93.4, 92.8, 93.6, 93.3]
    p = stats.paired(searched, random)
    d = np.subtract(searched, random)
    sd = math.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1))
    t = d.mean() / (sd / math.sqrt(len(d)))
    assert p.n == 5 and p.mean_diff == pytest.approx(d.mean())
    assert p.t == pytest.approx(t)
    assert p.p_value == pytest.approx(t_two_sided_p(t, 4), rel=1e-4)
    half = T975[4] * sd / math.sqrt(5)
    assert (p.ci_low, p.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-3)
    # Swapping the sides flips the difference and keeps the p-value.
    q = stats.paired(random, searched)
    assert q.mean_diff == pytest.approx(-p.mean_diff) and q.p_value == pytest.approx(p.p_value)


def test_one_seed_or_no_spread_has_no_interval_or_test():
    d = stats.describe([93.5])
    assert d.n == 1 and d.mean == 93.5 and all(math.isnan(v) for v in d[2:])
    p = stats.paired([94.0], [93.0])
    assert p.mean_diff == 1.0 and all(math.isnan(v) for v in (p.ci_low, p.t, p.p_value))
    p = stats.paired([94.0, 95.0], [93.0, 94.0])  # every pair differs by exactly 1
    assert p.mean_diff == 1.0 and p.ci_low == p.ci_high == 1.0 and math.isnan(p.p_value)
    # Equal up to rounding (accuracies of 360 test images as percent): no p of 3e-15.
    a, b = [100 * 353 / 360, 100 * 354 / 360], [100 * 358 / 360, 100 * 359 / 360]
    assert a[0] - b[0] != a[1] - b[1]
    p = stats.paired(a, b)
    assert p.mean_diff == pytest.approx(-5 / 3.6) and math.isnan(p.p_value) and math.isnan(p.t)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        stats.describe([93.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        stats.describe([])
    with pytest.raises(ValueError, match="3 values against 2; pair them by seed"):
        stats.paired([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="confidence"):
        stats.describe([1, 2], confidence=95)
