"""Scan and Snap at finite sequence length T: the O(1/T) correction of the expected gradient, the
sign-flip boundary it predicts for Theorem 2, and a finite-T SGD simulator whose windows are drawn as
multinomial counts (cost independent of T).

**Why a correction.**  Tian et al. 2023 (Assumption 1b, Lemma 2) take T -> infinity, so the attention
of a window of class n is c_n(P) with P = P(.|n).  A window of T - 1 i.i.d. keys has empirical
frequencies p_hat = counts/(T - 1), multinomial with mean P and covariance Sigma/(T - 1),
Sigma = diag(P) - P P^T.  Every per-sample quantity of the Y/Z model (attention c, decoder input f,
both gradients) depends on the window only through p_hat, and is homogeneous of degree 0 in it
(c_l = p_l e^{z_l} / sum_l' p_l' e^{z_l'}).  The second-order (delta-method) expansion of its mean is

    E[g(p_hat)] = g(P) + 1/(2 (T-1)) tr(Sigma H_g(P)) + O(T^-2)
                = g(P) + 1/(2 (T-1)) sum_i P_i d^2 g/dp_i^2 (P) + O(T^-2)                 (FT-1)

because P^T H_g(P) P = d^2/dlambda^2 g(lambda P) = 0 for a degree-0 homogeneous g.  For g = p_l^2 the
expansion is exact: E[p_hat_l^2] = P_l^2 + P_l (1 - P_l)/(T - 1) (checked in :mod:`.symbolic`).

**The corrected mean-field flow.**  Plain SGD on windows of length T has expected update
-eta E_n E_{p_hat|n}[grad l(p_hat)].  :class:`CorrectedFlow` is gradient descent on that expectation
truncated at O(1/(T-1)) by (FT-1); the second derivatives are central differences in float64 along each
support token (step ``rel_step`` P_i), so the correction is a weighted sum of the exact per-sample
gradients of :mod:`.grouped` at 2 s + 1 count vectors per class (s = support size):

    weight of P:            1 - eps sum_i P_i / h_i^2         eps = 1/(T-1),  h_i = rel_step * P_i
    weight of P +- h_i e_i: eps P_i / (2 h_i^2)

With eps = 0 it is the population dynamics of :mod:`.population` (``descend``); it ignores the SGD
fluctuations (O(eta/B)), which the experiment measures next to it.

**Where a sign flips.**  Theorem 2 says z_ml rises for a distinct token and falls for the common token.
The flow gives z_ml(t; T); the predicted boundary is the T at which z_ml(t_end; T) = 0 for each token,
found by bisection in log T (:func:`flip_boundary`).  For a distinct token in the scanning phase the
leading terms are, per step and up to a positive factor shared by the class (docs/scan_snap_finite_t.md),

    population:  P_l^2 sum_{n' != n} f_n^T f_n' / M        finite T:  - P_l (1 - P_l/||P||^2) / (T-1)

so rare tokens (P_l < ||P||^2) flip first and the boundary is roughly T* P_l = const.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..runtime import record_within, threads
from . import model
from .data import SequenceClasses, from_probs
from .grouped import ClassLayout
from .train import input_vocab


# ---------------------------------------------------------------------------------------------
# the data model of the finite-T experiment
# ---------------------------------------------------------------------------------------------
def geometric_classes(K: int, n_distinct: int, n_common: int, common_weight: float, p_ratio: float) -> SequenceClasses:
    """K classes sharing one query, ``n_common`` common tokens of unnormalised weight ``common_weight``
    and ``n_distinct`` distinct tokens per class with weights geometric from 1/p_ratio to 1, so that
    P(l|n) spans a factor ``p_ratio`` (the P axis of the T x P grid).  Token layout as
    :func:`dynamics.scan_snap.data.build_classes`: common, distinct blocks, query, next tokens."""
    if K < 2 or n_distinct < 2 or n_common < 1 or common_weight <= 0 or p_ratio <= 1:
        raise ValueError("need K >= 2, n_distinct >= 2, n_common >= 1, common_weight > 0, p_ratio > 1")
    last0 = n_common + K * n_distinct
    M = last0 + 1 + K
    probs = np.zeros((K, M))
    weights = np.geomspace(1.0 / p_ratio, 1.0, n_distinct)
    for n in range(K):
        probs[n, :n_common] = common_weight
        probs[n, n_common + n * n_distinct:n_common + (n + 1) * n_distinct] = weights
    probs /= probs.sum(1, keepdims=True)
    return from_probs(probs, np.full(K, last0), last0 + 1 + np.arange(K))


# ---------------------------------------------------------------------------------------------
# corrected mean-field flow
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FlowResult:
    """steps (S,) recorded; Z (S, R, Q, V) query rows on the input vocabulary; loss (steps, R), the loss
    before each step; vocab (V,) and queries (Q,) token ids."""

    steps: np.ndarray
    Z: np.ndarray
    loss: np.ndarray
    vocab: np.ndarray
    queries: np.ndarray


class CorrectedFlow:
    """Gradient descent on the O(1/(T-1))-corrected expected loss (FT-1) for R runs with their own
    T (``np.inf`` = the population limit) and learning rates.  State Y (R, V, M), Zq (R, Q, V), float64."""

    def __init__(self, classes: SequenceClasses, T: Sequence[float], eta_y: Sequence[float], eta_z: Sequence[float],
                 rel_step: float = 1e-2, device: str = "cpu"):
        R = len(T)
        if not (len(eta_y) == len(eta_z) == R):
            raise ValueError("T, eta_y and eta_z need one entry per run")
        if any(t <= 1 for t in T):
            raise ValueError("T must exceed 1 (at least one key)")
        self.classes, self.R, self.M = classes, R, classes.M
        self.device, self.dtype = torch.device(device), torch.float64
        self.vocab, self.queries = input_vocab(classes, False), classes.queries
        self.V, self.Q = len(self.vocab), len(self.queries)
        self.layout = ClassLayout(classes, self.vocab, self.queries, False, self.device)
        K, s = self.layout.K, self.layout.s
        sup = self.layout.sup.cpu().numpy()
        real = np.array([[j < int((classes.probs[k] > 0).sum()) for j in range(s)] for k in range(K)])
        P = np.where(real, classes.probs[np.arange(K)[:, None], self.vocab[sup]], 0.0)  # (K, s)
        h = rel_step * P
        rows = 1 + 2 * s  # P, then P + h_i e_i and P - h_i e_i for every slot i
        counts = np.repeat(P[:, None, :], rows, axis=1)
        idx = np.arange(s)
        counts[:, 1 + idx, idx] += h
        counts[:, 1 + s + idx, idx] -= h
        eps = np.array([0.0 if math.isinf(t) else 1.0 / (t - 1.0) for t in T])
        with np.errstate(divide="ignore", invalid="ignore"):
            side = np.where(real, P / (2 * h ** 2), 0.0)  # (K, s)
        w = np.zeros((R, K, rows))
        w[:, :, 0] = 1.0 - eps[:, None] * 2 * side.sum(1)[None, :]
        w[:, :, 1:1 + s] = eps[:, None, None] * side[None]
        w[:, :, 1 + s:] = eps[:, None, None] * side[None]
        # padding slots (classes with smaller support) keep a zero count and a zero weight
        self.counts = torch.as_tensor(np.broadcast_to(counts, (R,) + counts.shape).copy(), dtype=self.dtype,
                                      device=self.device)
        self.weights = torch.as_tensor(w, dtype=self.dtype, device=self.device)
        self.lr_y = torch.tensor(list(eta_y), dtype=self.dtype, device=self.device).view(-1, 1, 1)
        self.lr_z = torch.tensor(list(eta_z), dtype=self.dtype, device=self.device).view(-1, 1, 1)
        self.K = K

    def gradients(self, Y: torch.Tensor, Zq: torch.Tensor):
        """(loss (R,), dL/dY (R, V, M), dL/dZq (R, Q, V)) of the corrected expected loss."""
        return self.layout.loss_and_grads(Y, Zq, self.counts, self.weights, self.K, True)

    def descend(self, steps: int, record: Sequence[int]) -> FlowResult:
        record = record_within(record, steps)
        Y = torch.zeros(self.R, self.V, self.M, dtype=self.dtype, device=self.device)
        Z = torch.zeros(self.R, self.Q, self.V, dtype=self.dtype, device=self.device)
        Zs, losses = [], []
        with threads(1), torch.no_grad():
            for step in range(steps + 1):
                if step in record:
                    Zs.append(Z.cpu().numpy().copy())
                if step == steps:
                    break
                loss, gy, gz = self.gradients(Y, Z)
                losses.append(loss.cpu().numpy())
                Y.addcmul_(self.lr_y, gy, value=-1.0)
                Z.addcmul_(self.lr_z, gz, value=-1.0)
        return FlowResult(np.asarray(record), np.stack(Zs), np.asarray(losses), self.vocab, self.queries)


def window_expectation_mc(classes: SequenceClasses, Y: torch.Tensor, Zq: torch.Tensor, T: int, samples: int,
                          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo E_n E_{p_hat|n}[grad] at one state (R = 1): ``samples`` multinomial windows per
    class.  The independent check of (FT-1) (tests)."""
    vocab, queries = input_vocab(classes, False), classes.queries
    K = classes.K
    probs = classes.probs[:, vocab]
    cls = np.repeat(np.arange(K), samples)
    counts = np.stack([rng.multinomial(T - 1, probs[k]) for k in cls]).astype(float)
    row = {int(q): i for i, q in enumerate(queries)}
    qrow = torch.tensor([[row[int(classes.query[k])] for k in cls]])
    label = torch.as_tensor(classes.next[cls])[None]
    _, gy, gz = model.loss_and_grads(Y, Zq, qrow, torch.as_tensor(counts)[None], None, label, True)
    return gy, gz


# ---------------------------------------------------------------------------------------------
# finite-T SGD with multinomial windows
# ---------------------------------------------------------------------------------------------
def sgd_runs(classes: SequenceClasses, T: Sequence[int], eta_y: Sequence[float], eta_z: Sequence[float],
             seed_seqs: Sequence[np.random.SeedSequence], batch: int, steps: int, record: Sequence[int],
             dtype: torch.dtype = torch.float64, bar=None, windows: np.ndarray | None = None) -> FlowResult:
    """Plain SGD (no momentum, Y(0) = Z(0) = 0) of R runs, run r on windows of length T[r].

    A window is its key counts, drawn as Multinomial(T - 1, P(.|n)) for a class n drawn uniformly: the
    same law as T - 1 i.i.d. keys (the model has no positional encoding, so only counts matter), at a
    cost independent of T.  Run r draws from ``numpy.random.default_rng(seed_seqs[r])``.

    ``windows`` (K, N, M), optional: fixed key counts of N given windows per class on the classes'
    M columns (real text, :func:`dynamics.scan_snap.windows.window_counts`).  Then a sample is a class
    drawn uniformly and one of its N windows drawn uniformly, as :func:`dynamics.scan_snap.text.train`
    draws real windows, and T only labels the run.
    """
    R = len(T)
    vocab, queries = input_vocab(classes, False), classes.queries
    V, M, K = len(vocab), classes.M, classes.K
    probs = classes.probs[:, vocab]
    row = {int(q): i for i, q in enumerate(queries)}
    qrow_of = np.array([row[int(q)] for q in classes.query])
    rngs = [np.random.default_rng(s) for s in seed_seqs]
    Y = torch.zeros(R, V, M, dtype=dtype)
    Z = torch.zeros(R, len(queries), V, dtype=dtype)
    lr_y = torch.tensor(list(eta_y), dtype=dtype).view(-1, 1, 1)
    lr_z = torch.tensor(list(eta_z), dtype=dtype).view(-1, 1, 1)
    record = record_within(record, steps)
    Zs, losses = [], []
    counts = np.empty((R, batch, V))
    cls = np.empty((R, batch), dtype=np.int64)
    fixed = None if windows is None else np.asarray(windows, dtype=np.float64)[:, :, vocab]
    if fixed is not None and fixed.shape[0] != K:
        raise ValueError(f"windows needs one block per class: got {fixed.shape[0]} for K = {K}")
    progress = bar(steps, "finite-T SGD", unit="step") if bar else None
    with threads(1), torch.no_grad():
        for step in range(steps + 1):
            if step in record:
                Zs.append(Z.to(torch.float64).numpy().copy())
            if step == steps:
                break
            for r, g in enumerate(rngs):
                cls[r] = g.integers(K, size=batch)
                if fixed is None:
                    counts[r] = g.multinomial(int(T[r]) - 1, probs[cls[r]])
                else:
                    counts[r] = fixed[cls[r], g.integers(fixed.shape[1], size=batch)]
            qrow = torch.as_tensor(qrow_of[cls])
            label = torch.as_tensor(classes.next[cls])
            loss, gy, gz = model.loss_and_grads(Y, Z, qrow, torch.as_tensor(counts, dtype=dtype), None, label, True)
            losses.append(loss.double().numpy())
            Y.addcmul_(lr_y, gy, value=-1.0)
            Z.addcmul_(lr_z, gz, value=-1.0)
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return FlowResult(np.asarray(record), np.stack(Zs), np.stack(losses), vocab, queries)


# ---------------------------------------------------------------------------------------------
# reading token logits and boundaries
# ---------------------------------------------------------------------------------------------
def token_logits(res: FlowResult, classes: SequenceClasses) -> tuple[np.ndarray, np.ndarray]:
    """Final logits of the symmetric token types, averaged over classes: (distinct (R, D), common (R, C)).

    Column j of ``distinct`` is the j-th distinct token of every class (same P(l|n) in every class of
    :func:`geometric_classes`); ``common`` holds each common token on the shared query row.
    """
    col = {int(v): i for i, v in enumerate(res.vocab)}
    row = {int(q): i for i, q in enumerate(res.queries)}
    Zend = res.Z[-1]  # (R, Q, V)
    K = classes.K
    dist = []
    for n in range(K):
        toks = np.flatnonzero(classes.distinct[n])
        dist.append(Zend[:, row[int(classes.query[n])], [col[int(t)] for t in toks]])
    common = np.flatnonzero(classes.common)
    com = np.mean([Zend[:, row[int(classes.query[n])], [col[int(t)] for t in common]] for n in range(K)], 0)
    return np.mean(dist, 0), com


def distinct_probs(classes: SequenceClasses) -> np.ndarray:
    """P(l|n) of the j-th distinct token (class 0; the same in every class of geometric_classes). (D,)"""
    return classes.probs[0, classes.distinct[0]]


def crossing(x: np.ndarray, y: np.ndarray) -> float:
    """The x at which y(x) changes sign, by linear interpolation in log x between the two grid points
    around the *last* sign change (y is expected negative at small x and positive at large x for a
    distinct token; pass -y for the common token).  NaN when y has one sign throughout: the boundary
    lies outside the grid."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not np.all(np.isfinite(y)):
        return math.nan
    neg = np.flatnonzero(y[:-1] * y[1:] < 0)
    if len(neg) == 0:
        return math.nan
    i = neg[-1]
    lx = np.log(x[i:i + 2])
    return float(np.exp(lx[0] - y[i] * (lx[1] - lx[0]) / (y[i + 1] - y[i])))


def flip_boundary(classes: SequenceClasses, eta_y: float, eta_z: float, steps: int, T_lo: float, T_hi: float,
                  iters: int = 18, rel_step: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Predicted T* for every distinct token (D,) and every common token (C,): the T at which the
    corrected flow's z_ml(steps; T) changes sign, by bisection in log T on [T_lo, T_hi] (all tokens
    bisected together, one batched flow per iteration).  NaN where the sign is the same at both ends."""
    def final(Ts):
        flow = CorrectedFlow(classes, list(Ts), [eta_y] * len(Ts), [eta_z] * len(Ts), rel_step)
        d, c = token_logits(flow.descend(steps, [steps]), classes)
        return d, -c  # both positive for the theory's sign

    D = int(classes.distinct[0].sum())
    C = int(classes.common.sum())
    lo, hi = np.full(D + C, math.log(T_lo)), np.full(D + C, math.log(T_hi))
    d_lo, c_lo = final([T_lo])
    d_hi, c_hi = final([T_hi])
    s_lo = np.sign(np.concatenate([d_lo[0], c_lo[0]]))
    s_hi = np.sign(np.concatenate([d_hi[0], c_hi[0]]))
    inside = s_lo != s_hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        d, c = final(np.exp(mid))
        # run i of this batch is token i's own midpoint: read token i's logit from run i
        vals = np.concatenate([d[np.arange(D), np.arange(D)], c[D + np.arange(C), np.arange(C)]])
        same_as_lo = np.sign(vals) == s_lo
        lo = np.where(same_as_lo, mid, lo)
        hi = np.where(same_as_lo, hi, mid)
    out = np.where(inside, np.exp((lo + hi) / 2), np.nan)
    return out[:D], out[D:]


# ---------------------------------------------------------------------------------------------
# real-text classes with i.i.d. resampled contexts (issue 19, real text step 1)
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PooledQuery:
    """One query's classes from real co-occurrence counts, ready for the synthetic simulators.

    classes: K classes (one shared query) over the query's role tokens plus one pooled token per class;
    roles:   (K, M) int, +1 distinct token of class k, -1 common token, 0 pooled / query / next (by the
             co-occurrence's ``min_count`` roles, not by ``classes.distinct``, which counts any overlap);
    tokens:  (M,) corpus token id of each column (-1 for pooled tokens, the query and next tokens keep theirs).
    """

    classes: SequenceClasses
    roles: np.ndarray
    tokens: np.ndarray

    def column_roles(self) -> np.ndarray:
        """(M,) str: "distinct" for a column that is distinct in some class, else "common" for one that is
        common in some class, else "other" (pooled tokens, the query, the next tokens)."""
        return np.where((self.roles == 1).any(0), "distinct", np.where((self.roles == -1).any(0), "common", "other"))


def pooled_query(counts: np.ndarray, min_count: int, query: int, next_tokens: np.ndarray) -> PooledQuery:
    """Classes s_{m,n} whose P(l|m,n) is the empirical context distribution of real windows.

    counts (K, V): occurrences of each corpus token in the contexts of class k's windows.  Tokens with a
    role (count >= ``min_count`` in some class: distinct if in exactly one, common if in several) keep their
    own column and their exact P(l|m,n), including occurrences below ``min_count`` in the other class
    (the leak of real text).  Tokens without a role (rare in every class: about 90% of the support, 20% of
    the mass at T = 32) are pooled into one token per class, distinct to it: sampling keeps the law of every
    role token's count exactly, and the pooled token stands for many rare keys sharing one logit.
    Decoder outputs: the columns plus the query and the K next tokens (M = columns + 1 + K).
    """
    counts = np.asarray(counts, dtype=np.float64)
    K = counts.shape[0]
    has_role = (counts >= min_count).any(0)
    has_role[[query, *next_tokens]] = False
    cols = np.flatnonzero(has_role)
    omega = (counts[:, cols] >= min_count).sum(0)
    rest = np.where(has_role[None, :], 0.0, counts).sum(1)  # (K,)
    body = counts[:, cols]
    C = len(cols)
    M = C + K + 1 + K
    probs = np.zeros((K, M))
    probs[:, :C] = body
    probs[np.arange(K), C + np.arange(K)] = rest
    probs /= probs.sum(1, keepdims=True)
    roles = np.zeros((K, M), dtype=np.int64)
    roles[:, :C] = np.where(omega == 1, np.where(body >= min_count, 1, 0), -1)[None, :] * (body > 0)
    tokens = np.concatenate([cols, np.full(K, -1), [query], np.asarray(next_tokens)])
    q = C + K
    return PooledQuery(from_probs(probs, np.full(K, q), q + 1 + np.arange(K)), roles, tokens)


def role_signs(res: FlowResult, pq: PooledQuery) -> dict[str, np.ndarray]:
    """Final-step role fractions per run: distinct tokens with z > 0 and common tokens with z < 0
    (Thm. 2 under the min_count roles; NaN when the role is empty, as in long real windows where every
    token is common), and the per-column final logits.  Each (R,) / (R, M)."""
    col = {int(v): i for i, v in enumerate(res.vocab)}
    M = pq.classes.M
    z = np.full((res.Z.shape[1], M), np.nan)
    for j in range(M):
        if j in col:
            z[:, j] = res.Z[-1][:, 0, col[j]]
    role = pq.column_roles()
    d, c = role == "distinct", role == "common"
    share = lambda hit, mask: hit[:, mask].sum(1) / mask.sum() if mask.any() else np.full(len(z), np.nan)
    return {"distinct_up": share(z > 0, d), "common_down": share(z < 0, c), "z": z}
