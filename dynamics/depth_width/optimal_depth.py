"""The loss-minimising depth at a fixed parameter budget, with a bootstrap interval over seeds.

At a fixed non-embedding budget N = 12 L d_x^2 + 13 L d_x the width falls as the depth rises, and the
held-out loss against depth is U-shaped around an optimum (Levine et al. 2020 v3, Fig. 1; Kaplan et
al. 2020, Fig. 5 on a log-depth axis).  Per budget we fit the seed-mean test loss over the measured
depths with a quadratic in x = ln L,

    loss(L) ~ c0 + c1 x + c2 x^2,     L* = exp(-c1 / (2 c2))   (c2 > 0),

the lowest-order smooth curve with an interior minimum: three parameters for six depths, symmetric in
ratios of depth (L -> 2L costs the same anywhere), which is how the loss varies near the optimum in
the papers' plots.  L* is clipped to the measured range [L_min, L_max]; with c2 <= 0 (no interior
minimum) it is the end with the lower fitted loss.  ``edge`` says when L* sits on an end: then the
optimum lies at or beyond it, and the interval is one-sided in substance.

The interval resamples seeds (the units: each seed's runs at every depth and budget move together)
with :func:`dynamics.stats.bootstrap` and refits.  The paper's prediction beside it solves the budget
equation together with ln d_x^opt = a + b L (:func:`dynamics.depth_width.theory.optimal_depth`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import stats as S
from . import theory
from .budget import loss_cube

BITS = 1 / math.log(2)  # nats -> bits


def quadratic_minimiser(depths: np.ndarray, loss: np.ndarray) -> tuple[float, str]:
    """(L*, edge) of the quadratic in ln L through (depths, loss); NaN losses are left out.

    edge is "" for an interior minimum, "low" or "high" when L* is clipped to an end of the depths."""
    depths, loss = np.asarray(depths, float), np.asarray(loss, float)
    ok = np.isfinite(loss)
    if ok.sum() < 3:
        return math.nan, ""
    x = np.log(depths[ok])
    c2, c1, c0 = np.polyfit(x, loss[ok], 2)
    lo, hi = x.min(), x.max()
    if c2 > 0:
        xs = -c1 / (2 * c2)
    else:  # concave or flat: the lower end of the fitted curve
        xs = lo if c0 + c1 * lo + c2 * lo**2 <= c0 + c1 * hi + c2 * hi**2 else hi
    if xs <= lo:
        return float(math.exp(lo)), "low"
    if xs >= hi:
        return float(math.exp(hi)), "high"
    return float(math.exp(xs)), ""


def fitted_curve(depths: np.ndarray, loss: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The quadratic in ln L through (depths, loss), evaluated at ``grid`` (for figures)."""
    depths, loss = np.asarray(depths, float), np.asarray(loss, float)
    ok = np.isfinite(loss)
    if ok.sum() < 3:
        return np.full(len(grid), np.nan)
    return np.polyval(np.polyfit(np.log(depths[ok]), loss[ok], 2), np.log(np.asarray(grid, float)))


def _l_star(sample: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """L* per budget of a (seeds, budgets, depths) sample, on its seed means."""
    mean = np.nanmean(sample, axis=0)
    return np.array([quadratic_minimiser(depths, m)[0] for m in mean])


def optimal_depths(runs: pd.DataFrame, value: str = "test_loss", n_boot: int = 2000, seed: int = 0,
                   a: float = theory.FIT_A, b: float = theory.FIT_B) -> pd.DataFrame:
    """Per budget: L* of the quadratic fit with its 95% bootstrap interval over seeds, the arg-min
    depth of the seed means, and the paper's predicted (L, d_x) at that budget.

    runs: one row per (budget, depth, seed) with columns budget, depth, seed, width and ``value``.
    Columns: budget, L_star, L_low, L_high, edge, n_seeds, argmin_depth, argmin_width, paper_L
    (continuous, may be < 1), paper_width, paper_L_clipped (to the measured depths), paper_note.
    """
    cube, width, depths, budgets = loss_cube(runs, value)
    rows = []
    for i, budget in enumerate(budgets):
        sub = cube[:, i, :]
        mean = np.nanmean(sub, axis=0)
        L, edge = quadratic_minimiser(depths, mean)
        est = S.bootstrap(sub, lambda x: quadratic_minimiser(depths, np.nanmean(x, axis=0))[0],  # noqa: B023
                          n_boot=n_boot, seed=seed)
        best = int(np.nanargmin(mean)) if np.isfinite(mean).any() else 0
        pL = theory.optimal_depth(float(budget), a, b, biases=True)
        clipped = min(max(pL, depths.min()), depths.max())
        note = (f"paper fit: L = {pL:.2f} < {depths.min():g}, so depth {depths.min():g} is optimal"
                if pL < depths.min() else f"paper fit: L = {pL:.2f}")
        rows.append(dict(budget=budget, L_star=L, L_low=est.low, L_high=est.high, edge=edge, n_seeds=est.n,
                         argmin_depth=int(depths[best]), argmin_width=int(width[i, best]), paper_L=pL,
                         paper_width=theory.optimal_width(pL, a, b), paper_L_clipped=clipped, paper_note=note))
    return pd.DataFrame(rows)


def depth_slope(runs: pd.DataFrame, value: str = "test_loss", seed: int = 0) -> S.Estimate:
    """OLS slope of L* against ln budget (layers per e-fold of parameters), bootstrap over seeds."""
    cube, _, depths, budgets = loss_cube(runs, value)
    x = np.log(np.asarray(budgets, float))
    x = x - x.mean()

    def slope(sample):
        y = _l_star(sample, depths)
        # written out so that equal L* (e.g. all clipped to depth 1) give exactly 0, not polyfit's 1e-17
        return float(x @ (y - y.mean()) / (x @ x))

    return S.bootstrap(cube, slope, seed=seed)


def depth_vs_paper(runs: pd.DataFrame, value: str = "test_loss", seed: int = 0,
                   a: float = theory.FIT_A, b: float = theory.FIT_B) -> S.Estimate:
    """The largest miss over budgets, sign kept: L*_b - clip(L_paper(b)) at the budget where its
    magnitude is largest; bootstrap over seeds.  The paper's L is clipped to the measured depths
    because L* is (a prediction of L = 0.3 says "depth 1", the shallowest there is)."""
    cube, _, depths, budgets = loss_cube(runs, value)
    pred = np.clip([theory.optimal_depth(float(n), a, b, biases=True) for n in budgets], depths.min(), depths.max())

    def worst(x):
        d = _l_star(x, depths) - pred
        return float(d[np.nanargmax(np.abs(d))]) if np.isfinite(d).any() else math.nan

    return S.bootstrap(cube, worst, seed=seed)


def shallow_gap(runs: pd.DataFrame, budget: float) -> tuple[S.Estimate, int]:
    """Per seed at ``budget``: test loss(shallowest depth) - test loss(the deeper depth with the lowest
    seed-mean **validation** loss), paired t over seeds; and that deeper depth.  Choosing the rival on
    validation keeps the pick's luck out of the test difference."""
    r = runs[runs.budget == budget]
    test, _, depths, _ = loss_cube(r, "test_loss")
    val, _, _, _ = loss_cube(r, "val_loss")
    rival = 1 + int(np.nanargmin(np.nanmean(val[:, 0, 1:], axis=0)))
    return S.paired(test[:, 0, 0], test[:, 0, rival]), int(depths[rival])


def plot_loss_vs_depth(table: pd.DataFrame, optimum: pd.DataFrame, value: str = "bpb"):
    """Held-out loss against depth per budget: seed means with 95% t intervals (columns ``value``,
    ``value``_low, ``value``_high of ``table``, one row per (budget, depth)), the quadratic-in-ln L fit
    and L* with its bootstrap interval (``optimum`` from :func:`optimal_depths`, in the same units as
    the fit: the fit is redone here on ``value``)."""
    from ..report.figures import subplots

    fig, ax = subplots(figsize=(6.0, 4.2))
    for budget, g in table.groupby("budget"):
        g = g.sort_values("depth")
        err = np.vstack([g[value] - g[f"{value}_low"], g[f"{value}_high"] - g[value]])
        line = ax.errorbar(g.depth, g[value], yerr=err, marker="o", ms=4, capsize=2, ls="none",
                           label=f"N = {budget:.0e} (d {g.width.max()}..{g.width.min()})")
        color = line[0].get_color()
        grid = np.geomspace(g.depth.min(), g.depth.max(), 60)
        ax.plot(grid, fitted_curve(g.depth, g[value], grid), "-", lw=1, color=color)
        o = optimum[optimum.budget == budget]
        if len(o) and np.isfinite(o.L_star.iloc[0]):
            Ls = o.L_star.iloc[0]
            y = float(fitted_curve(g.depth, g[value], [Ls])[0])
            ax.errorbar([Ls], [y], xerr=[[Ls - o.L_low.iloc[0]], [o.L_high.iloc[0] - Ls]], marker="*", ms=12,
                        color=color, capsize=3, ls="none")
    ax.set_xscale("log")
    ax.set_xticks(sorted(table.depth.unique()), [str(d) for d in sorted(table.depth.unique())])
    ax.set(xlabel="depth L (width set by the budget)",
           ylabel="held-out test loss (bits per byte)" if value == "bpb" else f"held-out {value}",
           title="byte-level WikiText-2: loss vs depth at fixed budget\n(bars: 95% t over seeds; lines: quadratic "
                 "in ln L; *: L* with 95% bootstrap interval)")
    ax.legend(fontsize=7)
    return fig
