"""Rank-collapse measures of Dong, Cordonnier & Loukas (ICML 2021), shared by the depth-width and
attention-collapse experiments.

For token representations X (n tokens x d features), the residual res(X) = X - 1 x^T removes the
component shared by all tokens.  Dong et al. measure it with the composite norm
||A||_{1,inf} = sqrt(||A||_1 ||A||_inf) (max column-sum times max row-sum) and prove that in pure
self-attention (no skips, no MLP) it contracts cubically per layer:
||res(X_{l+1})|| <= c ||res(X_l)||^3, i.e. doubly-exponential decay with depth.

We take x = the column mean of X (the l2-optimal choice; Dong et al.'s bound holds for any x, so
the mean gives an upper bound on their minimal residual).
"""

from __future__ import annotations

import numpy as np


def composite_norm(A: np.ndarray) -> np.ndarray:
    """||A||_{1,inf} = sqrt(||A||_1 ||A||_inf) over the last two axes (n, d)."""
    A = np.abs(np.asarray(A, dtype=np.float64))
    one = A.sum(-2).max(-1)  # max column sum
    inf = A.sum(-1).max(-1)  # max row sum
    return np.sqrt(one * inf)


def token_residual(X: np.ndarray) -> np.ndarray:
    """res(X) = X - 1 mean(X)^T over the token axis (-2)."""
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(-2, keepdims=True)


def residual_ratio(X: np.ndarray) -> np.ndarray:
    """||res(X)||_{1,inf} / ||X||_{1,inf}: 0 when every token is identical (rank-1 collapse)."""
    return composite_norm(token_residual(X)) / composite_norm(X)
