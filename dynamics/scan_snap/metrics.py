"""Attention quantities of the theory, computed from the attention logits Z.

Tian et al. 2023, Eq. (5): in the T -> infinity limit the attention of class n on contextual token l is
c_{l|n} = P(l|n) e^{z_{ml}} / sum_{l'} P(l'|n) e^{z_{ml'}}, with m = psi(n).  All functions take a
trailing (M, M) Z (any leading axes) and return float64 numpy arrays.
"""

from __future__ import annotations

import numpy as np

from .data import SequenceClasses


def _eq5(logits: np.ndarray, probs: np.ndarray) -> np.ndarray:
    logits = np.where(probs > 0, logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    c = probs * np.exp(logits)
    return c / c.sum(-1, keepdims=True)


def attention(Z: np.ndarray, classes: SequenceClasses) -> np.ndarray:
    """c_n for every class: (..., K, M), rows summing to 1 over the class's contextual tokens."""
    return _eq5(np.asarray(Z, dtype=np.float64)[..., classes.query, :], classes.probs)


def attention_rows(z: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Eq. 5 from one query's logit row per run: z (..., V), probs (..., K, V) P(l|n) -> (..., K, V)."""
    return _eq5(np.asarray(z, dtype=np.float64)[..., None, :], probs)


def entropy(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Entropy (nats) of ``p`` restricted to ``mask`` and renormalised, over the last axis; NaN
    where the mask is empty."""
    q = np.where(mask, p, 0.0)
    total = q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = q / total
        h = -np.where(q > 0, q * np.log(q), 0.0).sum(-1)
    return np.where(total[..., 0] > 0, h, np.nan)


def distinct_entropy(c: np.ndarray, classes: SequenceClasses) -> np.ndarray:
    """Fig. 6's metric per class: entropy of c_n on n's distinct tokens, renormalised. (..., K)"""
    return entropy(c, classes.distinct)


def common_mass(c: np.ndarray, classes: SequenceClasses) -> np.ndarray:
    """Total attention of class n on common tokens. (..., K)"""
    return (c * classes.common).sum(-1)


def top_distinct_weight(c: np.ndarray, classes: SequenceClasses) -> np.ndarray:
    """Attention on class n's most probable distinct token l_0 (the theory's dominant token). (..., K)"""
    l0 = np.argmax(np.where(classes.distinct, classes.probs, -1.0), axis=1)
    return np.take_along_axis(c, np.broadcast_to(l0[:, None], c.shape[:-1] + (1,)), -1)[..., 0]
