"""Gather and disperse in the plane: attention sublayers as moves of query points (numpy, float64).

Objects o_k, background keys and queries q_i are points in [0, 1]^2 (reference notes collapse_detr.md
D5; DAC-DETR's claim, Hu et al. 2023, Sec. 1: cross-attention gathers queries around objects,
self-attention disperses them).  One decoder sublayer moves every query by a step of size eta:

    CA (soft assignment to keys, one mean-shift step on the keys K = objects + background):
        q_i <- q_i + eta * (sum_k softmax_k(-|q_i - k|^2 / tau) k - q_i)
    SA among queries, excluding j = i, with a = softmax_{j != i}(-|q_i - q_j|^2 / tau_s):
        averaging (untrained):       q_i <- q_i + eta * (sum_j a_ij q_j - q_i)
        repulsive (learned, NMS-like): q_i <- q_i - eta * (sum_j a_ij q_j - q_i)

Decoders: "o-rep" = (SA_rep -> CA) per layer, "o-avg" = (SA_avg -> CA), "c" = CA only (the C-decoder).
The measured quantity is the number of queries within ``radius`` of each object, averaged over
objects and trials, at the points "in", "sa", "ca" of every layer.

Closed form (tau -> 0): CA moves q straight toward its nearest key k(q) by a factor (1 - eta), and
the segment stays in k(q)'s Voronoi cell (cells are convex), so after L CA-only layers
q_L = k(q_0) + (1 - eta)^L (q_0 - k(q_0)) exactly; the count is then a deterministic function of the
initial points.  :func:`hard_limit_count` evaluates it next to the finite-tau simulation.  The CA-only
fixed points are the keys themselves (soft k-means / mean shift with the keys as fixed centres).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import field
from ..errors import UserError

KINDS = ("o-rep", "o-avg", "c")


@dataclasses.dataclass(frozen=True)
class PlaneSpec:
    objects: int = field(5, "objects (keys that count), uniform on [low, high]^2")
    queries: int = field(100, "queries, uniform on [0, 1]^2")
    background: int = field(50, "background keys, uniform on [0, 1]^2")
    layers: int = field(6, "decoder layers")
    tau: float = field(0.01, "CA temperature (squared canvas units)")
    tau_s: float = field(0.002, "SA temperature (squared canvas units)")
    eta: float = field(0.5, "step size of every sublayer, in (0, 1]")
    radius: float = field(0.05, "a query counts for an object within this distance")
    trials: int = field(50, "independent scenes (vectorised)")
    low: float = field(0.1, "objects are uniform on [low, high]^2")
    high: float = field(0.9, "objects are uniform on [low, high]^2")

    def __post_init__(self) -> None:
        check(self)


def check(s: PlaneSpec) -> None:
    if s.queries < 1:
        raise UserError(f"the plane model needs at least 1 query, got {s.queries}")
    if s.objects < 1:
        raise UserError(f"the plane model needs at least 1 object, got {s.objects}")
    if s.background < 0 or s.layers < 1 or s.trials < 1:
        raise UserError("background >= 0, layers >= 1 and trials >= 1 are required in the plane model")
    if not (s.tau > 0 and s.tau_s > 0):
        raise UserError(f"temperatures must be positive, got tau={s.tau:g}, tau_s={s.tau_s:g}")
    if not 0 < s.eta <= 1:
        raise UserError(f"step size eta must be in (0, 1], got {s.eta:g}")
    if not s.radius > 0:
        raise UserError(f"radius must be positive, got {s.radius:g}")
    if not 0 <= s.low < s.high <= 1:
        raise UserError(f"objects must lie on the canvas: need 0 <= low < high <= 1, got {s.low:g}, {s.high:g}")


def sample(s: PlaneSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """objects (T, K, 2), queries (T, N, 2), keys (T, K + M, 2) with the objects first."""
    objects = rng.uniform(s.low, s.high, (s.trials, s.objects, 2))
    queries = rng.uniform(0, 1, (s.trials, s.queries, 2))
    background = rng.uniform(0, 1, (s.trials, s.background, 2))
    return objects, queries, np.concatenate([objects, background], 1)


def _softmax_neg_sqdist(a: np.ndarray, b: np.ndarray, tau: float, exclude_self: bool = False) -> np.ndarray:
    d2 = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1) / tau  # (T, n, m)
    if exclude_self:
        idx = np.arange(a.shape[1])
        d2[:, idx, idx] = np.inf
    d2 -= d2.min(-1, keepdims=True)
    w = np.exp(-d2)
    return w / w.sum(-1, keepdims=True)


def cross_attention(q: np.ndarray, keys: np.ndarray, tau: float, eta: float) -> np.ndarray:
    """One soft-assignment step toward the keys; q (T, N, 2), keys (T, M, 2)."""
    w = _softmax_neg_sqdist(q, keys, tau)
    return q + eta * (w @ keys - q)


def self_attention(q: np.ndarray, tau_s: float, eta: float, repulsive: bool) -> np.ndarray:
    """Averaging (repulsive=False) or repulsive step among queries, self excluded; needs N >= 2."""
    if q.shape[1] < 2:
        return q
    w = _softmax_neg_sqdist(q, q, tau_s, exclude_self=True)
    step = w @ q - q
    return q - eta * step if repulsive else q + eta * step


def count_within(q: np.ndarray, objects: np.ndarray, radius: float) -> np.ndarray:
    """(T, K): number of queries within radius of each object."""
    d2 = ((objects[:, :, None, :] - q[:, None, :, :]) ** 2).sum(-1)
    return (d2 <= radius ** 2).sum(-1)


def run(s: PlaneSpec, kind: str, rng: np.random.Generator) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Simulate one decoder kind; returns the points [(layer, "in"|"sa"|"ca"), ...] and the mean
    count per object at each point, per trial: (P, T)."""
    if kind not in KINDS:
        raise UserError(f"unknown plane decoder {kind!r}; choose {', '.join(KINDS)}")
    objects, q, keys = sample(s, rng)
    points, counts = [], []

    def record(layer, point):
        points.append((layer, point))
        counts.append(count_within(q, objects, s.radius).mean(-1))

    for layer in range(s.layers):
        record(layer, "in")
        if kind != "c":
            q = self_attention(q, s.tau_s, s.eta, repulsive=kind == "o-rep")
            record(layer, "sa")
        q = cross_attention(q, keys, s.tau, s.eta)
        record(layer, "ca")
    return points, np.stack(counts)


def hard_limit_count(s: PlaneSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The tau -> 0 prediction (module docstring) and the CA-only simulation at ``s.tau`` on the same
    initial points: two (L + 1, T) arrays of the mean count per object after 0..L CA layers.

    In the limit q_L = k(q_0) + (1 - eta)^L (q_0 - k(q_0)) with k(q_0) the nearest key."""
    objects, q0, keys = sample(s, rng)
    d2 = ((q0[:, :, None, :] - keys[:, None, :, :]) ** 2).sum(-1)
    k = np.take_along_axis(keys, d2.argmin(-1)[..., None], 1)  # (T, N, 2)
    theory, sim, q = [], [], q0
    for layer in range(s.layers + 1):
        theory.append(count_within(k + (1 - s.eta) ** layer * (q0 - k), objects, s.radius).mean(-1))
        sim.append(count_within(q, objects, s.radius).mean(-1))
        q = cross_attention(q, keys, s.tau, s.eta)
    return np.stack(theory), np.stack(sim)
