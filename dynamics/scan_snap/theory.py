"""Closed forms of Scan and Snap (Tian, Wang, Chen, Du; NeurIPS 2023, arXiv 2305.16380 v4).

Every function is float64 numpy, vectorised: array arguments broadcast against each other.
Units: ``t`` counts gradient steps of the population (expected-gradient) dynamics, in which every
class n in [K] contributes with weight 1/K, so a class has been "seen" t/K times after t steps; this
is the convention of Appendix F (``h(t/K)``).  ``M`` is the vocabulary size of the decoder softmax.

Decoder (Sec. 4, App. D)
    Eq. 44-45   dh/dt = eta_Y / ((M-1) + e^{M h}),   e^{M h} + (M-1) M h = M eta_Y t + 1
    Eq. 33      h*(s) = h*(s-1) + eta_Y / ((M-1) + e^{M h*(s-1)})     (discrete steps, Lemma 5)
    Eq. 31      w_n = (M-1) h zeta_n, i.e. the logit of the correct token is (M-1) h and every other
                logit is -h, so the margin is M h
    Eq. 85      gamma(t) = (M-1)^2 h(t/K) / ((M-1) + e^{M h(t/K)})        ("speed control", Thm. 1)
    Lemma 9     h ~ eta_Y t/(M K) for t <~ K ln M/eta_Y;  h ~ ln(M eta_Y t/K)/M for t >~ 2(1+w1) K ln M/eta_Y

Attention (Sec. 5-6, App. E-F)
    Eq. 11      r_{l/l'|n}(t) = r_{l/l'|n}(0) e^{2 (z_ml(t) - z_ml(0))}                 (Thm. 3)
    Eq. 12      e^{2 f_nl0(0)^2 B_n} <= chi_l0 <= e^{2 B_n}
    Eq. 122     e^{-4 z(t)} = 1 + 4 Gamma(t)/C_0,  Gamma(t) = eta_Z int_0^t gamma = eta_Z K (M-1)^2 h(t/K)^2/(2 eta_Y)
    Eq. 124/129 B_n(t) = 1/4 ln(C_0 + 4 Gamma(t))                            (the paper drops -1/4 ln C_0)
    Eq. 14      the two regimes of B_n (Thm. 4): t < t'_0 = K ln M/eta_Y and t >= t_0 = 2 K ln M/eta_Y

The distinct-token invariant is derived here (not stated in the paper): for l in G_DT(n),
Eq. 98 gives dz_ml/dt = kappa_n(t) P(l|n)^2 e^{2 z_ml} with kappa_n shared by the class, so with
Z(0) = 0 the quantity (1 - e^{-2 z_ml(t)}) / P(l|n)^2 is the same for every distinct token of n.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special


def _check_M(M) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if np.any(M < 2):
        raise ValueError(f"M must be >= 2 (the decoder needs at least two outputs), got {M}")
    return M


# ---------------------------------------------------------------------------------------------
# decoder: h(t), h*(s), gamma(t)
# ---------------------------------------------------------------------------------------------
def h(t, M, eta_y, polish: bool = True) -> np.ndarray:
    """Solution of Eq. 45, e^{M h} + (M-1) M h = M eta_Y t + 1, through the Lambert W function.

    With x = M h and A = M eta_Y t + 1, write x = A/(M-1) - y: then y e^y = e^{A/(M-1)}/(M-1), so
    y = W(e^v) = omega(v) (Wright's omega) with v = A/(M-1) - ln(M-1).  Since y + ln y = v,
    x = A/(M-1) - y = ln((M-1) y): no cancellation for large t, no overflow of e^{A/(M-1)}.
    For M eta_Y t << 1 the logarithm of (M-1) y ~ 1 loses relative precision (1e-10 at
    M eta_Y t ~ 1e-6), so ``polish`` applies one Newton step on expm1(x) + (M-1) x - M eta_Y t.
    ``t`` counts steps of one class (use ``h(t/K, ...)`` for population time).
    """
    M = _check_M(M)
    t = np.asarray(t, dtype=np.float64)
    a = M * np.asarray(eta_y, dtype=np.float64) * t  # A - 1
    y = special.wrightomega((a + 1) / (M - 1) - np.log(M - 1)).real
    x = np.log((M - 1) * y)
    if polish:
        x = x - _residual(x, M, a) / (np.exp(x) + (M - 1))
    # h(0) = 0 exactly (rounding can leave -1e-17 there), and h >= 0 for t >= 0
    return np.maximum(x, 0.0) / M


def _residual(x, M, a):
    """e^x + (M-1) x - (a + 1), written with expm1 so it is accurate for small x."""
    return np.expm1(x) + (M - 1) * x - a


def h_root(t, M, eta_y, iters: int = 200) -> np.ndarray:
    """Eq. 45 solved by Newton's method (the cross-check of :func:`h`).

    f(x) = e^x + (M-1) x - A is convex and increasing; both ln A and (A-1)/(M-1) lie on or above the
    root (f >= 0 there), so Newton from their minimum decreases monotonically to the root.
    """
    M = _check_M(M)
    a = M * np.asarray(eta_y, dtype=np.float64) * np.asarray(t, dtype=np.float64)
    x = np.minimum(np.log1p(a), a / (M - 1))
    for _ in range(iters):
        step = _residual(x, M, a) / (np.exp(x) + (M - 1))
        x = x - step
        if np.all(np.abs(step) <= 4e-16 * np.abs(x)):
            break
    return x / M


def h_discrete(steps: int, M, eta_y) -> np.ndarray:
    """h*(s) for s = 0..steps (Eq. 33, Lemma 5): the decoder margin after s steps of one class.

    Returns shape (steps + 1,) + broadcast(M, eta_y).shape.
    """
    M = _check_M(M)
    eta_y = np.asarray(eta_y, dtype=np.float64)
    out = np.zeros((steps + 1,) + np.broadcast(M, eta_y).shape)
    for s in range(1, steps + 1):  # a recursion: each step needs the previous one
        out[s] = out[s - 1] + eta_y / ((M - 1) + np.exp(M * out[s - 1]))
    return out


def h_dot(t, M, eta_y) -> np.ndarray:
    """dh/dt = eta_Y / ((M-1) + e^{M h(t)}) (Eq. 44)."""
    return np.asarray(eta_y, dtype=np.float64) / ((_check_M(M) - 1) + np.exp(M * h(t, M, eta_y)))


def gamma(t, K, M, eta_y) -> np.ndarray:
    """Speed-control coefficient of Theorem 1 (Eq. 85), continuous in t:
    gamma(t) = (M-1)^2 h(t/K) / ((M-1) + e^{M h(t/K)}).  (The paper's Eq. 85 writes ceil(t/K);
    App. F integrates the continuous form, which is what this returns.)"""
    M = _check_M(M)
    hk = h(np.asarray(t, dtype=np.float64) / K, M, eta_y)
    return (M - 1) ** 2 * hk / ((M - 1) + np.exp(M * hk))


def Gamma(t, K, M, eta_y, eta_z) -> np.ndarray:
    """Gamma(t) = eta_Z int_0^t gamma = eta_Z K (M-1)^2 h(t/K)^2 / (2 eta_Y) (Eqs. 125-128)."""
    M = _check_M(M)
    hk = h(np.asarray(t, dtype=np.float64) / K, M, eta_y)
    return np.asarray(eta_z, dtype=np.float64) * K * (M - 1) ** 2 * hk ** 2 / (2 * np.asarray(eta_y, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# phase transition times
# ---------------------------------------------------------------------------------------------
class Transition(NamedTuple):
    """t_0 (start of snapping, Thm. 4) and t'_0 (end of scanning); both in population steps."""

    t0: np.ndarray
    scan_end: np.ndarray


def transition_time(K, M, eta_y, exact: bool = False) -> Transition:
    """t_0 = 2 K ln M / eta_Y and t'_0 = K ln M / eta_Y (Thm. 4, Eq. 14).

    ``exact=True`` replaces t_0 by the time at which e^{M h(t/K)} = (M-1) M h(t/K) (Lemma 8's larger
    root x* = M h = -W_{-1}(-1/(M-1)), the end of Lemma 9's first regime), which the paper writes as
    2 (1 + omega_1) K ln M / eta_Y with omega_1 = Theta(ln ln M / ln M); from Eq. 45,
    t_0 = K (2 (M-1) x* - 1) / (M eta_Y).  Needs M >= 4 (for M - 1 < e there is no crossing).
    """
    M = _check_M(M)
    eta_y = np.asarray(eta_y, dtype=np.float64)
    scan_end = K * np.log(M) / eta_y
    if not exact:
        return Transition(2 * scan_end, scan_end)
    if np.any(M - 1 <= np.e):
        raise ValueError("exact transition time needs M - 1 > e")
    x_star = -special.lambertw(-1.0 / (M - 1), k=-1).real
    return Transition(K * (2 * (M - 1) * x_star - 1) / (M * eta_y), scan_end)


def gamma_peak_time(K, M, eta_y) -> np.ndarray:
    """The step at which gamma(t) (Eq. 85) is largest, where the scanning phase ends.

    d/dh [h / ((M-1) + e^{M h})] = 0 gives e^x (x - 1) = M - 1 for x = M h, so x_p = 1 + W((M-1)/e),
    and Eq. 45 turns x_p into the time t_p = K (e^{x_p} + (M-1) x_p - 1) / (M eta_Y) ~ K ln M / eta_Y.
    """
    M = _check_M(M)
    x = 1 + special.lambertw((M - 1) / np.e).real
    return K * (np.exp(x) + (M - 1) * x - 1) / (M * np.asarray(eta_y, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# attention: B_n(t), common-token logit, Theorem 3
# ---------------------------------------------------------------------------------------------
def B(t, K, M, eta_y, eta_z, C0, form: str = "exact", offset: bool = False) -> np.ndarray:
    """B_n(t) := eta_Z int_0^t xi_n, under Theorem 4's hypothesis (Eq. 13).

    form="exact":      Eq. 129, 1/4 ln(C_0 + 2 (eta_Z/eta_Y) K (M-1)^2 h(t/K)^2).
    form="two-regime": Eq. 14, 1/4 ln(C_0 + 2 (M-1)^2/(K M^2) eta_Y eta_Z t^2) for t < t'_0 and
                       1/4 ln(C_0 + 2 K (M-1)^2/M^2 (eta_Z/eta_Y) ln^2(M eta_Y t/K)) for t >= t_0;
                       NaN in between (Eq. 14 does not cover t'_0 <= t < t_0).
    ``offset=True`` subtracts 1/4 ln C_0, which the paper drops: then B_n(0) = 0 and B_n is the
    integral itself (the quantity that bounds chi_l0 in Eq. 12).
    """
    M = _check_M(M)
    t = np.asarray(t, dtype=np.float64)
    eta_y = np.asarray(eta_y, dtype=np.float64)
    eta_z = np.asarray(eta_z, dtype=np.float64)
    if form == "exact":
        inner = C0 + 4 * Gamma(t, K, M, eta_y, eta_z)
    elif form == "two-regime":
        tr = transition_time(K, M, eta_y)
        early = C0 + 2 * (M - 1) ** 2 / (K * M ** 2) * eta_y * eta_z * t ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            late = C0 + 2 * K * (M - 1) ** 2 / M ** 2 * (eta_z / eta_y) * np.log(M * eta_y * t / K) ** 2
        inner = np.where(t < tr.scan_end, early, np.where(t >= tr.t0, late, np.nan))
    else:
        raise ValueError(f"form must be 'exact' or 'two-regime', got {form!r}")
    out = 0.25 * np.log(inner)
    return out - 0.25 * np.log(C0) if offset else out


def B_at_t0(K, M, nu, C0) -> np.ndarray:
    """B_n(t_0) = 1/4 ln(C_0 + 2 K (M-1)^2 M^-2 nu^-1 ln^2(2 M ln M)) with nu = eta_Y/eta_Z (App. F,
    after Eq. 131, with 1 + omega_1 -> 1): it depends on K, M and nu only, not on eta_Z."""
    M = _check_M(M)
    return 0.25 * np.log(C0 + 2 * K * (M - 1) ** 2 / M ** 2 / np.asarray(nu, dtype=np.float64)
                         * np.log(2 * M * np.log(M)) ** 2)


def common_logit(t, K, M, eta_y, eta_z, C0) -> np.ndarray:
    """Trajectory of the single common token's logit (Eq. 122 with z(0) = 0):
    z(t) = -1/4 ln(1 + 4 Gamma(t)/C_0)."""
    return -0.25 * np.log1p(4 * Gamma(t, K, M, eta_y, eta_z) / C0)


def growth_bounds(B_n, f2_l0_init, K: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 12: (lower, upper) = (e^{2 f_nl0(0)^2 B_n/K}, e^{2 B_n/K}) bounds on chi_l0, with B_n the
    integral (``B(..., offset=True)``).

    The paper's Eq. 98 (dz_ml/dt = eta_Z f_nl^2 xi_n) counts one update per occurrence of class n;
    per population step (or per batch-1 SGD step in expectation) class n occurs with probability 1/K,
    so in population steps the exponent carries 1/K: pass ``K`` for population time, 1 for the
    paper's per-occurrence time.
    """
    B_n = np.asarray(B_n, dtype=np.float64) / K
    return np.exp(2 * np.asarray(f2_l0_init) * B_n), np.exp(2 * B_n)


def relative_gain_initial(p_l, p_lp, z_l0=0.0, z_lp0=0.0) -> np.ndarray:
    """r_{l/l'|n}(0) = (P(l|n) e^{z_ml(0)} / (P(l'|n) e^{z_ml'(0)}))^2 - 1 (Sec. 5, "initial value
    as prior")."""
    return (np.asarray(p_l) * np.exp(z_l0) / (np.asarray(p_lp) * np.exp(z_lp0))) ** 2 - 1.0


def relative_gain(r0, z_l, z_l0=0.0) -> np.ndarray:
    """Theorem 3, Eq. 11: r_{l/l'|n}(t) = r_{l/l'|n}(0) chi_l(t), chi_l = e^{2 (z_ml(t) - z_ml(0))}."""
    return np.asarray(r0) * np.exp(2 * (np.asarray(z_l) - z_l0))


def relative_gain_measured(z_l, z_lp, p_l, p_lp) -> np.ndarray:
    """r_{l/l'|n}(t) = c~_{l|n}^2 / c~_{l'|n}^2 - 1 from logits: the left side of Eq. 11."""
    return (np.asarray(p_l) * np.exp(z_l) / (np.asarray(p_lp) * np.exp(z_lp))) ** 2 - 1.0


def distinct_invariant(z, p) -> np.ndarray:
    """(1 - e^{-2 z_ml}) / P(l|n)^2: equal across the distinct tokens of a class when Z(0) = 0.

    Derivation: Eq. 98 (Thm. 2a) gives dz_ml/dt = eta_Z f_nl^2 xi_n with f_nl^2 = P(l|n)^2 e^{2 z_ml}
    / ||c~_n||^2, so d/dt (1 - e^{-2 z_ml}) / P(l|n)^2 = 2 eta_Z xi_n / ||c~_n||^2, the same for all l.
    Exact when the decoder sees the current attention (Assumption 1c); NaN where P = 0.
    """
    p = np.asarray(p, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, -np.expm1(-2 * z) / np.where(p > 0, p, 1.0) ** 2, np.nan)


def invariant_spread(Z_rows, probs, distinct) -> np.ndarray:
    """Relative spread of the distinct-token invariant within each class:
    max_l |I_l - mean_l I| / |mean_l I| over l in G_DT(n).

    Z_rows: (..., K, M) the query row z_{psi(n)} of every class; probs, distinct: (K, M).
    Returns (..., K); NaN for classes with fewer than two distinct tokens or mean 0 (e.g. at t = 0).
    """
    inv = distinct_invariant(Z_rows, np.where(distinct, probs, 0.0))
    inv = np.where(distinct, inv, np.nan)
    count = distinct.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.nansum(np.where(distinct, inv, 0.0), -1) / count
        dev = np.nanmax(np.abs(inv - mean[..., None]), -1) / np.abs(mean)
    return np.where((count >= 2) & (mean != 0), dev, np.nan)


# ---------------------------------------------------------------------------------------------
# Theorem 4's constant C_0 for a data model
# ---------------------------------------------------------------------------------------------
def overlap(probs: np.ndarray) -> np.ndarray:
    """F^T F at Z = 0: f_n^T f_n' = P(.|n)^T P(.|n') / (||P(.|n)|| ||P(.|n')||).  (K, K)"""
    probs = np.asarray(probs, dtype=np.float64)
    unit = probs / np.linalg.norm(probs, axis=1, keepdims=True)
    return unit @ unit.T


def theorem4_c0(probs: np.ndarray, common: np.ndarray, query: np.ndarray) -> float:
    """C_0 of Eq. 13 for a data model whose classes share their common tokens symmetrically.

    Eq. 13 assumes f_n^T f_n' ~ beta_nn' ~ e^{2 z}/rho_0^2 with the normalisation rho_0 frozen; with
    Z(0) = 0 this fixes rho_0^2 = 1 / f_n^T f_n'(0) (averaged over pairs n != n'; with several common
    tokens of equal P(l|n) across classes, Corollary 2's symmetric case, they move as one).
    In population steps (classes weighted 1/K) Eq. 100 reads
    dz/dt = -(eta_Z/K) gamma sum_{n in psi^-1(m)} (1 - f_nl^2) sum_{n' != n} beta_nn' f_n^T f_n', which
    with 1 - f_nl^2 ~ 1 (as the paper takes it) is dz/dt = -C_0^{-1} eta_Z gamma e^{4z} with

        C_0 = K rho_0^4 / (|psi^-1(m)| (K - 1))       (= rho_0^4 / (K - 1) for one shared query).

    The paper writes C_0 := rho_0^4 / K: its Eq. 10 sums over n without the 1/K class weight that its
    h(t/K) assumes, and it counts K terms in sum_{n' != n}.
    """
    probs = np.asarray(probs, dtype=np.float64)
    K = probs.shape[0]
    if K < 2 or not np.any(common):
        raise ValueError("Theorem 4 needs K >= 2 classes and at least one common token")
    G = overlap(probs)
    rho0_sq = 1.0 / G[~np.eye(K, dtype=bool)].mean()
    per_query = np.mean([np.sum(query == q) for q in np.unique(query)])
    return float(K * rho0_sq ** 2 / (per_query * (K - 1)))
