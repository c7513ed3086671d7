"""Exact grid-tensor separation rank of the linear self-attention network.

Separation rank (Levine et al. 2020; Cohen & Shashua 2017) of f w.r.t. a partition (A, B)
of the N positions:

    sep(f; A, B) = min{ R : f(x^1..x^N) = sum_{r=1}^{R} g_r(x^A) g'_r(x^B) }.

Grid tensor (the grid-tensor lemma Levine et al. 2020 use for their lower bound): for templates v^(1..K) in R^{d_x},
V[k_1..k_N] = f(v^(k_1), ..., v^(k_N)); its matricisation [V]_{A,B} has K^|A| rows (the template
indices at A) and K^|B| columns, and rank [V]_{A,B} <= sep(f; A, B).  The rank is non-decreasing
in K (the K-grid is a sub-grid of the K'-grid: templates are a prefix of one fixed stream), and for
a polynomial f it equals sep(f; A, B) once the templates are unisolvent, so we grow K until the
rank stops growing while staying below both matrix dimensions.

Everything is exact over Z_p: weights, w and templates are uniform in Z_p, the grid is evaluated
with int64 multiply-reduce, and the rank is FLINT's.  By Schwartz--Zippel the Z_p rank equals the
generic real rank with high probability; callers repeat on a second prime and seed.

Partition: A = the first ceil(N/2) positions (which hold the output position 0), B = the rest.
f is symmetric in the positions other than 0, so every balanced partition gives the same rank.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import UserError
from .modular import check_prime, matrix_bytes, random_residues, rank_mod_p
from .network import LinearAttentionNet

MAX_SIDE = 4096  # largest matricisation side the rank sweep builds (rows and columns)
CHUNK = 1 << 17  # tuples evaluated at once: bounds the evaluator's memory to ~100 MB per thread


def default_threads() -> int:
    """Evaluator threads: 2 (the project machines' cores) in the main process, 1 inside an executor's
    worker process, where the pool already spreads families over the cores."""
    return 2 if multiprocessing.current_process().name == "MainProcess" else 1



@dataclasses.dataclass(frozen=True)
class RankSpec:
    """One network shape whose grid rank is measured.

    d_x: width; depth: L; heads: H (must divide d_x); positions: N; residual: skip connections;
    input_rank: r < d_x restricts the inputs to an r-dim subspace x = E c (Wies et al. 2021), or
    0 for full-rank inputs.
    """

    d_x: int
    depth: int
    heads: int
    positions: int
    residual: bool
    input_rank: int = 0

    @property
    def n_a(self) -> int:
        return partition(self.positions)[0]

    @property
    def n_b(self) -> int:
        return partition(self.positions)[1]


def partition(positions: int) -> tuple[int, int]:
    """(|A|, |B|) of the balanced partition: A = the first ceil(N/2) positions (with the output
    position 0), B = the rest."""
    n_a = (positions + 1) // 2
    return n_a, positions - n_a


@dataclasses.dataclass(frozen=True)
class RankResult:
    """rank: exact rank of [V]_{A,B} at ``templates`` templates; converged: the rank did not grow
    from ``prev_templates`` to ``templates`` and is below both sides; history: (K, rank) pairs."""

    spec: RankSpec
    prime: int
    seed: int
    templates: int
    rank: int
    converged: bool
    prev_templates: int
    history: tuple[tuple[int, int], ...]


def validate(spec: RankSpec, max_side: int = MAX_SIDE, max_bytes: float = 4 * 2**30, points: str = "grid") -> None:
    """UserError (exit 2) for shapes the exact sweep cannot take, before anything is allocated.

    ``points``: "grid" (template grids, bounded by their largest grid) or "random" (random points,
    :mod:`.points`: m x m matrices with m <= ``max_side``, bounded by :func:`.points.point_bytes`)."""
    if not 1 <= spec.d_x <= 64:
        raise UserError(f"d_x={spec.d_x} out of range: the exact rank takes 1 <= d_x <= 64")
    if not 1 <= spec.depth <= 8:
        raise UserError(f"L={spec.depth} out of range: the exact rank takes 1 <= L <= 8 "
                        "(degree 3^L; beyond 8 no grid that fits can resolve the rank)")
    if spec.heads < 1 or spec.d_x % spec.heads:
        raise UserError(f"heads={spec.heads} must divide d_x={spec.d_x} (d_a = d_x/H, as in Levine et al. 2020)")
    if not 2 <= spec.positions <= 8:
        raise UserError(f"positions={spec.positions} out of range: 2 <= N <= 8")
    if spec.input_rank < 0 or spec.input_rank > spec.d_x:
        raise UserError(f"input_rank={spec.input_rank} must be 0 (full) or between 1 and d_x={spec.d_x}")
    if points == "random":
        from .points import point_bytes

        if spec.input_rank:
            raise UserError("points=random takes full-rank inputs only (input_rank=0)")
        need = point_bytes(max_side)
        if need > max_bytes:
            raise UserError(f"random points: a {max_side}x{max_side} matrix needs about {need / 2**30:.1f} GiB "
                            f"(limit {max_bytes / 2**30:.1f} GiB); lower max_side")
        return
    if points != "grid":
        raise UserError(f"points={points!r}: choose 'grid' (template grids) or 'random' (random points)")
    side = max(grid_shape(2, spec.n_a, spec.n_b))  # the smallest grid (K = 2)
    if side > max_side:
        raise UserError(f"N={spec.positions}: even K=2 templates give a {side}-wide matricisation "
                        f"(limit {max_side})")
    _, rows, cols = largest_grid(spec.positions, max_side)
    need = grid_bytes(rows, cols)
    if need > max_bytes:
        raise UserError(f"the largest grid under max_side={max_side} at N={spec.positions}, {rows}x{cols}, "
                        f"needs about {need / 2**30:.1f} GiB (limit {max_bytes / 2**30:.1f} GiB); lower max_side")


def grid_bytes(rows: int, cols: int) -> int:
    """Peak bytes of measuring a rows x cols grid's rank with grid reuse (:class:`_Grid`): the
    matrix being ranked and its FLINT copies (:func:`modular.matrix_bytes`) plus the kept largest
    grid, 8 bytes an entry (the confirming grid is a copied submatrix of it): 32 bytes an entry."""
    return matrix_bytes(rows, cols) + 8 * int(rows) * int(cols)


def largest_grid(positions: int, max_side: int) -> tuple[int, int, int]:
    """(K, rows, cols): the most templates whose deduplicated grid (:func:`grid_shape`) has both
    sides <= ``max_side``.  The sides are not equal for N > 2 (the rows are about 2x the columns at
    N = 4 and 3x at N = 6), so the memory a bound on the sides allows is rows x cols, not
    max_side^2."""
    n_a, n_b = partition(positions)
    K = 2
    while max(grid_shape(K + 1, n_a, n_b)) <= max_side:
        K += 1
    return (K, *grid_shape(K, n_a, n_b))


def templates_for(spec: RankSpec, K: int, rng: np.random.Generator, p: int) -> np.ndarray:
    """K template vectors (K, d_x) in Z_p: uniform, or x = E c with E (d_x, r) for input rank r."""
    if spec.input_rank:
        E = random_residues(rng, (spec.d_x, spec.input_rank), p)
        C = random_residues(rng, (K, spec.input_rank), p)
        out = np.zeros((K, spec.d_x), dtype=np.int64)
        for c in range(spec.input_rank):
            out += (C[:, c, None] * E[None, :, c]) % p
        return out % p
    return random_residues(rng, (K, spec.d_x), p)


def multisets(K: int, n: int) -> np.ndarray:
    """All sorted n-tuples k_1 <= ... <= k_n from range(K): (C(K+n-1, n), n) int64."""
    if n == 0:
        return np.zeros((1, 0), dtype=np.int64)
    return np.array(list(itertools.combinations_with_replacement(range(K), n)), dtype=np.int64).reshape(-1, n)


def grid_shape(K: int, n_a: int, n_b: int) -> tuple[int, int]:
    """(rows, cols) of the deduplicated matricisation: position 0 times multisets of the other A
    positions, by multisets of the B positions.  f is symmetric in positions 1..N-1, so grid
    entries that differ by permuting those positions within A or within B are equal, and the
    deduplicated matrix has the same rank as [V]_{A,B} (only repeated rows/columns are dropped)."""
    return K * math.comb(K + n_a - 2, n_a - 1), math.comb(K + n_b - 1, n_b)


def grid_indices(K: int, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Template indices of the rows (rows, n_a) -- position 0, then a multiset of the other A
    positions -- and of the columns (cols, n_b) of the deduplicated K-grid (:func:`grid_shape`).

    Both lists are lexicographic, so the rows (columns) of the K-grid are exactly the rows
    (columns) of any K'-grid, K' > K, whose indices are all below K, in the same order: the K-grid
    is a submatrix of the K'-grid (:func:`prefix_rows`)."""
    others = multisets(K, n_a - 1)
    rows = np.concatenate([np.repeat(np.arange(K), len(others))[:, None], np.tile(others, (K, 1))], axis=1)
    return rows, multisets(K, n_b)


def prefix_rows(idx: np.ndarray, K: int) -> np.ndarray:
    """Positions (in order) of the index tuples of ``idx`` (rows or columns of a larger grid) that
    use only the first K templates: the rows or columns of the K-grid."""
    return np.flatnonzero((idx < K).all(axis=1))


def grid_matrix(net: LinearAttentionNet, templates: np.ndarray, n_a: int, n_b: int,
                max_bytes: float = 4 * 2**30, threads: int | None = None,
                base: np.ndarray | None = None) -> np.ndarray:
    """[V]_{A,B} without repeated rows and columns (see :func:`grid_shape`): (rows, cols) int64
    with entries f(v^(k_1), ..., v^(k_N)) mod p, evaluated in chunks of CHUNK tuples.

    ``base``: the matrix of a prefix of ``templates`` (K_0 < K templates, from this function).
    It is the submatrix on the rows and columns whose indices are all below K_0
    (:func:`grid_indices`), so it is copied there and only the other entries are evaluated --
    the new rows times all columns and the old rows times the new columns.  The layer-1 and atom
    tables (:meth:`LinearAttentionNet.grid_tables`) are built once per call, not per chunk.
    """
    K = templates.shape[0]
    rows, cols = grid_shape(K, n_a, n_b)
    need = matrix_bytes(rows, cols)
    if need > max_bytes:
        raise UserError(f"grid of K={K} templates at N={n_a + n_b}: a {rows}x{cols} matrix needs about "
                        f"{need / 2**30:.2f} GiB (limit {max_bytes / 2**30:.2f} GiB); refusing before allocating")
    row_idx, col_idx = grid_indices(K, n_a, n_b)
    out = np.empty((rows, cols), dtype=np.int64)
    tables = net.grid_tables(templates, n_a + n_b)
    if base is None:
        blocks = [(np.arange(rows), np.arange(cols))]
    else:
        k0 = next((k for k in range(1, K) if grid_shape(k, n_a, n_b) == base.shape), None)
        if k0 is None:
            raise ValueError(f"base {base.shape} is not the grid of fewer than K={K} templates")
        old_r, old_c = prefix_rows(row_idx, k0), prefix_rows(col_idx, k0)
        out[np.ix_(old_r, old_c)] = base
        new_r = np.setdiff1d(np.arange(rows), old_r, assume_unique=True)
        new_c = np.setdiff1d(np.arange(cols), old_c, assume_unique=True)
        blocks = [(new_r, np.arange(cols)), (old_r, new_c)]
    jobs = [(r, c, s) for r, c in blocks for s in range(0, len(r) * len(c), CHUNK)]

    def chunk(job) -> None:
        r_sel, c_sel, start = job
        t = np.arange(start, min(start + CHUNK, len(r_sel) * len(c_sel)), dtype=np.int64)
        r, c = r_sel[t // len(c_sel)], c_sel[t % len(c_sel)]
        idx = np.concatenate([row_idx[r], col_idx[c]], axis=1)  # (T, N)
        out[r, c] = net.evaluate_grid(templates, idx, tables)

    run_jobs(chunk, jobs, default_threads() if threads is None else threads)
    return out


def run_jobs(fn: Callable, jobs: list, threads: int) -> None:
    """fn(job) for every job, in ``threads`` threads when there is more than one job (numpy releases
    the GIL inside its integer loops, so chunks of a matrix fill in parallel)."""
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, jobs))
    else:
        for job in jobs:
            fn(job)


def draw_network(spec: RankSpec, p: int, seed: int) -> tuple[LinearAttentionNet, np.random.Generator]:
    """The random network of (spec, seed) over Z_p, and the generator after it (template grids draw
    their templates from it): the same weights whatever points the rank is measured at."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed, spec.d_x, spec.depth, spec.heads, spec.positions, int(spec.residual), spec.input_rank]))
    return LinearAttentionNet.random(rng, spec.d_x, spec.depth, spec.heads, spec.residual, p), rng


class PointSet:
    """What :func:`certify` grows: matrices at sizes K whose smaller K's matrix is a submatrix of a
    larger one's.  Subclasses set ``p``, ``k_max``, ``history``, ``on_step`` and give ``side(K)``,
    ``k_for(side)`` and ``matrix(K)``."""

    def rank(self, K: int) -> int:
        r = rank_mod_p(self.matrix(K), self.p)
        self.history.append((K, r))
        if self.on_step:
            self.on_step(K, r)
        return r


class _Grid(PointSet):
    """One random network and its template stream, measuring ranks at any K <= k_max.

    With ``reuse`` it keeps the largest grid matrix built so far: a smaller K's matrix is its
    submatrix (nothing evaluated), and a larger K evaluates only the new entries
    (:func:`grid_matrix` with ``base``).  Without, every K is built from scratch (the behaviour
    before, kept for the benchmark and the tests); the matrices are identical.  Peak memory: the
    kept grid plus the one being ranked (or, while growing, the old grid and the new one).
    """

    def __init__(self, spec: RankSpec, prime: int, seed: int, max_side: int, max_bytes: float,
                 on_step: Callable[[int, int], None] | None, reuse: bool = True):
        self.spec, self.p, self.max_bytes, self.on_step = spec, check_prime(prime), max_bytes, on_step
        self.net, rng = draw_network(spec, self.p, seed)
        self.k_max = largest_grid(spec.positions, max_side)[0]
        self.pool = templates_for(spec, self.k_max, rng, self.p)
        self.history: list[tuple[int, int]] = []
        self.reuse = reuse
        self._kept: tuple[int, np.ndarray] | None = None  # (K, matrix) of the largest grid built

    def side(self, K: int) -> int:
        return min(grid_shape(K, self.spec.n_a, self.spec.n_b))

    def k_for(self, side: float) -> int:
        """The smallest K whose smaller matrix side is at least ``side`` (capped at k_max)."""
        K = 1
        while K < self.k_max and self.side(K) < side:
            K += 1
        return K

    def matrix(self, K: int) -> np.ndarray:
        """The K-grid's matrix, from the kept grid where possible (see the class docstring)."""
        n_a, n_b = self.spec.n_a, self.spec.n_b
        if not self.reuse:
            return grid_matrix(self.net, self.pool[:K], n_a, n_b, self.max_bytes)
        if self._kept is not None and K <= self._kept[0]:
            k_kept, M = self._kept
            if K == k_kept:
                return M
            rows, cols = grid_indices(k_kept, n_a, n_b)
            return M[np.ix_(prefix_rows(rows, K), prefix_rows(cols, K))]
        base = self._kept[1] if self._kept is not None else None
        M = grid_matrix(self.net, self.pool[:K], n_a, n_b, self.max_bytes, base=base)
        self._kept = (K, M)
        return M


def grid_rank(spec: RankSpec, prime: int, seed: int, hint: float | None = None, max_side: int = MAX_SIDE,
              fixed: int | None = None, max_bytes: float = 4 * 2**30,
              on_step: Callable[[int, int], None] | None = None, start: float = 1.2,
              confirm: float = 1.1, reuse: bool = True) -> RankResult:
    """Exact rank of the grid tensor of one random network, growing the templates until it stops.

    The network and a stream of templates are drawn once from ``seed`` (a larger K only adds
    templates, so the rank never falls as K grows).  K starts where the smaller matrix side is
    about ``start`` x ``hint`` (an expected rank; 8 without one) and grows 1.5x while the grid is full
    rank.  Once a grid has rank r below its smaller side, a second grid whose side is about
    ``confirm`` x r (smaller if possible, else 1.25x larger) must give the same r -- two template counts, one rank,
    both below the matrix sides: ``converged``.  If the rank keeps growing until the grid would
    exceed ``max_side``, the last rank is a lower bound (``converged=False``).  ``fixed`` measures
    one K only (the cross-checks on other primes and seeds).  ``reuse=False`` rebuilds every grid
    from scratch instead of reusing the largest one (same result; the benchmark's baseline).
    """
    validate(spec, max_side, max_bytes)
    g = _Grid(spec, prime, seed, max_side, max_bytes, on_step, reuse)
    return certify(g, spec, seed, hint=hint, fixed=fixed, start=start, confirm=confirm)


def certify(g, spec: RankSpec, seed: int, hint: float | None = None, fixed: int | None = None,
            start: float = 1.2, confirm: float = 1.1) -> RankResult:
    """The growth and two-size certificate of :func:`grid_rank` on any :class:`PointSet` ``g``
    (template grids here, random points in :mod:`.points`); ``side(K)`` is the smaller matrix side."""

    def result(K: int, r: int, converged: bool, prev: int) -> RankResult:
        return RankResult(spec, g.p, seed, K, r, converged, prev, tuple(g.history))

    if fixed is not None:
        K = min(int(fixed), g.k_max)
        return result(K, g.rank(K), False, K)
    if not 1.0 < confirm <= start:
        raise UserError(f"template slack: need 1 < confirm ({confirm}) <= start ({start})")
    K = g.k_for(start * hint if hint else 8)
    r = g.rank(K)
    while r >= g.side(K):  # full rank: the grid is too small to show where the rank stops
        if K == g.k_max:
            return result(K, r, False, K)
        K = max(K + 1, g.k_for(1.5 * g.side(K)))
        r = g.rank(K)
    K_c = g.k_for(max(r + 1, confirm * r))
    if K_c >= K:  # no room for the slack below K: any smaller size whose side still exceeds r will do
        K_c = g.k_for(r + 1)
    if K_c < K:  # confirm on a smaller grid that still has room above r
        r_c = g.rank(K_c)
        if r_c == r:
            return result(K, r, True, K_c)
        K, r = K_c, r_c  # the rank was still growing: continue upwards from the smaller grid
    while True:
        if K == g.k_max:
            return result(K, r, False, K)
        K_next = max(K + 1, g.k_for(1.25 * g.side(K)))
        r_next = g.rank(K_next)
        if r_next == r and r < g.side(K):
            return result(K_next, r, True, K)
        K, r = K_next, r_next
