"""The synthetic sequence classes of Scan and Snap (Tian et al. 2023, Sec. 3.2 and the official
``Dataset2``).

A class s_{m,n} fixes the query (last) token m = psi(n), the next token n, and a contextual
distribution P(l | m, n); a length-T sequence is T-1 i.i.d. draws from P(l | m, n) followed by m,
labelled n.  Token layout (as the official code, so M matches the paper's figures)::

    [0, num_common)                                global common tokens
    num_last * num_common_per_last                 common tokens of each query
    K * num_unique_per_next                        distinct tokens of each next token
    num_last                                       query tokens
    K = num_last * num_next_per_last               next tokens

Unnormalised probabilities: ``common_unnormalized_prob`` for common tokens and
``linspace(unique_unnormalized_min, unique_unnormalized_max, num_unique_per_next)`` across each
distinct block; each class is normalised separately (Syn-Small: 10 * 1 + 5.5 = 15.5).

Token roles follow the paper's definition with Omega(l) = {n : P(l|n) > 0}: *distinct* when
|Omega(l)| = 1, *common* when |Omega(l)| > 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import field, require


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    num_last: int = field(2, "number of query (last) tokens")
    num_next_per_last: int = field(1, "next tokens per query; K = num_last * num_next_per_last classes")
    num_common: int = field(10, "global common tokens, shared by every class")
    num_common_per_last: int = field(0, "common tokens shared only by the classes of one query")
    num_unique_per_next: int = field(10, "distinct tokens of each next token")
    common_unnormalized_prob: float = field(1.0, "unnormalised probability of each common token")
    unique_unnormalized_min: float = field(0.1, "unnormalised probability of the rarest distinct token")
    unique_unnormalized_max: float = field(1.0, "unnormalised probability of the most frequent distinct token")

    def __post_init__(self) -> None:
        require(self.num_last >= 1, f"num_last must be >= 1, got {self.num_last}")
        require(self.num_next_per_last >= 1, f"num_next_per_last must be >= 1, got {self.num_next_per_last}")
        for name in ("num_common", "num_common_per_last", "num_unique_per_next"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        require(self.num_common + self.num_common_per_last + self.num_unique_per_next >= 1,
                "inconsistent sizes: every class needs at least one contextual token")
        require(self.common_unnormalized_prob > 0 or self.num_common + self.num_common_per_last == 0,
                f"common_unnormalized_prob must be > 0, got {self.common_unnormalized_prob}")
        require(0 < self.unique_unnormalized_min <= self.unique_unnormalized_max or self.num_unique_per_next == 0,
                "inconsistent sizes: need 0 < unique_unnormalized_min <= unique_unnormalized_max, got "
                f"{self.unique_unnormalized_min} and {self.unique_unnormalized_max}")


@dataclasses.dataclass(frozen=True)
class SequenceClasses:
    """The K sequence classes as arrays (numpy, float64).

    probs:    (K, M)  P(l | psi(n), n); zero outside the class's contextual tokens
    query:    (K,)    token id of psi(n)
    next:     (K,)    token id of n
    distinct: (K, M)  True where l is a distinct token of class n
    common:   (M,)    True where l is a common token (|Omega(l)| > 1)
    """

    probs: np.ndarray
    query: np.ndarray
    next: np.ndarray
    distinct: np.ndarray
    common: np.ndarray

    @property
    def K(self) -> int:
        return self.probs.shape[0]

    @property
    def M(self) -> int:
        return self.probs.shape[1]

    @property
    def queries(self) -> np.ndarray:
        """Distinct query tokens, in order."""
        return np.unique(self.query)


def build_classes(spec: SyntheticSpec) -> SequenceClasses:
    K = spec.num_last * spec.num_next_per_last
    per_last0 = spec.num_common
    unique0 = per_last0 + spec.num_common_per_last * spec.num_last
    last0 = unique0 + spec.num_unique_per_next * K
    next0 = last0 + spec.num_last
    M = next0 + K
    probs = np.zeros((K, M))
    query = np.zeros(K, dtype=np.int64)
    unique = np.linspace(spec.unique_unnormalized_min, spec.unique_unnormalized_max, spec.num_unique_per_next)
    n = 0
    for m in range(spec.num_last):
        for _ in range(spec.num_next_per_last):
            probs[n, :spec.num_common] = spec.common_unnormalized_prob
            a = per_last0 + m * spec.num_common_per_last
            probs[n, a:a + spec.num_common_per_last] = spec.common_unnormalized_prob
            b = unique0 + n * spec.num_unique_per_next
            probs[n, b:b + spec.num_unique_per_next] = unique
            query[n] = last0 + m
            n += 1
    return from_probs(probs / probs.sum(1, keepdims=True), query, next0 + np.arange(K))


def from_probs(probs: np.ndarray, query: np.ndarray, next_tokens: np.ndarray) -> SequenceClasses:
    """Classes from explicit P(l|n) rows (used for real-text co-occurrence as well)."""
    support = probs > 0
    omega = support.sum(0)
    return SequenceClasses(probs=probs, query=np.asarray(query), next=np.asarray(next_tokens),
                           distinct=support & (omega == 1)[None, :], common=omega > 1)


class Sampler:
    """Draws whole batches of length-T sequences at once (inverse-CDF sampling, no Python loop over
    samples): T-1 i.i.d. keys from P(l | n) for a class n drawn uniformly, then the query psi(n).
    :meth:`sample` returns tokens ``(B, T)`` with the query last and labels ``(B,)``."""

    def __init__(self, classes: SequenceClasses, device: str | torch.device = "cpu"):
        self.cdf = torch.as_tensor(np.cumsum(classes.probs, 1), device=device)
        self.cdf[:, -1] = 1.0 + 1e-12  # guard u close to 1 against rounding in the cumulative sum
        self.query = torch.as_tensor(classes.query, device=device)
        self.next = torch.as_tensor(classes.next, device=device)
        self.K = classes.K
        self.device = device

    def draw(self, batch: int, T: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Class index ``(B,)`` and the T-1 contextual keys ``(B, T-1)`` of each sequence."""
        cls = torch.randint(self.K, (batch,), generator=gen)
        u = torch.rand((batch, T - 1), generator=gen, dtype=torch.float64)
        cls, u = cls.to(self.device), u.to(self.device)
        return cls, torch.searchsorted(self.cdf[cls], u, right=True)

    def sample(self, batch: int, T: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cls, ctx = self.draw(batch, T, gen)
        x = torch.cat([ctx, self.query[cls, None]], 1)
        return x, self.next[cls]
