"""Rank collapse in pure self-attention (Dong, Cordonnier & Loukas, ICML 2021) and its effect on
query/key gradients (Noci et al., NeurIPS 2022): the one simulator of attention-only networks.

Measures.  For token representations X (n tokens x d features) the residual res(X) = X - 1 x^T
removes what all tokens share; Dong et al. measure it in the composite norm
||A||_{1,inf} = sqrt(||A||_1 ||A||_inf).  We take x = the column mean of X (the l2-optimal choice; their
bound holds for any x, so the mean gives an upper bound on the minimal residual).

Network.  Depth L, width d, H heads of width d_h = d / H, weights W_Q^h, W_K^h, W_V^h (d x d_h) and
W_O^h (d_h x d) with entries N(0, 1/d), MLP weights W_1 (d x 4d) ~ N(0, 2/d), W_2 (4d x d) ~ N(0, 1/(4d)):

    SA(X)  = sum_h softmax(X W_QK^h X^T) X W_VO^h,  W_QK^h = W_Q^h W_K^h^T / sqrt(d_h), W_VO^h = W_V^h W_O^h
    "san":          X <- SA(X)                 (Dong et al.'s pure self-attention network)
    "san+mlp":      X <- MLP(SA(X)),            MLP(Y) = relu(Y W_1) W_2
    "san+skip":     X <- X + SA(X)
    "san+skip+mlp": X <- X + SA(X);  X <- X + MLP(X)

Dong et al., Thm. 2.2: without skips, ||res(X_{l+1})|| <= c ||res(X_l)||^3, so log ||res|| falls doubly
exponentially (successive log-decrements grow by 3).  Why cubic: with X = 1 xbar^T + R, the logits are
S_ij = xbar W xbar + xbar W r_j + r_i W xbar + r_i W r_j; the terms constant in j cancel in the row
softmax and xbar W r_j is the same for every row, so rows of A differ only through e_ij = r_i W r_j =
O(R^2), and res(A X W_VO) = O(R^3).  A skip adds R back (linear: no collapse); a token-wise MLP is
Lipschitz, so it rescales the cubic term without changing its exponent.

Arithmetic.  :func:`forward` evaluates the network in float64, or in ``digits``-digit mpmath arithmetic
(``precision="mp"``), with the same code: float64 cannot follow the residual below ~1e-16 ||X|| (about
two layers), 1200 digits follow it to ~1e-1100.  :func:`log_residual_centred` is the pure-SAN map
evaluated stably in float64 in centred coordinates (xbar, R), with
dA_ij = pi_j expm1(e_ij - z_i), z_i = log1p(sum_k pi_k expm1(e_ik)), which keeps relative precision
down to ``floor``; it is a second solver of the same map and is tested against ``forward``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

VARIANTS = ("san", "san+mlp", "san+skip", "san+skip+mlp")
Variant = Literal["san", "san+mlp", "san+skip", "san+skip+mlp"]


# -- measures -------------------------------------------------------------------------------------
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


# -- the network ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Network:
    """Weights of one attention network, float64.

    qk, vo: (L, H, d, d) per-head W_QK and W_VO; w1: (L, d, 4d) and w2: (L, 4d, d) for MLP variants.
    """

    variant: str
    qk: np.ndarray
    vo: np.ndarray
    w1: np.ndarray | None = None
    w2: np.ndarray | None = None

    @property
    def depth(self) -> int:
        return self.qk.shape[0]


def draw(depth: int, width: int, heads: int = 1, variant: Variant = "san",
         rng: np.random.Generator | None = None) -> Network:
    """A network with the Gaussian weights of the module docstring (fresh weights per layer)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    rng = rng if rng is not None else np.random.default_rng()
    dh, s = width // heads, width ** -0.5
    wq, wk, wv = rng.standard_normal((3, depth, heads, width, dh)) * s
    wo = rng.standard_normal((depth, heads, dh, width)) * s
    qk = np.einsum("lhak,lhbk->lhab", wq, wk) / math.sqrt(dh)
    vo = np.einsum("lhak,lhkb->lhab", wv, wo)
    w1 = w2 = None
    if "mlp" in variant:
        w1 = rng.standard_normal((depth, width, 4 * width)) * math.sqrt(2 / width)
        w2 = rng.standard_normal((depth, 4 * width, width)) * math.sqrt(1 / (4 * width))
    return Network(variant, qk, vo, w1, w2)


def _mp(digits: int):
    import mpmath

    ctx = mpmath.mp.clone()
    ctx.dps = digits
    to = np.vectorize(ctx.mpf, otypes=[object])
    return ctx, to, np.vectorize(ctx.exp, otypes=[object])


def attention(X: np.ndarray, qk: np.ndarray, vo: np.ndarray, exp=np.exp) -> np.ndarray:
    """SA(X) for one token matrix X (n, d): sum over heads of softmax(X W_QK X^T) X W_VO.

    The pure-attention forward pass of this package (float64 arrays, or mpmath object arrays with
    ``exp`` an elementwise mpmath exp).  qk, vo: (H, d, d).
    """
    out = None
    for h in range(qk.shape[0]):
        S = X @ qk[h] @ X.T
        S = S - np.array([[max(row)] for row in S], dtype=S.dtype)
        A = exp(S)
        A = A / A.sum(axis=1)[:, None]
        term = A @ X @ vo[h]
        out = term if out is None else out + term
    return out


def layer(X: np.ndarray, net: Network, l: int, exp=np.exp, cast=np.asarray) -> np.ndarray:
    """Layer ``l`` of ``net`` applied to X (n, d)."""
    sa = lambda Y: attention(Y, cast(net.qk[l]), cast(net.vo[l]), exp)  # noqa: E731
    mlp = lambda Y: np.maximum(Y @ cast(net.w1[l]), 0) @ cast(net.w2[l])  # noqa: E731
    if net.variant == "san":
        return sa(X)
    if net.variant == "san+mlp":
        return mlp(sa(X))
    if net.variant == "san+skip":
        return X + sa(X)
    X = X + sa(X)
    return X + mlp(X)


def forward(X0: np.ndarray, net: Network, precision: Literal["float64", "mp"] = "float64",
            digits: int = 1200) -> np.ndarray:
    """ln ||res(X_l)||_{1,inf} for l = 0..L of one input X0 (n, d): (L + 1,) float64.

    ``precision="mp"`` runs the same layers in ``digits``-digit arithmetic (weights converted exactly).
    """
    if precision == "float64":
        X = np.asarray(X0, dtype=np.float64)
        logs = [math.log(float(composite_norm(token_residual(X))))]
        for l in range(net.depth):
            X = layer(X, net, l)
            with np.errstate(divide="ignore"):
                logs.append(float(np.log(composite_norm(token_residual(X)))))
        return np.array(logs)
    ctx, to, exp = _mp(digits)
    X = to(np.asarray(X0, dtype=np.float64))
    logs = []
    for l in range(net.depth + 1):
        res = X - X.mean(axis=0)
        A = np.vectorize(abs, otypes=[object])(res)
        logs.append(float(ctx.log(ctx.sqrt(max(A.sum(axis=0)) * max(A.sum(axis=1))))))
        if l < net.depth:
            X = layer(X, net, l, exp=exp, cast=to)
    return np.array(logs)


def log_residual_centred(X0: np.ndarray, net: Network, floor: float = 1e-150) -> np.ndarray:
    """ln(||res(X_l)|| / ||X_l||) for l = 0..L through a pure SAN ("san"), batched over the leading
    axes of X0 (..., n, d), evaluated stably in centred coordinates (module docstring); NaN once
    ||res|| < floor."""
    if net.variant != "san":
        raise ValueError("the centred evaluation is for the pure SAN only")
    X = np.asarray(X0, dtype=np.float64)
    xbar, R = X.mean(-2), X - X.mean(-2, keepdims=True)
    out = [_log_ratio(R, X)]
    alive = np.ones(X.shape[:-2], dtype=bool)
    T = X.shape[-2]
    for l in range(net.depth):
        new_xbar, new_R = np.zeros_like(xbar), np.zeros_like(R)
        for h in range(net.qk.shape[1]):
            W, V = net.qk[l, h], net.vo[l, h]
            # two-operand products: a three-operand einsum loops over every index (minutes at d = 256)
            c = (R @ (xbar @ W)[..., None])[..., 0]
            pi = np.exp(c - c.max(-1, keepdims=True))
            pi /= pi.sum(-1, keepdims=True)
            e = (R @ W) @ np.swapaxes(R, -1, -2)
            z = np.log1p((pi[..., None, :] * np.expm1(e)).sum(-1))
            dA = pi[..., None, :] * np.expm1(e - z[..., None])
            dAR = dA @ R
            new_R += (dAR - dAR.mean(-2, keepdims=True)) @ V
            new_xbar += (xbar + np.einsum("...j,...jd->...d", pi, R) + dAR.sum(-2) / T) @ V
        xbar, R = new_xbar, new_R
        X = xbar[..., None, :] + R
        alive &= composite_norm(R) >= floor
        out.append(np.where(alive, _log_ratio(R, X), np.nan))
    return np.stack(out, -1)


def log_residual_direct(X0: np.ndarray, net: Network) -> np.ndarray:
    """ln(||res(X_l)|| / ||X_l||) for l = 0..L by the direct float64 forward pass (:func:`layer`),
    per input of X0 (..., n, d): (..., L + 1).  Loses the residual below ~1e-16 ||X|| (cancellation);
    kept to show where :func:`log_residual_centred` is needed."""
    X0 = np.asarray(X0, dtype=np.float64)
    flat = X0.reshape(-1, *X0.shape[-2:])
    out = np.empty((len(flat), net.depth + 1))
    for i, X in enumerate(flat):
        out[i, 0] = math.log(float(residual_ratio(X)))
        for l in range(net.depth):
            X = layer(X, net, l)
            with np.errstate(divide="ignore"):
                out[i, l + 1] = np.log(residual_ratio(X))
    return out.reshape(*X0.shape[:-2], net.depth + 1)


def _log_ratio(R: np.ndarray, X: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(composite_norm(R)) - np.log(composite_norm(X))


# -- analyses -------------------------------------------------------------------------------------
def decrement_ratios(log_ratio: np.ndarray, start: float = 1e-2, floor: float = 1e-150) -> np.ndarray:
    """Delta_{l+1} / Delta_l with Delta_l = log rho_l - log rho_{l-1}, over the last axis (layers).

    Kept only where the cubic regime applies and the numbers are resolved: rho_l <= ``start`` and
    rho_{l+1} >= ``floor``; NaN elsewhere.  Dong et al. predict 3.  Returns (..., L - 1).
    """
    lr = np.asarray(log_ratio, dtype=np.float64)
    d = np.diff(lr, axis=-1)
    prev, nxt = d[..., :-1], d[..., 1:]
    ok = (lr[..., 1:-1] <= np.log(start)) & (lr[..., 2:] >= np.log(floor)) & (prev < 0) & np.isfinite(nxt)
    return np.where(ok, nxt / np.where(prev != 0, prev, np.nan), np.nan)


def residual_scaling(eps: np.ndarray, variant: Variant, n: int, d: int, rng: np.random.Generator,
                     trials: int = 8, heads: int = 1) -> np.ndarray:
    """||res(layer(X))||_{1,inf} for X = 1 x^T + eps R, per eps, geometric mean over trials.

    The same weights, x and R serve every eps, so the slope of ln(out) against ln(eps) is the
    per-layer exponent (3 without a skip, 1 with one).
    """
    out = np.zeros((trials, len(eps)))
    for t in range(trials):
        net = draw(1, d, heads, variant, rng)
        x = rng.standard_normal(d)
        R = token_residual(rng.standard_normal((n, d)))
        R /= composite_norm(R)
        for k, e in enumerate(eps):
            out[t, k] = composite_norm(token_residual(layer(np.broadcast_to(x, (n, d)) + e * R, net, 0)))
    return np.exp(np.log(out).mean(0))


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ln y against ln x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def trajectories(variant: Variant, depth: int, n: int, d: int, rng: np.random.Generator, trials: int = 4,
                 heads: int = 1) -> np.ndarray:
    """Residual ratio ||res(X_l)|| / ||X_l|| after layers 0..depth, float64: (trials, depth + 1)."""
    out = np.zeros((trials, depth + 1))
    for t in range(trials):
        X = rng.standard_normal((n, d))
        net = draw(depth, d, heads, variant, rng)
        out[t, 0] = residual_ratio(X)
        for l in range(depth):
            X = layer(X, net, l)
            out[t, l + 1] = residual_ratio(X)
    return out


def qk_gradient_ratio(n: int, d: int, rng: np.random.Generator) -> tuple[float, float]:
    """(||dL/dW_Q|| + ||dL/dW_K||) / ||dL/dW_V|| for one softmax attention layer and a random linear
    loss, at a collapsed input X = 1 x^T and at a generic Gaussian X (float64 autograd).

    Noci et al. 2022: at rank collapse every logit row is constant and softmax is shift-invariant, so
    the query and key gradients vanish while the value gradient does not.
    """
    import torch

    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    W = {k: t(rng.standard_normal((d, d)) / math.sqrt(d)).requires_grad_() for k in ("Q", "K", "V")}
    target, x, generic = t(rng.standard_normal((n, d))), t(rng.standard_normal(d)), t(rng.standard_normal((n, d)))
    out = []
    for X in (x.expand(n, d).clone(), generic):
        for w in W.values():
            w.grad = None
        P = torch.softmax((X @ W["Q"]) @ (X @ W["K"]).T / math.sqrt(d), dim=-1)
        ((P @ X @ W["V"]) * target).sum().backward()
        out.append(float((W["Q"].grad.norm() + W["K"].grad.norm()) / W["V"].grad.norm()))
    return out[0], out[1]
