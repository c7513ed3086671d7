"""Real-window arm of Scan and Snap at finite T (issue 19, real text step 2): the window counts, the
per-token leak and dispersion, and the paired agreement table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynamics import stats
from dynamics.corpus.cooccurrence import contexts, cooccurrence
from dynamics.scan_snap import finite_t as ft
from dynamics.scan_snap import windows as wn


def _corpus(n=3000, seed=0):
    """Tokens 0..9 as filler, query 10 followed by next token 11 or 12; a few tokens favour one class."""
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n // 6):
        nxt = int(rng.integers(11, 13))
        pool = [0, 1, 2, 3, 4] if nxt == 11 else [0, 1, 5, 6, 7]
        ids += [int(rng.choice(pool)) for _ in range(4)] + [10, nxt]
    return np.array(ids), [f"t{i}" for i in range(13)]


def _pooled(T=6, min_count=3, max_windows=40):
    ids, vocab = _corpus()
    co = cooccurrence(ids, vocab, T=T, queries=1, next_per_query=2, min_support=20, max_windows=max_windows,
                      min_count=min_count, exclude=())
    pq = ft.pooled_query(co.counts[0], min_count, int(co.queries[0]), co.next[0])
    return co, pq, contexts(co, ids)[0]


def test_window_counts_average_to_the_pooled_classes():
    """The real windows' mean counts are (T - 1) P(l|m,n) of the pooled classes, pooled columns included:
    the two SGD arms see the same expected input."""
    co, pq, ctx = _pooled()
    W = wn.window_counts(ctx, pq)
    assert W.shape == (2, co.N, pq.classes.M)
    assert np.all(W.sum(-1) == co.T - 1)
    assert np.allclose(W.mean(1) / (co.T - 1), pq.classes.probs)


def test_role_count_keeps_the_rate_per_context_token():
    assert wn.role_count(3, 32, 32) == 3 and wn.role_count(3, 8, 32) == 3
    assert wn.role_count(3, 128, 32) == 13 and wn.role_count(3, 2048, 32) == 199


def test_token_leak_is_the_share_in_the_other_class():
    counts = np.zeros((2, 12))
    counts[0, [0, 1]] = [5, 4]
    counts[1, [0, 3]] = [1, 6]  # token 0 distinct to class 0 and leaks once into class 1
    counts[:, 5] = [3, 3]
    pq = ft.pooled_query(counts, 3, query=10, next_tokens=np.array([11, 9]))
    leak = wn.token_leak(counts, pq)
    cols = list(pq.tokens)
    assert leak[cols.index(0)] == pytest.approx(1 / 6)
    assert leak[cols.index(1)] == 0 and leak[cols.index(3)] == 0
    assert np.isnan(leak[cols.index(5)])  # common: no leak defined


def test_dispersion_is_one_for_multinomial_windows_and_larger_for_bursts():
    rng = np.random.default_rng(0)
    P = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    multi = np.stack([rng.multinomial(30, p, size=4000) for p in P]).astype(float)
    assert np.allclose(wn.dispersion(multi, P), 1.0, atol=0.06)
    # each window repeats one multinomial draw of 10 keys three times: variance x3
    bursty = np.stack([3 * rng.multinomial(10, p, size=4000) for p in P]).astype(float)
    assert np.allclose(wn.dispersion(bursty, P), 3.0, atol=0.2)


def test_sgd_on_fixed_windows_draws_only_those_windows():
    """With every window of a class equal to its mean counts, SGD on windows is deterministic in the
    window draw: two different window sets with the same rows give the same run, and it differs from
    multinomial windows of the same length."""
    co, pq, ctx = _pooled()
    W = wn.window_counts(ctx, pq)
    mean = np.repeat(W.mean(1, keepdims=True), 5, axis=1)
    ss = np.random.SeedSequence(3).spawn(2)
    a = ft.sgd_runs(pq.classes, [6, 6], [1.0, 1.0], [0.5, 0.5], ss, batch=8, steps=5, record=[5], windows=mean)
    b = ft.sgd_runs(pq.classes, [6, 6], [1.0, 1.0], [0.5, 0.5], ss, batch=8, steps=5, record=[5],
                    windows=mean[:, :2])
    c = ft.sgd_runs(pq.classes, [6, 6], [1.0, 1.0], [0.5, 0.5], ss, batch=8, steps=5, record=[5])
    assert np.allclose(a.Z, b.Z) and not np.allclose(a.Z, c.Z)
    with pytest.raises(ValueError):
        ft.sgd_runs(pq.classes, [6], [1.0], [0.5], ss[:1], batch=8, steps=1, record=[1], windows=W[:1])


def _cells():
    """Four cells of one (query, T), two arms; resolved unless std is large."""
    rows = []
    spec = {  # column: (role, leak, z_pred, resampled mean, windows mean)
        0: ("distinct", 0.0, 1.0, 1.0, 1.0),
        1: ("distinct", 0.2, 1.0, 1.0, -1.0),
        2: ("distinct", 0.0, -1.0, -1.0, -1.0),
        3: ("common", np.nan, -1.0, 1.0, -1.0),
    }
    for col, (role, leak, zp, mr, mw) in spec.items():
        for arm, m in (("resampled", mr), ("windows", mw)):
            for s in range(4):
                rows.append({"query": 0, "T": 32, "column": col, "arm": arm, "role": role, "leak": leak,
                             "dispersion": 1.0, "p_max": 0.1, "seed_index": s, "z_final": m + 0.01 * s,
                             "z_pred": zp})
    tokens = pd.DataFrame(rows)
    pred = tokens.drop_duplicates(["query", "T", "column"])[["query", "T", "column", "z_pred"]].assign(z_population=0.0)
    return wn.cell_signs(tokens.drop(columns="z_pred"), pred)


def test_agreement_table_pairs_the_arms_cell_by_cell():
    cells = _cells()
    assert cells.resolved.all()
    t = wn.agreement_table(cells).iloc[0]
    assert (t.resampled_agree, t.resampled_resolved, t.windows_agree, t.windows_resolved) == (3, 4, 3, 4)
    assert (t.resampled_only_agree, t.windows_only_agree, t.both_resolved) == (1, 1, 4)
    assert t["diff"] == 0 and t.distinct_leak_mean == pytest.approx(0.2 / 3)
    # slope of seed-mean z on z_pred through 0: resampled means 1, 1, -1, 1 (+0.015) on predictions 1, 1, -1, -1
    assert t.resampled_slope == pytest.approx((1.015 + 1.015 + 0.985 - 1.015) / 4)
    assert stats.newcombe(3, 4, 3, 4).low == pytest.approx(t.diff_low)
    # the leaking distinct token is the one real windows get wrong: excess disagreement 1 vs 0
    est = wn.leak_excess(wn.paired(cells))
    assert est.value == pytest.approx(1.0)
