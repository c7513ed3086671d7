"""JoMA's Theorem 1: attention logits as a function of the lower MLP weights.

Derivation (ours, following the paper's statement; single query m, orthonormal embeddings, gradient
flow with rates eta_z on z and eta_v on w_k).  With v_k := U_C^T w_k and g_ck phi'_ck the gradient
reaching hidden unit k for class c (averaged over classes, E_c):

    dv_k/dt = eta_v E_c[ g_ck phi'_ck b_c ]                        (orthonormality: U_C^T f_c = b_c)
    dz/dt   = eta_z E_c[ sum_k g_ck phi'_ck (d b_c / d z)^T v_k ]

* exp attention, b = x o e^z, (db/dz)^T v = v o b, so dz/dt = (eta_z/eta_v) sum_k v_k o dv_k/dt exactly:
      z(t) = z(0) + (eta_z / eta_v) * 1/2 sum_k (v_k(t)^2 - v_k(0)^2)                    (Thm. 1, "exp")
* linear attention, b = x o z, (db/dz)^T v = v o x, and dv/dt carries a factor z:
      z(t)^2 = z(0)^2 + (eta_z / eta_v) sum_k (v_k(t)^2 - v_k(0)^2)                     (Thm. 1, "linear")
* softmax attention, db/dz = diag(b) - b b^T.  Under the theorem's assumption that the attention
  average b_bar is constant and E_c[g phi' b b^T] = b_bar E_c[g phi' b^T]:
      z(t) = z(0) + (eta_z/eta_v) * 1/2 [ sum_k (v_k^2 - v_k(0)^2) - b_bar sum_k (|v_k|^2 - |v_k(0)|^2) ]
  (Thm. 1, "softmax"; the official script evaluates it with b_bar = E_c[x_c], the attention at z = 0.)

Squares of vectors are elementwise.  The paper states the equal-rate case (eta_z = eta_v); the ratio
follows from the same two lines.  Discrete steps add O(eta_v^2) per step (the 1/2 eta^2 |grad|^2 term
of a square), SGD noise adds nothing (the identity holds sample by sample), Adam breaks it (it rescales
the two gradients differently).  Softmax logits are defined up to a constant, so comparisons centre z.
"""

from __future__ import annotations

import numpy as np
import torch


def predicted_logits(kind: str, z0, V0, V, b_bar, ratio):
    """Thm. 1's z(t) from the MLP weights.  z0: (R, M); V0, V: (R, M, H); b_bar: (R, M); ratio:
    eta_z/eta_v, (R,).  Works on torch tensors or numpy arrays (same shapes; extra leading axes on V
    broadcast).  Linear attention returns the root with the sign of z0."""
    xp = torch if isinstance(V, torch.Tensor) else np
    ratio = ratio[..., None] if hasattr(ratio, "shape") and getattr(ratio, "ndim", 0) else ratio
    dsq = (V**2 - V0**2).sum(-1)  # (R, M): sum_k v_k^2 - v_k(0)^2, per token
    if kind == "exp":
        return z0 + ratio * dsq / 2
    if kind == "linear":
        sq = xp.clip(z0**2 + ratio * dsq, 0, None)
        sign = xp.where(z0 >= 0, 1.0, -1.0)
        return sign * xp.sqrt(sq)
    dnorm = (V**2 - V0**2).sum((-2, -1))[..., None]  # sum_k |v_k|^2 - |v_k(0)|^2
    return z0 + ratio * (dsq - b_bar * dnorm) / 2


def _centre(a: np.ndarray) -> np.ndarray:
    return a - a.mean(-1, keepdims=True)


def relative_error(z: np.ndarray, z_hat: np.ndarray, z0: np.ndarray, centre: bool) -> np.ndarray:
    """|(z - z0) - (z_hat - z0)| / |z - z0| over the last axis: the invariant's error relative to how
    far z has moved (NaN while z has not moved).  ``centre`` removes the softmax-invariant constant."""
    dz, dh = z - z0, z_hat - z0
    if centre:
        dz, dh = _centre(dz), _centre(dh)
    num = np.linalg.norm(dz - dh, axis=-1)
    den = np.linalg.norm(dz, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def normalized_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NC(a, b) of the paper's Fig. 2: the cosine between the centred vectors (last axis)."""
    a, b = _centre(a), _centre(b)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(-1) / (na * nb)
