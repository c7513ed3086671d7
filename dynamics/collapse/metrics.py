"""Attention-collapse measures: cross-layer similarity, similar-block counts, entropy, row identity.

Cross-layer similarity (Zhou et al. 2021, DeepViT, Eq. 2)::

    M^{p,q}_{h,t} = <A^p_{h,:,t}, A^q_{h,:,t}> / (||A^p_{h,:,t}|| ||A^q_{h,:,t}||)

A^p (H, T, T) is the attention map of block p (rows = queries i, columns = keys t), so the column
A_{h,:,t} says how much input token t contributes to each of the T outputs.  M = 1 when token t plays
the same role in blocks p and q.  A row-identical map A = 1 pi^T has columns pi_t 1, so any two such
maps give M = 1 whatever pi is: the raw metric saturates on exactly the rank-one maps that rank
collapse produces (and on the uniform map).  The *centred* variant subtracts each column's mean over
the queries first (a Pearson correlation); it ignores that uniform part and is 0 by convention when a
centred column vanishes (no variation, so no evidence of a shared pattern).

Aggregation.  DeepViT's Fig. 3 uses a per-block "similarity ratio" and counts "similar blocks" but
does not publish the thresholds.  Here (all three are parameters):

    frac_{p,q}(tau) = mean over (images, heads, tokens) of [M^{p,q}_{h,t} > tau]
    r_p(tau, k)     = mean over j = 1..min(k, p-1) of frac_{p,p-j}(tau)   (p-th block vs. the k before)
    similar blocks  = #{p : r_p >= block_thr}

Blocks are numbered from 1; block 1 has no predecessor and is never similar, so an L-block model
has at most L - 1 similar blocks (DeepViT's ViT-32 with "similarity ratio above 90% after block 17"
has 15).

All functions take numpy-compatible arrays with any leading axes and compute in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..rank_collapse import composite_norm, residual_ratio, token_residual  # noqa: F401  (re-exported)

EPS = 1e-300  # guards 0/0 only; any column with nonzero norm is divided exactly


ROUNDING = 1e-12  # a centred column below this fraction of its raw norm is rounding noise, i.e. zero


def _columns(A: np.ndarray, centred: bool) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if not centred:
        return A
    c = A - A.mean(-2, keepdims=True)
    small = np.sqrt((c * c).sum(-2, keepdims=True)) <= ROUNDING * np.sqrt((A * A).sum(-2, keepdims=True))
    return np.where(small, 0.0, c)


def cross_layer_similarity(A_p: np.ndarray, A_q: np.ndarray, centred: bool = False) -> np.ndarray:
    """M^{p,q}_{h,t} for maps (..., H, T, T) -> (..., H, T): cosine between matching key columns.

    ``centred=True`` subtracts each column's mean over the query axis first.  A column pair where
    either vector is zero gives 0 (a centred column within rounding, ``ROUNDING`` of its raw norm,
    counts as zero).
    """
    a, b = _columns(A_p, centred), _columns(A_q, centred)
    num = (a * b).sum(-2)
    den = np.sqrt((a * a).sum(-2) * (b * b).sum(-2))
    return np.where(den > 0, num / np.maximum(den, EPS), 0.0)


def lagged_similarity(maps: np.ndarray, lag: int, centred: bool = False) -> np.ndarray:
    """M^{p,p-lag} for every block p > lag of a stack (..., L, B, H, T, T) -> (..., L - lag, B, H, T).

    Entry [..., p - lag - 1 + 1, ...] (0-based index i) compares block i + lag with block i.
    """
    maps = np.asarray(maps, dtype=np.float64)
    L = maps.shape[-5]
    if not 1 <= lag < L:
        raise ValueError(f"lag must be in [1, {L - 1}], got {lag}")
    later = maps[..., lag:, :, :, :, :]
    earlier = maps[..., : L - lag, :, :, :, :]
    return cross_layer_similarity(later, earlier, centred)


def similarity_fraction(M: np.ndarray, taus: Sequence[float] | float, axes=(-3, -2, -1)) -> np.ndarray:
    """Share of entries with M > tau over ``axes`` (default: images, heads, tokens).

    With a sequence of taus the result has a trailing tau axis.
    """
    M = np.asarray(M, dtype=np.float64)
    taus_arr = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    frac = (M[..., None] > taus_arr).mean(axis=tuple(a - 1 if a < 0 else a for a in axes))
    return frac if np.ndim(taus) else frac[..., 0]


def pair_fractions(maps: np.ndarray, max_lag: int, taus: Sequence[float], centred: bool = False) -> np.ndarray:
    """frac_{p,p-j}(tau) for a stack (..., L, B, H, T, T) -> (..., L, max_lag, n_tau), NaN where p - j < 1.

    Index p (0-based) is block p + 1; index j - 1 is the lag j.
    """
    maps = np.asarray(maps, dtype=np.float64)
    L = maps.shape[-5]
    out = np.full(maps.shape[:-5] + (L, max_lag, len(taus)), np.nan)
    for j in range(1, min(max_lag, L - 1) + 1):
        out[..., j:, j - 1, :] = similarity_fraction(lagged_similarity(maps, j, centred), taus)
    return out


def block_ratios(fractions: np.ndarray, k: int) -> np.ndarray:
    """r_p = mean of frac_{p,p-j} over the j = 1..min(k, p-1) blocks before p.

    ``fractions`` (..., L, max_lag) at one tau (NaN where p - j < 1); returns (..., L), NaN for block 1.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if not 1 <= k <= fractions.shape[-1]:
        raise ValueError(f"window k must be in [1, {fractions.shape[-1]}], got {k}")
    window = fractions[..., :k]
    n = np.isfinite(window).sum(-1)
    total = np.where(np.isfinite(window), window, 0.0).sum(-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def count_similar(ratios: np.ndarray, block_thr: float) -> np.ndarray:
    """Number of blocks with r_p >= block_thr over the block axis (-1); NaN ratios never count."""
    ratios = np.asarray(ratios, dtype=np.float64)
    return (np.nan_to_num(ratios, nan=-np.inf) >= block_thr).sum(-1)


def n_similar_blocks(maps: np.ndarray, tau: float = 0.9, k: int = 1, block_thr: float = 0.9,
                     centred: bool = False) -> np.ndarray:
    """DeepViT's number of similar blocks for a stack of maps (..., L, B, H, T, T) -> (...)."""
    frac = pair_fractions(maps, k, [tau], centred)[..., 0]
    return count_similar(block_ratios(frac, k), block_thr)


def attention_entropy(A: np.ndarray, normalized: bool = True) -> np.ndarray:
    """Entropy of each attention row, -sum_j A_ij log A_ij, over (..., T, T) -> (..., T).

    ``normalized`` divides by log T (1 = uniform attention).  Only meaningful for row-stochastic maps.
    """
    A = np.asarray(A, dtype=np.float64)
    safe = np.where(A > 0, A, 1.0)
    H = -(A * np.log(safe)).sum(-1)
    return H / np.log(A.shape[-1]) if normalized else H


def row_identity(A: np.ndarray) -> np.ndarray:
    """1 - ||A - 1 mean_rows(A)||_F / ||A||_F over (..., T, T) -> (...): 1 for a row-identical map."""
    A = np.asarray(A, dtype=np.float64)
    dev = np.sqrt(((A - A.mean(-2, keepdims=True)) ** 2).sum((-2, -1)))
    norm = np.sqrt((A * A).sum((-2, -1)))
    return 1.0 - dev / np.maximum(norm, EPS)


def dc_component(A: np.ndarray) -> np.ndarray:
    """Mean of each map over (i, j): its projection on the uniform matrix 11^T / T^2. (..., T, T) -> (...)."""
    return np.asarray(A, dtype=np.float64).mean((-2, -1))
