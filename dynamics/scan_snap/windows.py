"""Scan and Snap on real WikiText windows with T swept, next to i.i.d. resampled contexts (issue 19, real
text step 2).

Step 1 (``scan-snap-wikitext-resampled``) drew contexts as T - 1 i.i.d. keys from WikiText's empirical
P(l | m, n): Assumption 1b of Tian et al. 2023 holds by construction and only T is finite.  Here, at each
T, class (m, n)'s P(l | m, n) is measured on N real windows of length T (:mod:`dynamics.corpus.cooccurrence`),
turned into classes by :func:`dynamics.scan_snap.finite_t.pooled_query`, and the same Y/Z model
(:func:`dynamics.scan_snap.finite_t.sgd_runs`: plain SGD, Y(0) = Z(0) = 0, no residual) is trained in two
arms that differ only in the law of one window:

* ``resampled``: key counts ~ Multinomial(T - 1, P(. | m, n)) (T - 1 i.i.d. keys);
* ``windows``:   the key counts of one of the N real windows, drawn uniformly (:func:`window_counts`).

Both arms have the same expected count (T - 1) P(l | m, n) exactly (P is measured on these N windows), the
same roles, the same leak of "distinct" tokens into the other class and the same common tokens; what the
real windows add is the rest of their law: bursty repeats of a token inside a window (a count variance
above the multinomial (T - 1) P (1 - P), :func:`dispersion`), correlations between tokens, and a finite
set of N windows reused by SGD.  The O(1/T)-corrected flow of :class:`dynamics.scan_snap.finite_t.CorrectedFlow`
predicts the sign of every role token's final logit under the multinomial law; the sign agreement of each
arm with it (:func:`cell_signs`, :func:`agreement_table`) isolates what real windows change from what
finite T changes.

Roles at T: a token has a role when it co-occurs with a next token at least ``role_count(c, T, T_ref)``
times in N windows, the count ``c`` at the reference length ``T_ref`` scaled to hold the rate per context
token fixed (:func:`role_count`); at fixed count the number of role tokens (and the model's size) would
grow roughly like T.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st

from .. import stats
from .finite_t import PooledQuery

ARMS = ("resampled", "windows")


def role_count(min_count: int, T: int, ref_T: int) -> int:
    """Co-occurrences needed for a role at window length T: ``min_count`` at ``ref_T``, the same rate per
    context token at other T (ceil(min_count (T - 1) / (ref_T - 1))), never below ``min_count``."""
    if min_count < 1 or T < 2 or ref_T < 2:
        raise ValueError("need min_count >= 1, T >= 2, ref_T >= 2")
    return max(min_count, math.ceil(min_count * (T - 1) / (ref_T - 1)))


def _role_columns(pq: PooledQuery) -> int:
    """Number of leading columns of ``pq`` that are individual role tokens (then K pooled, query, K next)."""
    return len(pq.tokens) - 2 * pq.classes.K - 1


def window_counts(contexts: np.ndarray, pq: PooledQuery) -> np.ndarray:
    """Key counts of real windows on ``pq``'s columns: (K, N, M) float64.

    contexts (K, N, T-1): corpus token ids of class k's windows (:func:`dynamics.corpus.cooccurrence.contexts`
    for one query).  A role token counts in its own column; every other token (rare ones, the query, the
    next tokens) counts in class k's pooled column, as :func:`pooled_query` pools them, so that
    ``window_counts(...).mean(1) / (T - 1)`` is ``pq.classes.probs`` when ``pq`` was built from these windows.
    """
    ctx = np.asarray(contexts, dtype=np.int64)
    K, N, _ = ctx.shape
    if K != pq.classes.K:
        raise ValueError(f"contexts hold {K} classes, the pooled query {pq.classes.K}")
    C, M = _role_columns(pq), pq.classes.M
    cols = pq.tokens[:C]
    lookup = np.full(int(max(ctx.max(initial=0), cols.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[cols] = np.arange(C)
    j = lookup[ctx]
    j = np.where(j < 0, C + np.arange(K)[:, None, None], j)
    row = (np.arange(K)[:, None, None] * N + np.arange(N)[None, :, None]) * M
    return np.bincount((row + j).ravel(), minlength=K * N * M).reshape(K, N, M).astype(np.float64)


def token_leak(counts: np.ndarray, pq: PooledQuery) -> np.ndarray:
    """(M,) for each distinct token l of class k: the share of its occurrences that fall in the query's other
    classes, 1 - count_k(l) / sum_k' count_k'(l) (the per-token form of :meth:`Cooccurrence.leak`); NaN for
    every other column.  counts (K, V): the co-occurrence counts ``pq`` was built from."""
    counts = np.asarray(counts, dtype=np.float64)
    C = _role_columns(pq)
    out = np.full(pq.classes.M, np.nan)
    body = counts[:, pq.tokens[:C]]  # (K, C)
    own = (pq.roles[:, :C] == 1)
    is_d = own.any(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:C] = np.where(is_d, 1 - np.where(own, body, 0).sum(0) / body.sum(0), np.nan)
    return out


def dispersion(windows: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(M,) count variance of real windows over the multinomial one, mean over the classes where the token
    occurs: Var_n(count_l) / ((T - 1) P_l (1 - P_l)).  1 for i.i.d. keys; above 1 when a token comes in
    bursts (repeats within a window).  windows (K, N, M) from :func:`window_counts`, probs (K, M)."""
    W = np.asarray(windows, dtype=np.float64)
    L = W[0].sum(1).mean()
    var = W.var(1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((probs > 0) & (probs < 1), var / (L * probs * (1 - probs)), 0.0)
    seen = ((probs > 0) & (probs < 1)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, ratio.sum(0) / seen, np.nan)


def cell_signs(tokens: pd.DataFrame, predicted: pd.DataFrame, keys: tuple[str, ...] = ("query", "T")) -> pd.DataFrame:
    """One row per (keys, column, arm): the seed-mean final logit with its std and count, the predicted
    logit, whether its sign is resolved (:func:`dynamics.stats.sign_resolved`) and whether it agrees with
    the prediction.

    tokens: keys + column, arm, role, leak, seed_index, z_final; predicted: keys + column, z_pred, z_population.
    """
    k = list(keys)
    cells = tokens.groupby(k + ["column", "arm", "role"], dropna=False).agg(
        mean=("z_final", "mean"), std=("z_final", "std"), count=("z_final", "count"),
        leak=("leak", "first"), dispersion=("dispersion", "first"), p_max=("p_max", "first")).reset_index()
    cells = cells.merge(predicted[k + ["column", "z_pred", "z_population"]], on=k + ["column"])
    cells["resolved"] = stats.sign_resolved(cells["mean"], cells["std"], cells["count"])
    cells["agree"] = cells.resolved & (np.sign(cells["mean"]) == np.sign(cells.z_pred))
    return cells


def paired(cells: pd.DataFrame, keys: tuple[str, ...] = ("query", "T")) -> pd.DataFrame:
    """The two arms side by side, one row per (keys, column): ``resolved_<arm>``, ``agree_<arm>`` and the
    cell's role, leak, dispersion; ``both`` where both arms resolve the sign."""
    idx = list(keys) + ["column"]
    wide = cells.pivot_table(index=idx, columns="arm", values=["resolved", "agree"], aggfunc="first")
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reindex(columns=[f"{v}_{a}" for v in ("resolved", "agree") for a in ARMS], fill_value=False)
    wide = wide.reset_index()
    meta = cells.drop_duplicates(idx)[idx + ["role", "leak", "dispersion", "p_max"]]
    wide = wide.merge(meta, on=idx)
    for a in ARMS:
        wide[f"resolved_{a}"] = wide[f"resolved_{a}"].astype(bool)
        wide[f"agree_{a}"] = wide[f"agree_{a}"].astype(bool)
    wide["both"] = wide.resolved_resampled & wide.resolved_windows
    return wide


def paired_difference(pairs: pd.DataFrame) -> tuple[stats.Estimate, int, int, int]:
    """Agreement of ``resampled`` minus that of ``windows`` over the cells both arms resolve.

    Returns (Newcombe interval on the difference of the two rates, cells resampled-only agree, cells
    windows-only agree, cells).  The two rates share their cells, so the pairs are positively correlated
    and the Newcombe interval for independent rates is conservative (wider than a paired one); the
    discordant counts are the paired information (McNemar)."""
    both = pairs[pairs.both]
    n = len(both)
    a, b = int(both.agree_resampled.sum()), int(both.agree_windows.sum())
    only_res = int((both.agree_resampled & ~both.agree_windows).sum())
    only_win = int((~both.agree_resampled & both.agree_windows).sum())
    return stats.newcombe(a, n, b, n), only_res, only_win, n


def leak_excess(pairs: pd.DataFrame) -> stats.Estimate:
    """Distinct-token cells resolved in both arms: excess disagreement of real windows over resampled
    contexts, d = agree_resampled - agree_windows in {-1, 0, 1}, for leaking tokens (leak > 0) minus
    non-leaking ones (leak = 0); Welch interval over cells."""
    d = pairs[pairs.both & (pairs.role == "distinct") & pairs.leak.notna()]
    e = d.agree_resampled.astype(float) - d.agree_windows.astype(float)
    return stats.welch(e[d.leak > 0], e[d.leak == 0])


def agreement_table(cells: pd.DataFrame, by: tuple[str, ...] = ("T",), keys: tuple[str, ...] = ("query", "T")) -> pd.DataFrame:
    """Per group of ``by``: each arm's sign agreement with the prediction over its resolved cells (rate and
    Wilson interval) and the size of its drifts against the predicted ones (``<arm>_slope``), the paired comparison over cells both arms resolve (:func:`paired_difference`, exact
    McNemar p-value on the discordant cells) and the mean leak and dispersion of the distinct tokens."""
    pairs = paired(cells, keys)
    rows = []
    for key, g in cells.groupby(list(by), sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for a in ARMS:
            c = g[g.arm == a]
            est, agree, n = stats.sign_agreement(c["mean"], c["std"], c["count"], c.z_pred)
            row |= {f"{a}_agree": agree, f"{a}_resolved": n, f"{a}_rate": est.value, f"{a}_low": est.low,
                    f"{a}_high": est.high, f"{a}_slope": _slope(c["mean"], c.z_pred)}
        p = pairs.merge(pd.DataFrame([row])[list(by)], on=list(by))
        diff, only_res, only_win, n = paired_difference(p)
        disc = only_res + only_win
        row |= {"both_resolved": n, "resampled_only_agree": only_res, "windows_only_agree": only_win,
                "diff": diff.value, "diff_low": diff.low, "diff_high": diff.high,
                "mcnemar_p": float(_st.binomtest(only_res, disc).pvalue) if disc else math.nan}
        dist = p[p.role == "distinct"]
        row |= {"distinct_leak_mean": float(dist.leak.mean()), "leaking_share": float((dist.leak > 0).mean()),
                "dispersion_median": float(p.dispersion.median())}
        rows.append(row)
    return pd.DataFrame(rows)


def _slope(z, z_pred) -> float:
    """Least-squares slope through the origin of the measured seed-mean logits on the predicted ones: 1 when
    the drifts have the predicted size, above 1 when they are larger (as bursty windows, whose count variance
    exceeds the multinomial one, would make the finite-T term)."""
    z, p = np.asarray(z, float), np.asarray(z_pred, float)
    ok = np.isfinite(z) & np.isfinite(p)
    den = float((p[ok] ** 2).sum())
    return float((z[ok] * p[ok]).sum() / den) if den > 0 else math.nan


def agreement_figure(table: pd.DataFrame, fractions: pd.DataFrame):
    """Two panels against T (log axis).  Left: sign agreement of each arm with the O(1/T) flow over its
    resolved cells, Wilson 95% bars (``table`` from :func:`agreement_table` by T).  Right: fraction of
    distinct tokens with z > 0 and of common tokens with z < 0, per source (``fractions``: T, source in
    {flow, population, resampled, windows}, distinct_up, common_down)."""
    from ..report.figures import subplots

    fig, axes = subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
    ax = axes[0]
    style = {"resampled": ("o-", "C0", "i.i.d. resampled contexts"), "windows": ("s-", "C3", "real windows")}
    t = table.sort_values("T")
    for a, shift in zip(ARMS, (0.94, 1.06)):  # arms side by side at each T, so both bars stay visible
        fmt, col, lab = style[a]
        err = np.vstack([t[f"{a}_rate"] - t[f"{a}_low"], t[f"{a}_high"] - t[f"{a}_rate"]])
        ax.errorbar(t["T"] * shift, t[f"{a}_rate"], yerr=np.nan_to_num(err), fmt=fmt, color=col, capsize=3, ms=4,
                    label=lab)
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax.set(xscale="log", xlabel="window length T", ylabel="share of resolved cells",
           title="sign of final $z_{ml}$ = O(1/T) flow's sign")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    look = {"flow": ("--", "k", "O(1/T) flow"), "population": (":", "grey", "population (T = inf)"),
            "resampled": ("o-", "C0", "resampled"), "windows": ("s-", "C3", "real windows")}
    for src, g in fractions.groupby("source"):
        g = g.sort_values("T")
        ls, col, lab = look.get(src, ("-", None, src))
        ax.plot(g["T"], g.distinct_up, ls, color=col, ms=4, label=f"{lab}: distinct, z > 0")
        ax.plot(g["T"], g.common_down, ls, color=col, ms=4, mfc="none", alpha=0.6, label=f"{lab}: common, z < 0")
    ax.set(xscale="log", xlabel="window length T", ylabel="fraction of tokens", ylim=(-0.03, 1.03),
           title="Thm. 2 signs (a: distinct, b: common)")
    ax.legend(fontsize=6, ncol=2, loc="center left")
    Ts = sorted(table["T"].unique())
    for ax in axes:
        ax.set_xticks(Ts, [f"{x:g}" for x in Ts])
        ax.minorticks_off()
    return fig
