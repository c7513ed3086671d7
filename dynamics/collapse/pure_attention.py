"""Pure self-attention loses rank doubly exponentially (Dong, Cordonnier & Loukas 2021, Thm. 2.2).

A self-attention network (SAN) without skips, MLPs or normalisation::

    X_{l+1} = sum_h softmax(X_l W_QK^h X_l^T) X_l W_VO^h,   W_QK^h = W_Q^h W_K^h^T / sqrt(d_h)

Dong et al. bound the token residual res(X) = X - 1 x^T in the composite norm
||.||_{1,inf} = sqrt(||.||_1 ||.||_inf) by ||res(X_{l+1})|| <= c ||res(X_l)||^3, so log ||res|| falls
doubly exponentially and successive log-decrements grow by a factor 3.  Why cubic: write
X = 1 xbar^T + R (R = res, centred over tokens).  The logits are
S_ij = xbar W xbar + xbar W r_j + r_i W xbar + r_i W r_j; the first and third terms do not depend on j
and cancel in the row softmax, the second is the same for every row, so the rows of A differ only
through e_ij = r_i W r_j = O(R^2).  With A = 1 pi^T + dA (dA = O(R^2)) and A 1 = 1,
res(A X W) = P dA R W = O(R^3) (P centres over tokens).

Numerics.  The naive float64 product X -> A X W loses the residual below ~1e-16 ||X|| by
cancellation.  :func:`propagate_centred` follows (xbar, R) instead, with
dA_ij = pi_j expm1(e_ij - z_i), z_i = log1p(sum_k pi_k expm1(e_ik)), which keeps relative precision,
so the residual is followed down to ``floor`` (1e-150: below it e = O(R^2) would underflow).  It is
the same map, evaluated stably; :func:`propagate_naive` is kept for comparison.

Weights: W_Q, W_K, W_V with entries N(0, 1/d) (d x d_h per head), W_O with entries N(0, 1/d)
(d_h x d per head), inputs X_0 with entries N(0, 1) (Dong et al.'s Fig. 2 setting uses random
Gaussian weights; the constants here are ours).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..rank_collapse import composite_norm


@dataclasses.dataclass(frozen=True)
class SANWeights:
    """W_qk (L, H, d, d) and W_vo (L, H, d, d) for one network."""

    qk: np.ndarray
    vo: np.ndarray


def random_weights(depth: int, width: int, heads: int, rng: np.random.Generator) -> SANWeights:
    dh = width // heads
    s = width ** -0.5
    wq, wk, wv = (rng.standard_normal((3, depth, heads, width, dh)) * s)
    wo = rng.standard_normal((depth, heads, dh, width)) * s
    qk = np.einsum("lhak,lhbk->lhab", wq, wk) / np.sqrt(dh)
    vo = np.einsum("lhak,lhkb->lhab", wv, wo)
    return SANWeights(qk, vo)


def log_residual_ratio_naive(X0: np.ndarray, w: SANWeights) -> np.ndarray:
    """log(||res(X_l)|| / ||X_l||) for l = 0..L computed directly in float64. X0 (..., T, d) -> (..., L+1)."""
    X = np.asarray(X0, dtype=np.float64)
    out = [_log_ratio(X - X.mean(-2, keepdims=True), X)]
    for l in range(w.qk.shape[0]):
        S = np.einsum("...ia,hab,...jb->...hij", X, w.qk[l], X)
        A = np.exp(S - S.max(-1, keepdims=True))
        A /= A.sum(-1, keepdims=True)
        X = np.einsum("...hij,...jb,hbc->...ic", A, X, w.vo[l])
        out.append(_log_ratio(X - X.mean(-2, keepdims=True), X))
    return np.stack(out, -1)


def log_residual_ratio_centred(X0: np.ndarray, w: SANWeights, floor: float = 1e-150) -> np.ndarray:
    """The same quantity followed in centred coordinates (module docstring); NaN once ||res|| < floor."""
    X = np.asarray(X0, dtype=np.float64)
    xbar, R = X.mean(-2), X - X.mean(-2, keepdims=True)
    out = [_log_ratio(R, X)]
    alive = np.ones(X.shape[:-2], dtype=bool)
    T = X.shape[-2]
    for l in range(w.qk.shape[0]):
        new_xbar = np.zeros_like(xbar)
        new_R = np.zeros_like(R)
        for h in range(w.qk.shape[1]):
            W, V = w.qk[l, h], w.vo[l, h]
            c = np.einsum("...a,ab,...jb->...j", xbar, W, R)
            pi = np.exp(c - c.max(-1, keepdims=True))
            pi /= pi.sum(-1, keepdims=True)
            e = np.einsum("...ia,ab,...jb->...ij", R, W, R)
            z = np.log1p((pi[..., None, :] * np.expm1(e)).sum(-1))
            dA = pi[..., None, :] * np.expm1(e - z[..., None])
            dAR = dA @ R  # (..., T, d)
            new_R += (dAR - dAR.mean(-2, keepdims=True)) @ V
            new_xbar += (xbar + np.einsum("...j,...jd->...d", pi, R) + dAR.sum(-2) / T) @ V
        xbar, R = new_xbar, new_R
        X = xbar[..., None, :] + R
        ratio = _log_ratio(R, X)
        alive &= composite_norm(R) >= floor
        out.append(np.where(alive, ratio, np.nan))
    return np.stack(out, -1)


def _log_ratio(R: np.ndarray, X: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(composite_norm(R)) - np.log(composite_norm(X))


def decrement_ratios(log_ratio: np.ndarray, start: float = 1e-2, floor: float = 1e-150) -> np.ndarray:
    """Delta_{l+1} / Delta_l with Delta_l = log rho_l - log rho_{l-1}, over the last axis (layers).

    Kept only where the cubic regime applies and the numbers are resolved: rho_l <= ``start`` (the
    residual is already small) and rho_{l+1} >= ``floor``; NaN elsewhere.  Dong et al. predict 3.
    Returns (..., L - 1) aligned with l = 1..L-1.
    """
    lr = np.asarray(log_ratio, dtype=np.float64)
    d = np.diff(lr, axis=-1)  # Delta_1..Delta_L
    prev, nxt = d[..., :-1], d[..., 1:]
    rho_l = lr[..., 1:-1]
    rho_next = lr[..., 2:]
    ok = (rho_l <= np.log(start)) & (rho_next >= np.log(floor)) & (prev < 0) & np.isfinite(nxt)
    return np.where(ok, nxt / np.where(prev != 0, prev, np.nan), np.nan)
