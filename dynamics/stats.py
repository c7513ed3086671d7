"""Intervals and verdicts: the one place where every claim's statistics are computed.

A measurement is an :class:`Estimate`: a point value with a 95% (or ``level``) confidence interval
over *independent* units (seeds, runs), its ``n``, the method that produced it and the per-unit spread
``sd`` from which the minimum detectable effect and the number of seeds that would decide a claim are
derived.  The methods:

* ``t_interval``: Student t on the mean, ``mean ± t_{1-a/2, n-1} s / sqrt(n)`` (n - 1 degrees of freedom);
* ``paired``: the same on per-seed differences ``a_i - b_i`` when two arms share seeds;
* ``welch``: two independent arms, Welch–Satterthwaite degrees of freedom;
* ``wilson``: a rate ``k / n`` (Wilson 1927 score interval; it stays inside [0, 1] and is sensible at
  k = 0 or k = n);
* ``newcombe``: a difference of two independent rates ``k1/n1 - k2/n2`` (Newcombe 1998, method 10: the
  two Wilson intervals combined by square-and-add);
* ``bootstrap``: a statistic of the whole sample (a fitted slope, an arg-max), percentile interval over
  resamples of the units, from a seeded generator so the interval is reproducible;
* ``exact``: a deterministic quantity (an exact rank, a closed form evaluated in float64) with no
  sampling noise; its interval is the point.

One meaning for n = 1 (or any sample too small for its method): no interval, ``low = high = nan``, and
the verdict is INCONCLUSIVE, never a zero-width PASS.

:func:`verdict` compares the interval with a :class:`Band` fixed before the run: PASS when the
interval lies inside the band, FAIL when it lies wholly outside, INCONCLUSIVE when it straddles an edge.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import stats as _st

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
POWER = 0.8  # power at which the minimum detectable effect and the seeds needed are quoted
MAX_SEEDS = 100_000  # beyond this a claim is "undecidable by more seeds" and reported as such


@dataclasses.dataclass(frozen=True)
class Band:
    """The prediction: an interval ``[low, high]`` (either end may be infinite), fixed in advance.

    ``Band.above(0)`` is a sign ("> 0"), ``Band.between(0.8, 1.2)`` a tolerance band.
    """

    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self):
        if not (self.low <= self.high) or math.isnan(self.low) or math.isnan(self.high):
            raise ValueError(f"band needs low <= high, got [{self.low}, {self.high}]")

    @classmethod
    def above(cls, x: float) -> Band:
        return cls(float(x), math.inf)

    @classmethod
    def below(cls, x: float) -> Band:
        return cls(-math.inf, float(x))

    @classmethod
    def between(cls, lo: float, hi: float) -> Band:
        return cls(float(lo), float(hi))

    @classmethod
    def around(cls, centre: float, rel: float) -> Band:
        """``centre ± rel |centre|``: a relative tolerance written as a band."""
        half = abs(centre) * rel
        return cls(centre - half, centre + half)

    def text(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "any"
        if math.isinf(self.high):  # the edges belong to the band (see verdict), hence >= and <=
            return f">= {self.low:g}"
        if math.isinf(self.low):
            return f"<= {self.high:g}"
        return f"in [{self.low:g}, {self.high:g}]"

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def distance(self, x: float) -> float:
        """How far ``x`` lies from the nearest edge (the effect an experiment must resolve)."""
        if not math.isfinite(x):
            return math.nan
        return min(abs(x - e) for e in (self.low, self.high) if math.isfinite(e))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A measured value with its interval over ``n`` independent units.

    ``sd`` is the spread of one unit (a seed's value, or its equivalent for Wilson and bootstrap),
    so the half-width at another n is about ``q * sd / sqrt(n)``.
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    sd: float = math.nan
    level: float = 0.95
    excluded: int = 0  # units dropped as non-finite (diverged runs); reported beside n

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def mde(self, power: float = POWER) -> float:
        """Minimum detectable effect at this n: ``(q_{1-a/2} + q_power) sd / sqrt(n)``."""
        if self.method == "exact":
            return 0.0
        return _mde(self.sd, self.n, self.level, power, self.method)

    def seeds_needed(self, band: Band, power: float = POWER) -> int | None:
        """Seeds at which an effect of the observed distance to the band's nearest edge is detected
        with ``power``, assuming the per-seed spread stays ``sd``.  None when that cannot be computed
        (no spread, estimate on the edge) or is beyond ``MAX_SEEDS``."""
        d = band.distance(self.value)
        if self.method == "exact" or not (math.isfinite(self.sd) and self.sd > 0 and d > 0):
            return None
        for n in _candidate_ns():
            if _mde(self.sd, n, self.level, power, self.method) <= d:
                return max(n, self.n)
        return None


def _candidate_ns():
    n = 2
    while n <= MAX_SEEDS:
        yield n
        n = n + 1 if n < 64 else int(n * 1.1)


def _mde(sd: float, n: int, level: float, power: float, method: str) -> float:
    if not (math.isfinite(sd) and n >= 2):
        return math.inf
    if method in ("t", "paired-t", "welch"):
        df = n - 1
        q = _st.t.ppf(1 - (1 - level) / 2, df) + _st.t.ppf(power, df)
    else:
        q = _st.norm.ppf(1 - (1 - level) / 2) + _st.norm.ppf(power)
    return float(q * sd / math.sqrt(n))


def _finite(x) -> tuple[np.ndarray, int]:
    a = np.asarray(x, dtype=float).ravel()
    keep = np.isfinite(a)
    return a[keep], int((~keep).sum())


def t_interval(x, level: float = 0.95) -> Estimate:
    """Student-t interval on the mean of independent values (non-finite values are excluded and
    counted in ``excluded``).  n < 2 gives no interval."""
    a, dropped = _finite(x)
    n = len(a)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "t", level=level, excluded=dropped)
    m = float(a.mean())
    if n < 2:
        return Estimate(m, math.nan, math.nan, 1, "t", level=level, excluded=dropped)
    s = float(a.std(ddof=1))
    half = float(_st.t.ppf(1 - (1 - level) / 2, n - 1)) * s / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, "t", s, level, dropped)


def t_from_summary(mean: float, se: float, n: int, level: float = 0.95) -> Estimate:
    """Student-t interval from a saved mean, standard error and n (when per-unit values were not kept):
    ``mean ± t_{1-a/2, n-1} se``.  n < 2 or a non-finite se gives no interval."""
    m, se = float(mean), float(se)
    if n < 2 or not math.isfinite(se):
        return Estimate(m, math.nan, math.nan, int(n), "t", level=level)
    half = float(_st.t.ppf(1 - (1 - level) / 2, n - 1)) * se
    return Estimate(m, m - half, m + half, int(n), "t", se * math.sqrt(n), level)


def paired(a, b, level: float = 0.95) -> Estimate:
    """Paired-t interval on ``mean(a_i - b_i)`` for two arms that share seeds (pairs with a
    non-finite member are excluded)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arms need equal lengths, got {a.shape} and {b.shape}")
    return dataclasses.replace(t_interval(a - b, level), method="paired-t")


def welch(a, b, level: float = 0.95) -> Estimate:
    """Interval on ``mean(a) - mean(b)`` for independent arms, Welch–Satterthwaite df."""
    a, da = _finite(a)
    b, db = _finite(b)
    n1, n2 = len(a), len(b)
    diff = float(a.mean() - b.mean()) if n1 and n2 else math.nan
    if n1 < 2 or n2 < 2:
        return Estimate(diff, math.nan, math.nan, min(n1, n2), "welch", level=level, excluded=da + db)
    v1, v2 = a.var(ddof=1) / n1, b.var(ddof=1) / n2
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if se > 0 else n1 + n2 - 2
    half = float(_st.t.ppf(1 - (1 - level) / 2, df)) * se
    n = min(n1, n2)
    return Estimate(diff, diff - half, diff + half, n, "welch", se * math.sqrt(n), level, da + db)


def wilson(successes: int, n: int, level: float = 0.95) -> Estimate:
    """Wilson score interval for a rate ``successes / n``."""
    if n < 0 or not (0 <= successes <= n):
        raise ValueError(f"wilson needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson", level=level)
    z = float(_st.norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # per-unit spread for the power calculation; at p = 0 or 1 use the interval's own width
    sd = math.sqrt(p * (1 - p)) if 0 < p < 1 else half * math.sqrt(n) / z
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson", sd, level)


def newcombe(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Estimate:
    """Interval on ``k1/n1 - k2/n2`` for two independent rates (Newcombe 1998, Stat. Med. 17:873, method
    10): with Wilson limits (l_i, u_i) of each rate, ``d - sqrt((p1-l1)^2 + (u2-p2)^2)`` to
    ``d + sqrt((u1-p1)^2 + (p2-l2)^2)``.  An empty arm gives no interval."""
    a, b = wilson(k1, n1, level), wilson(k2, n2, level)
    if not (a.has_interval and b.has_interval):
        return Estimate(a.value - b.value, math.nan, math.nan, min(n1, n2), "newcombe", level=level)
    d = a.value - b.value
    low = d - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    n = min(n1, n2)
    return Estimate(d, low, high, n, "newcombe", math.sqrt(a.sd**2 + b.sd**2), level)


def bootstrap(data, statistic: Callable[[np.ndarray], float], *, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95, min_n: int = 3) -> Estimate:
    """Percentile bootstrap of ``statistic`` over units: rows of ``data`` (axis 0, e.g. seeds) are
    resampled with replacement from ``numpy.random.default_rng(SeedSequence(seed))``.

    ``statistic(sample)`` receives an array shaped like ``data``.  Resamples whose statistic is not
    finite are dropped (counted in ``excluded``).  Fewer than ``min_n`` units gives no interval.
    """
    data = np.asarray(data, dtype=float)
    n = data.shape[0]
    value = float(statistic(data)) if n else math.nan
    if n < min_n:
        return Estimate(value, math.nan, math.nan, n, "bootstrap", level=level)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    idx = rng.integers(0, n, size=(n_boot, n))
    reps = np.array([statistic(data[i]) for i in idx], dtype=float)
    ok = np.isfinite(reps)
    if ok.sum() < n_boot // 2:
        return Estimate(value, math.nan, math.nan, n, "bootstrap", level=level, excluded=int((~ok).sum()))
    lo, hi = np.quantile(reps[ok], [(1 - level) / 2, 1 - (1 - level) / 2])
    sd = float(reps[ok].std(ddof=1)) * math.sqrt(n)
    return Estimate(value, float(lo), float(hi), n, "bootstrap", sd, level, int((~ok).sum()))


def exact(value: float) -> Estimate:
    """A deterministic quantity (no sampling noise): its interval is the point itself."""
    v = float(value)
    return Estimate(v, v, v, 1, "exact")


def verdict(est: Estimate, band: Band) -> Verdict:
    """PASS if the interval lies inside ``band``, FAIL if wholly outside, else INCONCLUSIVE.

    No interval (n too small, all units diverged, a non-finite value) is INCONCLUSIVE, and so is a
    sampled interval that rests on an edge of the band; an ``exact`` value on the edge belongs to the band.
    """
    if not (math.isfinite(est.value) and est.has_interval):
        return "INCONCLUSIVE"
    if est.method != "exact" and (est.low == band.low or est.high == band.high):
        return "INCONCLUSIVE"  # a sampled interval resting on the edge (e.g. every seed exactly 0) decides nothing
    if est.low >= band.low and est.high <= band.high:
        return "PASS"
    if est.high < band.low or est.low > band.high:
        return "FAIL"
    return "INCONCLUSIVE"


def spearman_by_unit(df, unit: str, series: list[str], x: str, y: str, min_points: int = 2) -> np.ndarray:
    """Per independent unit (a seed): the mean over ``series`` groups of Spearman's rho between ``x`` and
    ``y`` (groups with fewer than ``min_points`` rows or one ``x`` value are skipped).  Feed the result
    to :func:`t_interval`: a trend claimed across many series becomes one number per seed, so the
    interval is over seeds, not over series that share a seed's noise.  NaN for a unit with no series.
    """
    out = []
    for _, by_unit in df.groupby(unit, sort=True):
        rhos = []
        for _, s in by_unit.groupby(series):
            if len(s) >= min_points and s[x].nunique() > 1 and s[y].nunique() > 1:
                rhos.append(_st.spearmanr(s[x], s[y]).statistic)
        rhos = [r for r in rhos if np.isfinite(r)]
        out.append(float(np.mean(rhos)) if rhos else math.nan)
    return np.array(out)


def sign_resolved(mean, std, count, level: float = 0.95) -> np.ndarray:
    """(cells,) bool: count >= 2 and the Student-t interval ``mean ± t_{1-a/2, count-1} std / sqrt(count)``
    excludes 0 (the cell's sign is resolved).  The per-cell rule of :func:`sign_agreement`, for pairing
    cells across arms."""
    mean, std, count = (np.asarray(a, dtype=float) for a in (mean, std, count))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = _st.t.ppf(1 - (1 - level) / 2, count - 1) * std / np.sqrt(count)
    return (count >= 2) & (np.abs(mean) > half)


def sign_agreement(mean, std, count, predicted, level: float = 0.95) -> tuple[Estimate, int, int]:
    """How often a measured sign matches a predicted one, over the cells whose sign is resolved.

    Each cell holds ``count`` independent values with sample ``mean`` and ``std``; it is resolved when
    count >= 2 and its Student-t interval ``mean ± t_{1-a/2, count-1} std / sqrt(count)`` excludes 0.
    Returns the Wilson interval of the agreeing fraction among resolved cells, the number agreeing and
    the number resolved.  All arguments are (cells,) arrays or Series of equal length.
    """
    mean, predicted = np.asarray(mean, dtype=float), np.asarray(predicted, dtype=float)
    resolved = sign_resolved(mean, std, count, level)
    agree = int((np.sign(mean[resolved]) == np.sign(predicted[resolved])).sum())
    n = int(resolved.sum())
    return wilson(agree, n, level), agree, n
