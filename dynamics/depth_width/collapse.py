"""Rank collapse in pure softmax self-attention (Dong, Cordonnier & Loukas, ICML 2021) and its
effect on query/key gradients (Noci et al., NeurIPS 2022).

Dong et al.: for a self-attention network without skip connections or MLPs,
||res(SAN(X))|| <= (c)^{(3^L - 1)/2} ||res(X)||^{3^L}, from a per-layer cubic contraction
r_{l+1} <= c r_l^3 of the token residual res(X) = X - 1 x^T (measured here with the shared composite
norm and mean-token residual of :mod:`dynamics.rank_collapse`).  Why cubic: with X = 1 x^T + eps R,
the logits of query i and key j are x'Wx + eps(r_i'Wx + x'Wr_j) + eps^2 r_i'Wr_j; softmax drops the
terms constant in j, the term eps x'Wr_j is the same for every query row, so the rows of the
attention matrix differ only at O(eps^2), and res(P X W_V) = res(P eps R) W_V = O(eps^3).
A skip connection adds eps R back (linear, no collapse); a token-wise MLP is Lipschitz, so it
rescales the cubic term but cannot change its exponent.

Layers here (n tokens, d features, one head, weights N(0, 1/d) so logits are O(1)):

    SA(X)   = softmax(X W_Q (X W_K)^T / sqrt(d)) X W_V
    "san":       X <- SA(X)
    "san+mlp":   X <- MLP(SA(X)),      MLP(Y) = relu(Y W_1) W_2, width 4d, He init
    "san+skip":  X <- X + SA(X)
    "san+skip+mlp": X <- X + SA(X); X <- X + MLP(X)
"""

from __future__ import annotations

import math

import numpy as np

from ..rank_collapse import composite_norm, residual_ratio, token_residual

VARIANTS = ("san", "san+mlp", "san+skip", "san+skip+mlp")


def draw_layer(rng: np.random.Generator, d: int) -> dict:
    """One layer's weights: W_Q, W_K, W_V (d, d) ~ N(0, 1/d); W_1 (d, 4d) ~ N(0, 2/d); W_2 (4d, d) ~ N(0, 1/(4d))."""
    g = lambda *s, var: rng.standard_normal(s) * math.sqrt(var)  # noqa: E731
    return dict(Q=g(d, d, var=1 / d), K=g(d, d, var=1 / d), V=g(d, d, var=1 / d),
                W1=g(d, 4 * d, var=2 / d), W2=g(4 * d, d, var=1 / (4 * d)))


def attention(X: np.ndarray, w: dict) -> np.ndarray:
    """SA(X) for X (..., n, d), float64."""
    d = X.shape[-1]
    logits = (X @ w["Q"]) @ np.swapaxes(X @ w["K"], -1, -2) / math.sqrt(d)
    logits -= logits.max(-1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(-1, keepdims=True)
    return P @ X @ w["V"]


def mlp(X: np.ndarray, w: dict) -> np.ndarray:
    return np.maximum(X @ w["W1"], 0.0) @ w["W2"]


def block(X: np.ndarray, w: dict, variant: str) -> np.ndarray:
    """One layer of the given variant (see the module docstring)."""
    if variant == "san":
        return attention(X, w)
    if variant == "san+mlp":
        return mlp(attention(X, w), w)
    if variant == "san+skip":
        return X + attention(X, w)
    if variant == "san+skip+mlp":
        X = X + attention(X, w)
        return X + mlp(X, w)
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def residual_scaling(eps: np.ndarray, variant: str, n: int, d: int, rng: np.random.Generator,
                     trials: int = 8) -> np.ndarray:
    """||res(layer(X))||_{1,inf} for X = 1 x^T + eps R, per eps, averaged over trials: (len(eps),).

    x and R are Gaussian (R with unit composite norm of its residual); the same weights, x and R
    are used for every eps so the curve's slope is the per-layer exponent (3 without a skip).
    """
    out = np.zeros((trials, len(eps)))
    for t in range(trials):
        w = draw_layer(rng, d)
        x = rng.standard_normal(d)
        R = token_residual(rng.standard_normal((n, d)))
        R /= composite_norm(R)
        for k, e in enumerate(eps):
            X = np.broadcast_to(x, (n, d)) + e * R
            out[t, k] = composite_norm(token_residual(block(X, w, variant)))
    return np.exp(np.log(out).mean(0))  # geometric mean over trials: slopes average in log space


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ln y against ln x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def trajectory(variant: str, depth: int, n: int, d: int, rng: np.random.Generator, trials: int = 4) -> np.ndarray:
    """Residual ratio ||res(X_l)|| / ||X_l|| (composite norm) after layers 0..depth: (trials, depth+1).

    X_0 Gaussian (n, d); fresh weights per layer; float64 (values below ~1e-15 are round-off).
    """
    out = np.zeros((trials, depth + 1))
    for t in range(trials):
        X = rng.standard_normal((n, d))
        out[t, 0] = residual_ratio(X)
        for layer in range(depth):
            X = block(X, draw_layer(rng, d), variant)
            out[t, layer + 1] = residual_ratio(X)
    return out


def trajectory_exact(depth: int, n: int, d: int, eps: float, seed: int, digits: int = 1200) -> list[float]:
    """ln ||res(X_l)||_{1,inf} through a pure SAN in ``digits``-digit arithmetic (mpmath), l = 0..depth.

    Starts from X_0 = 1 x^T + eps R.  float64 cannot follow the collapse past ~1e-16 (two layers);
    with 1200 digits the residual can be followed down to ~1e-1100, enough for the exponent
    3^L of Dong et al. over 6 layers.  Weights are float64 draws, converted exactly.
    """
    import mpmath

    rng = np.random.default_rng(seed)
    with mpmath.workdps(digits):
        mp = np.vectorize(mpmath.mpf, otypes=[object])
        exp = np.vectorize(mpmath.exp, otypes=[object])
        x = rng.standard_normal(d)
        R = rng.standard_normal((n, d))
        X = mp(np.broadcast_to(x, (n, d))) + mp(R) * mpmath.mpf(eps)
        logs = []
        for layer in range(depth + 1):
            res = X - X.mean(axis=0)
            A = np.abs(res)
            norm = mpmath.sqrt(max(A.sum(axis=0)) * max(A.sum(axis=1)))
            logs.append(float(mpmath.log(norm)))
            if layer == depth:
                break
            w = draw_layer(rng, d)
            Q, K, V = (mp(w[k]) for k in ("Q", "K", "V"))
            logits = (X @ Q) @ (X @ K).T / mpmath.sqrt(d)
            logits = logits - np.array([[max(row)] for row in logits], dtype=object)
            P = exp(logits)
            P = P / P.sum(axis=1)[:, None]
            X = P @ X @ V
        return logs


def qk_gradient_ratio(n: int, d: int, seed: int) -> tuple[float, float]:
    """(||dL/dW_Q|| + ||dL/dW_K||) / ||dL/dW_V|| at a collapsed input X = 1 x^T, and the same ratio
    at a generic Gaussian X, for one softmax attention layer and a random linear loss (float64).

    Noci et al. 2022: at rank collapse every logit row is constant, softmax is
    shift-invariant, so the query and key gradients vanish while the value gradient does not.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    W = {k: (torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)).requires_grad_()
         for k in ("Q", "K", "V")}
    target = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    out = []
    for X in (x.expand(n, d).clone(), torch.randn(n, d, generator=g, dtype=torch.float64)):
        for w in W.values():
            w.grad = None
        P = torch.softmax((X @ W["Q"]) @ (X @ W["K"]).T / math.sqrt(d), dim=-1)
        loss = ((P @ X @ W["V"]) * target).sum()
        loss.backward()
        qk = W["Q"].grad.norm() + W["K"].grad.norm()
        out.append(float(qk / W["V"].grad.norm()))
    return out[0], out[1]
