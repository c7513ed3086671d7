"""Separation rank at independent random points: the matricisation that template grids cannot reach.

A template grid evaluates f on tuples of K shared template vectors; with three positions on each
side (N = 6) its rank is limited by K (about K^2 / 2 at L = 2, docs/depth_width.md §1), so a rank
of 12,000 would need ~6 x 10^5 columns.  Here every row is an independent random A-point
x^A = (x^0, ..., x^{|A|-1}) and every column an independent random B-point x^B, all uniform in
Z_p^{d_x}, and

    M[i, j] = f(x^A_i, x^B_j)        (m x m, one random network over Z_p)

satisfies rank M = min(m, sep(f; A, B)) at generic points: M = G_A G_B^T with G_A[i, r] =
g_r(x^A_i) for any separation f = sum_r g_r g'_r, and the m x R evaluation matrix of R linearly
independent polynomials has full rank unless a nonzero minor vanishes (Schwartz--Zippel, as for the
templates; probability <= degree / p).  The points are prefixes of one stream, so the m-point matrix
is the top-left block of any larger one, and :func:`.seprank.certify` (grow while full rank, then a
second size must repeat the rank below both sides) certifies the rank exactly as for grids.

Evaluating f pair by pair with :meth:`LinearAttentionNet.evaluate` costs ~38 us a tuple at N = 6,
d_x = 17, L = 2 (too slow for m = 15,000).  With one head, no residual and L = 2 the network is
additive over positions in d x d statistics (derivation in docs/depth_width.md §1):

    q_j = W^{Q,1} x_j,  k_j = W^{K,1} x_j,  v_j = W^{O,1} W^{V,1} x_j       (layer 1, per point)
    y_i = M q_i,  M = sum_j v_j k_j^T                                        (layer-1 output)
    f = sum_j <y_0, G y_j> <z, y_j> = <y_0, G M e>,  e = sum_j q_j <q_j, c>,  c = M^T z,
    G = W^{Q,2 T} W^{K,2},  z = (W^{O,2} W^{V,2})^T w,

so y_0 = a_A + sum_{j in B} <q_0, k_j> v_j and c = c_A + c_B split into per-row and per-column
parts, and f = sum_i <k_i, e> <y_0, G v_i> needs about 5 N d_x products a pair and no d x d product
(:func:`block_values`, a block of rows x columns at once; tested against ``evaluate`` and exact
integers).  Other shapes fall back to ``evaluate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .modular import check_prime, matrix_bytes, mm_mod, products_per_sum, random_residues
from .network import LinearAttentionNet
from .seprank import PointSet, RankResult, RankSpec, certify, default_threads, draw_network, run_jobs, validate

PAIR_CHUNK = 1 << 17  # pairs evaluated at once (a few (pairs, d_x) int64 arrays: ~20 MB each at d_x = 17)


def point_bytes(m: int) -> int:
    """Peak bytes of ranking m x m random-point matrices: the kept largest matrix (8 bytes an entry)
    plus the one being ranked with its FLINT copies (:func:`.modular.matrix_bytes`)."""
    return matrix_bytes(m, m) + 8 * int(m) ** 2


def largest_points(max_side: int, max_bytes: float) -> int:
    """The most points per side allowed by ``max_side`` and ``max_bytes``."""
    m = int(max_side)
    while m > 1 and point_bytes(m) > max_bytes:
        m = int(math.floor(m * 0.99))
    return m


def fast_path(net: LinearAttentionNet) -> bool:
    """Whether :func:`block_values` applies: L = 2, one head, no residual, and sums of d_x products
    that fit in int64 before a reduction (p < 2^28 for d_x <= 64)."""
    return net.depth == 2 and net.heads == 1 and not net.residual and products_per_sum(net.p) >= net.width + 4


def choose_points(spec: RankSpec, points: str) -> str:
    """Resolve ``points="auto"``: random points at N >= 4 (full-rank inputs), template grids at N = 2.
    At N >= 4 an m x m random-point matrix resolves rank m, while a template grid needs about twice
    as many rows as its rank (N = 4) or is limited by its number of templates (N = 6,
    docs/depth_width.md §1); at N = 2 the K x K grid is as good and keeps the closed form's K.  The
    fast formula (:func:`fast_path`) evaluates the L = 2, H = 1 cells; the others use the generic
    evaluator (about 2-6 us a tuple at d_x = 3, L = 3)."""
    if points != "auto":
        return points
    return "random" if spec.positions >= 4 and not spec.input_rank else "grid"


class PairFeatures:
    """Per-point quantities of the fast path for points X (m, n, d_x), all mod p:

    q, k, v: (m, n, d_x), the layer-1 projections of each position (v = W^{O,1} W^{V,1} x);
    Gv: (m, n, d_x), G v_j;  c: (m, d_x), sum_{j in side} k_j <v_j, z>;  y: (m, d_x), for the side holding
    position 0, sum_{j in side} <q_0, k_j> v_j (its part of y_0)."""

    def __init__(self, net: LinearAttentionNet, X: np.ndarray, G: np.ndarray, z: np.ndarray):
        p = net.p
        m, n, d = X.shape
        Wqkv = np.concatenate([net.Q[0, 0], net.K[0, 0], mm_mod(net.O[0, 0], net.V[0, 0], p)])  # (3d, d)
        qkv = mm_mod(np.remainder(X, p).reshape(m * n, d), Wqkv.T, p).reshape(m, n, 3, d)
        self.q, self.k, self.v = (np.ascontiguousarray(qkv[:, :, i]) for i in range(3))
        self.Gv = mm_mod(self.v, G.T.copy(), p)
        vz = mm_mod(self.v, z[:, None], p)[..., 0]  # (m, n): <v_j, z>
        self.c = np.remainder((self.k * vz[..., None] % p).sum(axis=1), p)  # (m, d)
        s = mm_mod(self.k, self.q[:, 0, :, None], p)[..., 0]  # (m, n): <q_0, k_j> (used for the A side)
        self.y = np.remainder((self.v * s[..., None] % p).sum(axis=1), p)  # (m, d)


def _layer2(net: LinearAttentionNet) -> tuple[np.ndarray, np.ndarray]:
    """G = W^{Q,2 T} W^{K,2} (d, d) and z = (W^{O,2} W^{V,2})^T w (d,), mod p."""
    p = net.p
    G = mm_mod(net.Q[1, 0].T.copy(), net.K[1, 0], p)
    z = mm_mod(mm_mod(net.O[1, 0], net.V[1, 0], p).T.copy(), net.w[:, None], p)[:, 0]
    return G, z


def _dots(a: np.ndarray, b: np.ndarray, per_row: bool) -> np.ndarray:
    """<a[r, c], b[., i]> for pair vectors a (R, C, d) and per-point vectors b: (R, n, d) when
    ``per_row`` (row points), else (C, n, d) -> (R, C, n), unreduced (each sum < d_x p^2 < 2^63)."""
    return np.einsum("rcd,rid->rci" if per_row else "rcd,cid->rci", a, b, optimize=True)


def _combine(t: np.ndarray, vecs: np.ndarray, per_row: bool) -> np.ndarray:
    """sum_j t[r, c, j] vecs[., j] for pair scalars t (R, C, n): (R, C, d), unreduced (< n p^2)."""
    return np.einsum("rcj,rjd->rcd" if per_row else "rcj,cjd->rcd", t, vecs, optimize=True)


def block_values(p: int, A: PairFeatures, B: PairFeatures, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """f(x^A_r, x^B_c) for every row r in ``rows`` and column c in ``cols``: (R, C) int64, by the L = 2
    formula of the module docstring, written so that no d x d product is formed per pair:

        y_0 = y_A + sum_{j in B} <q_0, k_j> v_j,   t_j = <q_j, c_A + c_B>,   e = sum_j t_j q_j,
        f = <y_0, G M e> = sum_i <k_i, e> <y_0, G v_i>        (i, j over all N positions).

    Every intermediate is reduced to a residue before it is multiplied again; a sum of at most
    max(d_x, N) products of residues stays below 2^63 (checked by :func:`fast_path`)."""
    qA, kA, GvA = A.q[rows], A.k[rows], A.Gv[rows]  # (R, nA, d)
    qB, kB, vB, GvB = B.q[cols], B.k[cols], B.v[cols], B.Gv[cols]  # (C, nB, d)
    R, nA, d = qA.shape
    C, nB, _ = qB.shape
    cA, cB = A.c[rows], B.c[cols]
    s = mm_mod(qA[:, 0], kB.reshape(C * nB, d).T, p).reshape(R, C, nB)  # <q_0, k_j>, j in B
    y0 = _combine(s, vB, per_row=False)
    y0 += A.y[rows][:, None, :]
    y0 %= p
    # t_j = <q_j, c_A> + <q_j, c_B>: one term per point, the other a cross product of rows and columns
    tA = mm_mod(qA.reshape(R * nA, d), cB.T, p).reshape(R, nA, C).transpose(0, 2, 1)
    tA = (tA + np.einsum("rjd,rd->rj", qA, cA)[:, None, :] % p) % p
    tB = mm_mod(cA, qB.reshape(C * nB, d).T, p).reshape(R, C, nB)
    tB = (tB + np.einsum("cjd,cd->cj", qB, cB)[None] % p) % p
    e = _combine(tA, qA, per_row=True)
    e += _combine(tB, qB, per_row=False)
    e %= p
    f = (_dots(e, kA, True) % p * (_dots(y0, GvA, True) % p)).sum(axis=2) % p
    f += (_dots(e, kB, False) % p * (_dots(y0, GvB, False) % p)).sum(axis=2) % p
    return f % p


class RandomPoints(PointSet):
    """One random network and a stream of random A- and B-points, measuring ranks at any m <= k_max
    (the interface :func:`.seprank.certify` grows and certifies on).  Keeps the largest matrix built:
    a smaller m is its top-left block, a larger m evaluates only the new entries."""

    def __init__(self, spec: RankSpec, prime: int, seed: int, max_side: int, max_bytes: float,
                 on_step: Callable[[int, int], None] | None = None, threads: int | None = None):
        self.spec, self.p, self.on_step = spec, check_prime(prime), on_step
        self.net, _ = draw_network(spec, self.p, seed)  # the template grids' network for this seed
        self.k_max = largest_points(max_side, max_bytes)
        pts = np.random.default_rng(np.random.SeedSequence([seed, spec.d_x, spec.positions, 1]))
        self.XA = random_residues(pts, (self.k_max, spec.n_a, spec.d_x), self.p)
        self.XB = random_residues(pts, (self.k_max, spec.n_b, spec.d_x), self.p)
        self.threads = default_threads() if threads is None else threads
        self.history: list[tuple[int, int]] = []
        self._kept: np.ndarray | None = None
        self._fast = None
        if fast_path(self.net):
            G, z = _layer2(self.net)
            self._fast = (PairFeatures(self.net, self.XA, G, z), PairFeatures(self.net, self.XB, G, z))

    def side(self, m: int) -> int:
        return m

    def k_for(self, side: float) -> int:
        return max(1, min(self.k_max, math.ceil(side)))

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """f at every (row, column) of ``rows`` x ``cols``: (len(rows), len(cols)) int64."""
        if self._fast is not None:
            return block_values(self.p, *self._fast, rows, cols)
        r, c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
        X = np.concatenate([self.XA[r], self.XB[c]], axis=1)
        return self.net.evaluate(X).reshape(len(rows), len(cols))

    def matrix(self, m: int) -> np.ndarray:
        kept = self._kept
        if kept is not None and m <= kept.shape[0]:
            return kept[:m, :m]
        out = np.empty((m, m), dtype=np.int64)
        old = 0 if kept is None else kept.shape[0]
        if old:
            out[:old, :old] = kept
        self._kept = None  # the old block now lives in ``out``
        step_c = min(m, 2048)
        step_r = max(1, PAIR_CHUNK // step_c)
        jobs = [(r0, min(r0 + step_r, m), c0, min(c0 + step_c, m))
                for r0 in range(0, m, step_r) for c0 in range(0, m, step_c)]
        jobs = [j for j in jobs if j[1] > old or j[3] > old]  # blocks with new entries

        def chunk(job) -> None:
            r0, r1, c0, c1 = job
            out[r0:r1, c0:c1] = self.block(np.arange(r0, r1), np.arange(c0, c1))

        run_jobs(chunk, jobs, self.threads)
        self._kept = out
        return out


def point_rank(spec: RankSpec, prime: int, seed: int, hint: float | None = None, max_side: int = 4096,
               fixed: int | None = None, max_bytes: float = 4 * 2**30,
               on_step: Callable[[int, int], None] | None = None, start: float = 1.2,
               confirm: float = 1.1, threads: int | None = None) -> RankResult:
    """Exact rank of f's A|B matricisation at random points (m rows, m columns), certified as
    :func:`.seprank.grid_rank` certifies templates; ``templates`` in the result counts points."""
    validate(spec, max_side, max_bytes, "random")
    return certify(RandomPoints(spec, prime, seed, max_side, max_bytes, on_step, threads), spec, seed,
                   hint=hint, fixed=fixed, start=start, confirm=confirm)
