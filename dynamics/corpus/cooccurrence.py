"""Token co-occurrence on real text, in the terms of Scan and Snap (Tian et al. 2023, Sec. 3.2).

A window ending at position i is the T tokens ids[i-T+1 .. i] followed by the next token ids[i+1]:
the query is m = ids[i] (x_T), the next token n = ids[i+1] (x_{T+1}), and the T-1 tokens before the
query are the context.  A *class* is a pair (m, n) with enough windows ("support").  Its context
distribution is

    P(l | m, n) = (occurrences of l in the contexts of the class's windows) / (windows * (T-1))

which is the paper's P(l|m,n) (there: T-1 i.i.d. draws; here: the empirical distribution of the
real contexts).

Token roles (Sec. 3.2, with Omega(l) = {n : P(l|n) > 0}) are taken within each query, over its
selected next tokens, and with a minimum count so that one stray occurrence does not decide:

    Omega_m(l) = {n in N(m) : count_{m,n}(l) >= min_count}
    distinct for n:  Omega_m(l) = {n}          common:  |Omega_m(l)| > 1

Tokens seen fewer than ``min_count`` times with every next token have no role.  Within a query
every class uses the same number of windows (the smallest support, capped), so a next token with
more windows does not collect more "distinct" tokens by sampling alone.  The residual-free theory
(Lemma 4) couples classes through the shared decoder, so per-query roles are exact when each query
is simulated on its own, as :mod:`dynamics.scan_snap.text` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import UserError

EXCLUDE = ("<unk>", "<eos>")


@dataclasses.dataclass(frozen=True)
class Cooccurrence:
    """Co-occurrence statistics for Q queries with K next tokens each (classes are query-major).

    vocab:    (V,) token strings of the corpus
    T:        window length including the query (T-1 context tokens)
    queries:  (Q,) token ids m
    next:     (Q, K) token ids n of each query's classes, by descending support
    support:  (Q, K) windows of each class in the whole split
    windows:  (Q, K, N) start-of-query positions i of the N windows used per class (N = min support,
              capped), so ids[i - T + 1 : i] is the context, ids[i] == m, ids[i + 1] == n
    counts:   (Q, K, V) float64 occurrences of each token in the contexts of the used windows
    min_count: the role threshold
    """

    vocab: list[str]
    T: int
    queries: np.ndarray
    next: np.ndarray
    support: np.ndarray
    windows: np.ndarray
    counts: np.ndarray
    min_count: int

    @property
    def Q(self) -> int:
        return len(self.queries)

    @property
    def K(self) -> int:
        return self.next.shape[1]

    @property
    def N(self) -> int:
        return self.windows.shape[2]

    @property
    def probs(self) -> np.ndarray:
        """P(l | m, n): (Q, K, V), rows sum to 1."""
        return self.counts / self.counts.sum(-1, keepdims=True)

    @property
    def omega(self) -> np.ndarray:
        """|Omega_m(l)|: for how many of the query's next tokens l reaches min_count. (Q, V)"""
        return (self.counts >= self.min_count).sum(1)

    @property
    def distinct(self) -> np.ndarray:
        """(Q, K, V) True where l is a distinct token of class (m, n)."""
        return (self.counts >= self.min_count) & (self.omega == 1)[:, None, :]

    @property
    def common(self) -> np.ndarray:
        """(Q, V) True where l is a common token of query m (co-occurs with >= 2 of its next tokens)."""
        return self.omega > 1

    def leak(self) -> np.ndarray:
        """(Q, K) share of the occurrences of class (m, n)'s distinct tokens that fall in the query's
        *other* classes (below min_count there): 0 when the roles are exact, as the theory assumes."""
        d = self.distinct
        own = np.where(d, self.counts, 0.0).sum(-1)
        total = np.where(d, self.counts.sum(1, keepdims=True), 0.0).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 1 - own / total, np.nan)


def select_classes(ids: np.ndarray, vocab: Sequence[str], T: int, queries: int, next_per_query: int,
                   min_support: int, exclude: Sequence[str] = EXCLUDE,
                   query_tokens: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The most frequent queries that have ``next_per_query`` next tokens with >= ``min_support``
    windows each: (queries (Q,), next (Q, K), support (Q, K)).  ``query_tokens`` picks the queries
    by name instead.  Tokens in ``exclude`` are neither queries nor next tokens."""
    V = len(vocab)
    if T < 2:
        raise UserError(f"T must be at least 2 (one context token and the query), got {T}")
    pos = np.arange(T - 1, len(ids) - 1)
    if len(pos) == 0:
        raise UserError(f"the text ({len(ids)} tokens) is shorter than one window of T={T}")
    m, n = ids[pos], ids[pos + 1]
    banned = np.zeros(V, dtype=bool)
    index = {w: i for i, w in enumerate(vocab)}
    banned[[index[w] for w in exclude if w in index]] = True
    keys, key_counts = np.unique(m * V + n, return_counts=True)  # sorted pair keys and their windows
    if query_tokens:
        missing = [w for w in query_tokens if w not in index]
        if missing:
            raise UserError(f"query token(s) {', '.join(map(repr, missing))} are not in the vocabulary")
        order = np.array([index[w] for w in query_tokens])
    else:
        order = np.argsort(-np.bincount(m, minlength=V), kind="stable")
    chosen, nexts, sups = [], [], []
    for q in order:
        if banned[q] and not query_tokens:
            continue
        lo, hi = np.searchsorted(keys, [q * V, (q + 1) * V])
        row = np.zeros(V, dtype=np.int64)
        row[keys[lo:hi] - q * V] = key_counts[lo:hi]
        row[banned] = 0
        top = np.argsort(-row, kind="stable")[:next_per_query]
        if len(top) == next_per_query and row[top[-1]] >= min_support:
            chosen.append(q)
            nexts.append(top)
            sups.append(row[top])
        elif query_tokens:
            raise UserError(f"query {vocab[q]!r} has fewer than {next_per_query} next tokens with "
                            f">= {min_support} windows at T={T}")
        if len(chosen) == queries:
            break
    if len(chosen) < queries:
        raise UserError(f"only {len(chosen)} queries have {next_per_query} next tokens with >= {min_support} "
                        f"windows each at T={T} (asked for {queries}); lower queries, next_per_query or "
                        "min_support, or use a larger vocabulary")
    return np.array(chosen), np.array(nexts), np.array(sups)


def cooccurrence(ids: np.ndarray, vocab: Sequence[str], T: int = 32, queries: int = 8, next_per_query: int = 4,
                 min_support: int = 50, max_windows: int = 200, min_count: int = 3,
                 exclude: Sequence[str] = EXCLUDE, query_tokens: Sequence[str] | None = None,
                 seed: int = 0) -> Cooccurrence:
    """Select classes (see :func:`select_classes`) and count their contexts.

    Each class keeps N = min(smallest support of its query's classes, ``max_windows``) windows, drawn
    without replacement by ``seed`` (all of them when N equals the support).  Counting is one
    ``bincount`` over all windows at once.
    """
    if min_count < 1:
        raise UserError(f"min_count must be >= 1, got {min_count}")
    if max_windows < 1:
        raise UserError(f"max_windows must be >= 1, got {max_windows}")
    ids = np.asarray(ids, dtype=np.int64)
    V = len(vocab)
    q_ids, n_ids, sup = select_classes(ids, vocab, T, queries, next_per_query, min_support, exclude, query_tokens)
    Q, K = n_ids.shape
    N = int(min(sup.min(), max_windows))
    rng = np.random.default_rng(seed)
    pos = np.arange(T - 1, len(ids) - 1)
    key = ids[pos] * V + ids[pos + 1]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    windows = np.empty((Q, K, N), dtype=np.int64)
    for q in range(Q):  # Q * K classes: a short loop over classes, never over windows or tokens
        for k in range(K):
            k_id = q_ids[q] * V + n_ids[q, k]
            lo, hi = np.searchsorted(sorted_key, [k_id, k_id + 1])
            hits = pos[order[lo:hi]]
            windows[q, k] = np.sort(rng.choice(hits, N, replace=False)) if len(hits) > N else hits[:N]
    ctx = ids[windows[..., None] + np.arange(-(T - 1), 0)]  # (Q, K, N, T-1)
    cls = np.arange(Q * K).reshape(Q, K, 1, 1)
    counts = np.bincount((cls * V + ctx).ravel(), minlength=Q * K * V).reshape(Q, K, V).astype(np.float64)
    return Cooccurrence(vocab=list(vocab), T=T, queries=q_ids, next=n_ids, support=sup, windows=windows,
                        counts=counts, min_count=min_count)


def contexts(co: Cooccurrence, ids: np.ndarray) -> np.ndarray:
    """The context token ids of every used window: (Q, K, N, T-1)."""
    return np.asarray(ids)[co.windows[..., None] + np.arange(-(co.T - 1), 0)]


def query_table(co: Cooccurrence, top: int = 5) -> pd.DataFrame:
    """One row per class (m, n): support, windows used, role counts, and the ``top`` distinct tokens
    (by P(l|m,n)) and common tokens (by P(l|m) over the query's classes) with their probabilities."""
    P, d, c = co.probs, co.distinct, co.common
    leak = co.leak()
    rows = []
    for q in range(co.Q):
        pq = P[q].mean(0)  # P(l | m) over the query's (equally sized) classes
        common_ids = np.flatnonzero(c[q])
        common_ids = common_ids[np.argsort(-pq[common_ids], kind="stable")][:top]
        common_txt = ", ".join(f"{co.vocab[i]} ({pq[i]:.3f})" for i in common_ids)
        for k in range(co.K):
            dk = np.flatnonzero(d[q, k])
            dk = dk[np.argsort(-P[q, k, dk], kind="stable")]
            rows.append({
                "query": co.vocab[co.queries[q]], "next": co.vocab[co.next[q, k]],
                "support": int(co.support[q, k]), "windows": co.N, "T": co.T,
                "n_distinct": int(d[q, k].sum()), "n_common": int(c[q].sum()),
                "distinct_mass": float(P[q, k, d[q, k]].sum()), "common_mass": float(P[q, k, c[q]].sum()),
                "distinct_leak": float(leak[q, k]),
                "top_distinct": ", ".join(f"{co.vocab[i]} ({P[q, k, i]:.3f})" for i in dk[:top]),
                "top_common": common_txt,
            })
    return pd.DataFrame(rows)
