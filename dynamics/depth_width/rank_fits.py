"""Fits on exact separation ranks: the exponent of rank in d_x per regime, and the crossover depth.

Levine, Wies, Sharir, Bata & Shashua (NeurIPS 2020; arXiv 2006.12467 v3) bound the separation rank
of the L-layer, width-d_x linear self-attention network in two regimes:

* shallow, L < log_3 d_x:  ln sep = Theta(3^L ln d_x), so at fixed L the rank is a power of d_x
  whose exponent alpha_L = d ln r / d ln d_x grows like 3^L;
* deep, L > log_3 d_x:  ln sep = Theta(L d_x), so at fixed L, ln r is linear in d_x with a slope
  beta_L of order L (at most L ln 3 in the recalled upper bound, reference notes Sec. 2 [R]).

Increments Delta_L = ln r(L) - ln r(L-1) grow about 3x per layer in the shallow regime and stay
constant (about d_x ln 3) in the deep one, so rho_L = Delta_{L+1}/Delta_L runs from 3 down to 1.
The crossover depth is where rho_L passes the geometric midpoint sqrt(3) of the two asymptotes (a
criterion fixed by the theory's two limits, not by the data); it is located by a least-squares fit

    ln rho_L = a + b L + c log_3 d_x        =>   L*(d_x) = o + s log_3 d_x,
    s = -c / b,   o = (ln(3)/2 - a) / b,

which the paper predicts to have s = 1 (threshold log_3 d_x).  Ranks are exact, so the only
uncertainty of a fit is which widths it rests on: intervals are a seeded bootstrap over the widths
(each width carries all its rows), i.e. how much the answer moves when the set of widths changes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats as S
from . import theory

MID = 0.5 * math.log(3.0)  # ln sqrt(3): geometric midpoint of the two regimes' increment ratios 3 and 1


def exact_family(main: pd.DataFrame) -> pd.DataFrame:
    """Exact main-run rows of the H = 1, no-residual networks (the family the fits use)."""
    m = main[(main.status == "exact") & (main.heads == 1) & (~main.residual.astype(bool))]
    return m.assign(ln_rank=np.log(m["rank"].astype(float)))


def regime_points(ex: pd.DataFrame, N: int, L: int, regime: str) -> pd.DataFrame:
    """Rows of one (N, L) on one side of d_x = 3^L: shallow d_x > 3^L, deep d_x < 3^L."""
    g = ex[(ex.positions == N) & (ex.L == L)].sort_values("d_x")
    return g[g.d_x > 3**L] if regime == "shallow" else g[g.d_x < 3**L]


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(np.unique(x)) < 2:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def width_exponent(ex: pd.DataFrame, N: int, L: int, regime: str, seed: int = 0) -> tuple[S.Estimate, pd.DataFrame]:
    """Shallow: alpha = slope of ln r on ln d_x; deep: beta = slope of ln r on d_x; bootstrap over widths."""
    g = regime_points(ex, N, L, regime)
    x = np.log(g.d_x.to_numpy(float)) if regime == "shallow" else g.d_x.to_numpy(float)
    data = np.column_stack([x, g.ln_rank.to_numpy(float)]) if len(g) else np.zeros((0, 2))
    est = S.bootstrap(data, lambda a: _slope(a[:, 0], a[:, 1]), seed=seed)
    return est, g


def _crossover_coeffs(rows: np.ndarray) -> tuple[float, float]:
    """(slope s, offset o) of L*(d) from rows (L, log3 d, ln rho); NaN when the design is degenerate."""
    X = np.column_stack([np.ones(len(rows)), rows[:, 0], rows[:, 1]])
    if len(rows) < 3 or np.linalg.matrix_rank(X) < 3:
        return math.nan, math.nan
    a, b, c = np.linalg.lstsq(X, rows[:, 2], rcond=None)[0]
    if b >= 0:  # ratios must fall with depth for a crossover to exist
        return math.nan, math.nan
    return float(-c / b), float((MID - a) / b)


def crossover(inc: pd.DataFrame, N: int, seed: int = 0) -> dict:
    """Crossover-depth fit for one N: estimates of the slope s and offset o, bootstrapped over widths.

    inc: increments table (columns positions, heads, residual, d_x, L, next_ratio).
    """
    g = inc[(inc.positions == N) & (inc.heads == 1) & (~inc.residual.astype(bool)) & inc.next_ratio.notna()
            & (inc.next_ratio > 0)]
    widths = np.array(sorted(g.d_x.unique()))
    by_w = {int(d): np.column_stack([h.L.to_numpy(float), np.log(h.d_x.to_numpy(float)) / math.log(3),
                                     np.log(h.next_ratio.to_numpy(float))]) for d, h in g.groupby("d_x")}

    def stat(which):
        def f(sample):
            rows = np.concatenate([by_w[int(widths[int(i)])] for i in sample[:, 0]]) if len(sample) else np.zeros((0, 3))
            return _crossover_coeffs(rows)[which]
        return f

    units = np.arange(len(widths), dtype=float)[:, None]
    return dict(slope=S.bootstrap(units, stat(0), seed=seed), offset=S.bootstrap(units, stat(1), seed=seed),
                n_points=len(g), widths=[int(w) for w in widths])


def closed_form_crossover(d_x: float) -> float:
    """Continuous depth L where the N = 2 closed form's ratio Delta_{L+1}/Delta_L equals sqrt(3).

    Delta_L = ln C(d + m_L, d) - ln C(d + m_{L-1}, d) continued to real L (theory.n2_log_rank);
    the ratio falls from ~3 to ~1 as L grows, found by bisection on L in [0.5, 60].
    """
    def ln_ratio(L):
        f = lambda x: theory.n2_log_rank(d_x, x)  # noqa: E731
        return math.log((f(L + 1) - f(L)) / (f(L) - f(L - 1))) - MID

    lo, hi = 1.0, 60.0
    if ln_ratio(lo) < 0:
        return math.nan
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ln_ratio(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def exponent_table(ex: pd.DataFrame, Ns, Ls, seed: int = 0) -> pd.DataFrame:
    """One row per (N, L, regime): fitted exponent with its bootstrap interval and the predicted band."""
    rows = []
    for N in Ns:
        for L in Ls:
            for regime in ("shallow", "deep"):
                est, g = width_exponent(ex, N, L, regime, seed)
                lo, hi = predicted_band(L, regime)
                closed = math.nan
                if N == 2 and len(g) >= 2:
                    xs = g.d_x.to_numpy(float)
                    ys = np.array([theory.n2_log_rank(d, L) for d in xs])
                    closed = _slope(np.log(xs) if regime == "shallow" else xs, ys)
                rows.append(dict(positions=N, L=L, regime=regime, n_widths=len(g),
                                 d_min=int(g.d_x.min()) if len(g) else -1, d_max=int(g.d_x.max()) if len(g) else -1,
                                 max_rank=int(g["rank"].max()) if len(g) else -1,
                                 exponent=est.value, low=est.low, high=est.high, band_low=lo, band_high=hi,
                                 closed_form=closed))
    return pd.DataFrame(rows)


def predicted_band(L: int, regime: str) -> tuple[float, float]:
    """Shallow: alpha in [3^(L-2), 3^L] (the paper's lower-bound shape [R] and the degree bound);
    deep: beta in (0, L ln 3] (the paper's upper bound log_3 sep <~ L d_x [R])."""
    if regime == "shallow":
        return 3.0 ** (L - 2), 3.0**L
    return 0.0, L * math.log(3.0)
