"""Tasks for the fixed-budget sweeps: start-end similarity (synthetic) and WikiText language modelling.

Start-end similarity (SES; Levine et al.'s depth-efficiency task for RNNs, HUJI-Deep
``start_end_similarity``): a sequence a_1..a_k b_1..b_k over V symbols; the label is the number of
positions where the halves agree, m = #{i : a_i = b_i} in 0..k.  Here the classes are balanced
(m uniform, the agreeing positions uniform, disagreeing symbols uniform among the V-1 others).

Its separation rank across the half/half partition is known exactly: the indicator of class m is
the matrix [agree(a, b) = m] over V^k x V^k, an element of the Hamming association scheme H(k, V)
(distance k - m), whose eigenvalues are Krawtchouk numbers K_{k-m}(i) with multiplicities
C(k, i) (V-1)^i (Delsarte 1973).  Its rank is the total multiplicity of the nonzero eigenvalues --
of order V^k, far above what any small network can represent exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def krawtchouk(t: int, i: int, k: int, V: int) -> int:
    """K_t(i) = sum_s (-1)^s (V-1)^(t-s) C(i, s) C(k-i, t-s): eigenvalue of the distance-t graph of H(k, V)."""
    return sum((-1) ** s * (V - 1) ** (t - s) * math.comb(i, s) * math.comb(k - i, t - s) for s in range(t + 1))


def ses_class_rank(m: int, k: int, V: int) -> int:
    """Exact rank (over the reals) of [agree(a, b) = m] on V^k x V^k: the separation rank of the
    class-m indicator across the half/half partition."""
    return sum(math.comb(k, i) * (V - 1) ** i for i in range(k + 1) if krawtchouk(k - m, i, k, V) != 0)


def ses_matrix(m: int, k: int, V: int) -> np.ndarray:
    """The V^k x V^k 0/1 matrix [agree(a, b) = m] (for checking :func:`ses_class_rank` on small k)."""
    words = np.array(np.unravel_index(np.arange(V**k), (V,) * k)).T  # (V^k, k)
    agree = (words[:, None, :] == words[None, :, :]).sum(-1)
    return (agree == m).astype(np.int64)


def ses_batch(shape: tuple[int, ...], k: int, V: int, generator: torch.Generator, device="cpu"):
    """Balanced SES samples: tokens (*shape, 2k) int64 and labels (*shape,) int64 in 0..k."""
    n = int(np.prod(shape))
    a = torch.randint(V, (n, k), generator=generator)
    m = torch.randint(k + 1, (n,), generator=generator)
    # choose which m positions agree: rank random keys, the m smallest agree
    keys = torch.rand(n, k, generator=generator)
    order = keys.argsort(1).argsort(1)
    agree = order < m[:, None]
    shift = torch.randint(1, V, (n, k), generator=generator)  # a different symbol where they disagree
    b = torch.where(agree, a, (a + shift) % V)
    x = torch.cat([a, b], 1).reshape(*shape, 2 * k)
    return x.to(device), m.reshape(shape).to(device)


def lm_windows(ids: np.ndarray, shape: tuple[int, ...], tokens: int, generator: torch.Generator, device="cpu"):
    """Random windows of tokens+1 ids: inputs (*shape, tokens), next-token targets (*shape, tokens)."""
    n = int(np.prod(shape))
    start = torch.randint(len(ids) - tokens - 1, (n,), generator=generator)
    idx = start[:, None] + torch.arange(tokens + 1)
    w = torch.as_tensor(ids)[idx].reshape(*shape, tokens + 1)
    return w[..., :-1].to(device), w[..., 1:].to(device)


def lm_eval_windows(ids: np.ndarray, tokens: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive non-overlapping windows over the first ``max_tokens`` ids: (n, tokens) inputs and targets."""
    n = min(len(ids) - 1, max_tokens) // tokens
    w = torch.as_tensor(ids[: n * tokens + 1])
    return w[:-1].reshape(n, tokens), w[1:].reshape(n, tokens)
