"""Small-sample statistics for seed sweeps: Student-t quantiles, mean with a confidence interval, and a
paired t-test over seeds. Pure Python (``math`` only), so no SciPy is needed.

The t-distribution CDF uses the regularised incomplete beta function, evaluated by its continued fraction
(modified Lentz), accurate to ~1e-12 for the degrees of freedom of a seed sweep; quantiles are found by
bisection on the CDF.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Sequence

__all__ = ['t_cdf', 't_ppf', 'MeanCI', 'mean_ci', 'PairedTest', 'paired_t_test']


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes' ``betacf``)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _check_df(df: float) -> None:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not df > 0:
        raise ValueError(f'degrees of freedom must be positive, got {df!r}')


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (e.g. ``t_ppf(0.975, 7) = 2.3646``).

    Raises:
        ValueError: If ``p`` is not in (0, 1) or ``df`` is not positive.
    """
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p!r}')
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with a two-sided t confidence interval (``None`` bounds when ``n < 2``).

    Attributes:
        n: Number of values.
        mean: Their mean.
        sd: Sample standard deviation (``n - 1`` denominator; ``None`` when ``n < 2``).
        half_width: ``t_{(1+conf)/2, n-1} * sd / sqrt(n)``.
        low: ``mean - half_width``.
        high: ``mean + half_width``.
        conf: Confidence level.
    """

    n: int
    mean: float
    sd: Optional[float]
    half_width: Optional[float]
    low: Optional[float]
    high: Optional[float]
    conf: float

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _finite(values: Sequence[float], what: str) -> list:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f'{what}: no values')
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f'{what}: non-finite value(s) {bad}')
    return out


def mean_ci(values: Sequence[float], conf: float = 0.95) -> MeanCI:
    """Mean and two-sided t confidence interval of ``values`` (independent runs, e.g. training seeds).

    Raises:
        ValueError: If ``values`` is empty or holds a non-finite value, or ``conf`` is not in (0, 1).
    """
    if not 0.0 < conf < 1.0:
        raise ValueError(f'conf must be in (0, 1), got {conf!r}')
    xs = _finite(values, 'mean_ci')
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return MeanCI(n, mean, None, None, None, None, conf)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_ppf(0.5 + conf / 2.0, n - 1) * sd / math.sqrt(n)
    return MeanCI(n, mean, sd, half, mean - half, mean + half, conf)


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of ``a - b`` over the keys (seeds) both have.

    Attributes:
        n: Number of pairs.
        mean_diff: Mean of ``a - b``.
        ci: :class:`MeanCI` of the differences.
        t: t statistic (``None`` when ``n < 2`` or all differences are equal).
        p_value: Two-sided p-value (``None`` when ``t`` is).
        wins: Pairs with ``a > b``.
        losses: Pairs with ``a < b``.
        keys: The paired keys, sorted.
    """

    n: int
    mean_diff: float
    ci: MeanCI
    t: Optional[float]
    p_value: Optional[float]
    wins: int
    losses: int
    keys: tuple

    def as_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d['keys'] = list(self.keys)
        return d


def paired_t_test(a: Mapping, b: Mapping, conf: float = 0.95) -> PairedTest:
    """Paired two-sided t-test of ``a[k] - b[k]`` over the keys in both (runs paired by seed).

    Raises:
        ValueError: If the two share no key, or a value is not finite.
    """
    keys = tuple(sorted(set(a) & set(b)))
    if not keys:
        raise ValueError(f'paired_t_test: no common keys (a has {sorted(a)}, b has {sorted(b)})')
    diffs = _finite([float(a[k]) - float(b[k]) for k in keys], 'paired_t_test')
    ci = mean_ci(diffs, conf)
    t = p = None
    if ci.n >= 2 and ci.sd:
        t = ci.mean / (ci.sd / math.sqrt(ci.n))
        df = ci.n - 1
        p = min(1.0, _betainc(df / 2.0, 0.5, df / (df + t * t)))  # = 2 * P(T > |t|), no cancellation
    return PairedTest(ci.n, ci.mean, ci, t, p, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), keys)
