"""The MLP-only dynamics of JoMA Sec. 4 and the sparse-to-dense turning step.

Nonlinear case (Tian et al. 2024, Sec. 4, Fig. 4; official ``joma/draw_figure_4.py``): once attention is
integrated out (Thm. 1, z = v^2/2 up to a constant), a hidden unit's projected weight v in R^d follows

    dv/dt = eta (mu - v) o s(v),     s(v) = softmax(v^2 / tau)                                  (Fig. 4)

where mu is the unit's target (the conditional input mean the nonlinear unit converges to) and s is the
attention the invariant implies.  Component j moves at a speed proportional to s_j, i.e. to
exp(v_j^2/tau): components with large mu_j (salient tokens) race ahead, attention sharpens; once they
reach mu_j they stop while the others keep growing, so attention spreads again ("sparse, then dense").
With a linear unit there is no saturation (the target term is absent: dv/dt = eta Delta o s(v)) and the
leading component keeps winning ("only sparse", as Scan and Snap).

Units: t counts Euler steps of size eta.
"""

from __future__ import annotations

import numpy as np


def reduced_dynamics(mu: np.ndarray, v0: float, eta: float, tau: float, steps: int,
                     linear: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Euler integration of the Fig. 4 system for R runs at once.

    mu: (R, d) targets (``linear``: the constant drive Delta instead of mu - v).  Returns v (steps+1, R, d)
    and the entropy (nats) of s(v) (steps+1, R)."""
    mu = np.asarray(mu, dtype=np.float64)
    v = np.full_like(mu, float(v0))
    vs, hs = [v.copy()], [_entropy_of_softmax(v**2 / tau)]
    for _ in range(steps):
        s = _softmax(v**2 / tau)
        v = v + eta * (mu if linear else (mu - v)) * s
        vs.append(v.copy())
        hs.append(_entropy_of_softmax(v**2 / tau))
    return np.stack(vs), np.stack(hs)


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _entropy_of_softmax(a: np.ndarray) -> np.ndarray:
    p = _softmax(a)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def turning_step(steps: np.ndarray, H: np.ndarray, delta: float) -> np.ndarray:
    """The step where attention turns from sparsifying to densifying, per run.

    H: (S, R) entropy at ``steps``.  The turn is confirmed at the first record where H exceeds its
    running minimum by more than ``delta`` nats; the turning step is where that running minimum was
    reached.  NaN for a run whose entropy never rises by ``delta`` (only sparsifies).
    """
    H = np.asarray(H, dtype=np.float64)
    out = np.full(H.shape[1], np.nan)
    for r in range(H.shape[1]):
        run_min = np.minimum.accumulate(H[:, r])
        up = np.flatnonzero(H[:, r] > run_min + delta)
        if len(up):
            k = up[0]
            out[r] = steps[int(np.argmin(H[: k + 1, r]))]
    return out


def rise_step(steps: np.ndarray, H: np.ndarray, delta: float) -> np.ndarray:
    """The first recorded step at which H exceeds its running minimum by more than ``delta`` nats (where
    densification is detected), per run; NaN if never.  Unlike :func:`turning_step` it does not move to
    the start of a flat plateau that precedes a late rise."""
    H = np.asarray(H, dtype=np.float64)
    up = H > np.minimum.accumulate(H, axis=0) + delta
    out = np.full(H.shape[1], np.nan)
    hit = up.any(0)
    out[hit] = np.asarray(steps)[up.argmax(0)[hit]]
    return out


def rebound(H: np.ndarray) -> np.ndarray:
    """How far entropy rose again after its minimum: H(end) - min_t H(t), per run (nats)."""
    H = np.asarray(H, dtype=np.float64)
    return H[-1] - H.min(0)


def drop(H: np.ndarray) -> np.ndarray:
    """How far entropy fell from the start to its minimum: H(0) - min_t H(t), per run (nats)."""
    H = np.asarray(H, dtype=np.float64)
    return H[0] - H.min(0)


def convergence_steps(v: np.ndarray, mu: np.ndarray, frac: float = 0.9) -> np.ndarray:
    """First step at which each component reaches ``frac`` of its target: v (S, R, d), mu (R, d) ->
    (R, d), NaN where it never does."""
    reached = v >= frac * mu[None]
    first = reached.argmax(0).astype(float)
    first[~reached.any(0)] = np.nan
    return first


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-d arrays (NaN pairs dropped; ties by average rank)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)
