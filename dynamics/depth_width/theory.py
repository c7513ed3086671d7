"""Closed forms and related bounds for width versus depth in self-attention.

Levine, Wies, Sharir, Bata & Shashua (NeurIPS 2020; arXiv 2006.12467 v3):

* depth threshold L_th = log_3 d_x: below it log sep grows like 3^L log d_x (double-exponential in
  depth, polynomial in width), above it like L d_x (depth and width interchangeable);
* the empirical optimum d_x^opt(L) = exp(a + b L), a = 5.039, b = 0.0555, with the non-embedding
  parameter count N = 12 L d_x^2 (values as quoted by bigscience-workshop/bigscience math/README.md).

Counting bounds used next to the exact ranks (this package):

* the network's output is a polynomial of degree D = 3^L in the inputs, so its separation rank is
  at most the number of monomials of degree <= D in the smaller side's n d_x variables,
  C(n d_x + D, D); log C(n + D, D) ~ min(D log(n/D), n log(D/n)) shows the two regimes with the
  crossover at 3^L ~ n d_x;
* for N = 2, sep <= C(d_x + m_L, d_x) with m_L = (3^L - 1)/2, the number of monomials of degree
  <= m_L in d_x variables, for any weights, heads and residual (proven in docs/depth_width.md: f has
  odd degree in x^0 and even degree in x^1, term by term); every measured N = 2 rank meets it, so
  there the bound is the rank.

Wies, Levine, Jannai & Shashua (ICML 2021): inputs of rank r replace d_x by min(r, d_x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# -- Levine et al.: threshold and counting bounds ------------------------------------------------


def depth_threshold(d_x: float) -> float:
    """L_th = log_3 d_x (Levine et al. 2020: abstract, authors' KDnuggets post)."""
    return math.log(d_x) / math.log(3)


def degree(depth: int) -> int:
    """Polynomial degree 3^L of an L-layer linear-attention network (query x key x value)."""
    return 3**depth


def log_comb(n: float, k: float) -> float:
    """ln C(n, k) for real n >= k >= 0, via lgamma (no overflow for huge arguments)."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def degree_bound(d_x: int, depth: int, n_side: int) -> int:
    """C(n d_x + 3^L, 3^L): monomials of degree <= 3^L in one side's n d_x variables, an upper
    bound on the separation rank of any degree-3^L polynomial across that side."""
    return math.comb(n_side * d_x + degree(depth), degree(depth))


def n2_rank(d_x: int, depth: int) -> int:
    """N = 2 separation rank bound C(d_x + m_L, d_x), m_L = (3^L - 1)/2 (proven upper bound, met by
    every measured cell)."""
    return math.comb(d_x + (3**depth - 1) // 2, d_x)


def n2_parity_count(d_x: int, depth: int) -> int:
    """The proof's count: sum over k = 0..m_L of the C(k + d_x - 1, d_x - 1) monomials of degree k
    (odd k on the x^0 side, even k on the x^1 side); equals :func:`n2_rank` (hockey stick)."""
    m = (3**depth - 1) // 2
    return sum(math.comb(k + d_x - 1, d_x - 1) for k in range(m + 1))


def n2_log_rank(d_x: float, depth: float) -> float:
    """ln of :func:`n2_rank`, continued to real d_x and L."""
    m = (3.0**depth - 1) / 2
    return log_comb(d_x + m, d_x)


def increments(log_ranks: Sequence[float]) -> np.ndarray:
    """Delta_L = ln r(L+1) - ln r(L) for consecutive depths (input: ln r at L = L0, L0+1, ...)."""
    return np.diff(np.asarray(log_ranks, dtype=float))


# -- Levine et al.: the fitted optimal width -----------------------------------------------------

FIT_A = 5.039  # ln of the optimal width extrapolated to depth 0
FIT_B = 0.0555  # per-layer growth of ln d_x^opt


def optimal_width(depth: float, a: float = FIT_A, b: float = FIT_B) -> float:
    """d_x^opt(L) = exp(a + b L) (Levine et al. 2020 v3; a, b as quoted by BigScience)."""
    return math.exp(a + b * depth)


def nonembedding_params(depth: float, width: float, biases: bool = False) -> float:
    """N = 12 L d_x^2: attention 4 d_x^2 and feed-forward 8 d_x^2 per layer (Kaplan et al. 2020); with
    ``biases`` the exact count of :mod:`.transformer`, 12 L d_x^2 + 13 L d_x (biases and LayerNorms)."""
    return 12.0 * depth * width**2 + (13.0 * depth * width if biases else 0.0)


def optimal_params(depth: float, a: float = FIT_A, b: float = FIT_B, biases: bool = False) -> float:
    """N_opt(L) = 12 L exp(2a) exp(2bL) (+ 13 L exp(a + bL) with ``biases``): the size at which depth L is optimal."""
    return nonembedding_params(depth, optimal_width(depth, a, b), biases)


def optimal_depth(params: float, a: float = FIT_A, b: float = FIT_B, biases: bool = False) -> float:
    """Invert N_opt(L) = params for L (N_opt increases in L; solved by bisection on ln N): the depth at
    which the budget equation and the fit d_x = exp(a + bL) hold together; below 1 for budgets under
    N_opt(1) ~ 3.2e5, where the fit says that no depth >= 1 is deep enough to be worth its width."""
    lo, hi = 1e-6, 1e4
    target = math.log(params)
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.log(optimal_params(mid, a, b, biases)) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# GPT-3 family (Brown et al. 2020, Table 2.1): name -> (parameters, n_layers, d_model).
GPT3 = {
    "GPT-3 Small": (125e6, 12, 768),
    "GPT-3 Medium": (350e6, 24, 1024),
    "GPT-3 Large": (760e6, 24, 1536),
    "GPT-3 XL": (1.3e9, 24, 2048),
    "GPT-3 2.7B": (2.7e9, 32, 2560),
    "GPT-3 6.7B": (6.7e9, 32, 4096),
    "GPT-3 13B": (13e9, 40, 5140),
    "GPT-3 175B": (175e9, 96, 12288),
}
# The paper's 1-trillion-parameter projection (v3 abstract: "width of 30K"; authors' blog: depth 92).
PAPER_1T = (1e12, 92, 30_000)


def fit_table() -> list[dict]:
    """Fit-optimal (depth, width) for each GPT-3 size and 1T, next to the actual/paper shapes."""
    rows = []
    for name, (n, depth, width) in list(GPT3.items()) + [("1T (paper)", PAPER_1T)]:
        L_opt = optimal_depth(n)
        rows.append(dict(model=name, params=n, depth=depth, width=width, opt_depth=L_opt,
                         opt_width=optimal_width(L_opt), depth_ratio=depth / L_opt,
                         width_at_depth=optimal_width(depth)))
    return rows


# -- Wies et al.: the input-rank bottleneck ------------------------------------------------------


def bottleneck_width(d_x: int, input_rank: int) -> int:
    """min(r, d_x): the width that counts when inputs have rank r.

    Wies et al. 2021 (recalled form, reference notes Sec. 4.1): d_x -> min(r, d_x) in the deep-regime bound.
    """
    return min(d_x, input_rank) if input_rank else d_x


# -- Noci et al.: energy of the token mean under uniform attention -------------------------------


def uniform_attention_growth(depth: int, alpha: float) -> float:
    """E[n ||m_L||^2 / ||R_L||^2] / (initial ratio) = (1 + alpha^2)^L.

    X_{l+1} = X_l + alpha (1/n) 1 1^T X_l W_V with W_V ~ N(0, 1/d): the token mean grows by
    (I + alpha W_V) per layer, E||m (I + alpha W)||^2 = (1 + alpha^2) ||m||^2, and the residual
    R = X - 1 m^T is unchanged (Noci et al. 2022, uniform-attention approximation;
    derivation in the notes).  alpha = 1/sqrt(L) keeps the growth below e.
    """
    return (1.0 + alpha**2) ** depth


def simulate_uniform_attention(depth: int, alpha: float, n: int, d: int, trials: int,
                               rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo of the model above: growth of n||m||^2/||R||^2 over ``depth`` layers, (trials,).

    X_0 = Gaussian (trials, n, d); W_V (trials, d, d) ~ N(0, 1/d) fresh per layer; float64.
    """
    X = rng.standard_normal((trials, n, d))

    def ratio(X):
        m = X.mean(1, keepdims=True)
        return n * (m**2).sum((1, 2)) / ((X - m) ** 2).sum((1, 2))

    r0 = ratio(X)
    for _ in range(depth):
        W = rng.standard_normal((trials, d, d)) / math.sqrt(d)
        X = X + alpha * X.mean(1, keepdims=True) @ W
    return ratio(X) / r0
