"""Exact Z_p arithmetic, the linear-attention network and its grid-tensor separation rank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy

from dynamics.depth_width.modular import (
    P1,
    P2,
    check_prime,
    is_prime,
    mm_mod,
    products_per_sum,
    rank_mod_p,
    rank_mod_p_numpy,
)
from dynamics.depth_width.network import LinearAttentionNet, evaluate_exact
from dynamics.depth_width.rank_sweep import sweep_family
from dynamics.depth_width.seprank import (
    RankSpec,
    _Grid,
    grid_indices,
    grid_matrix,
    grid_rank,
    grid_shape,
    prefix_rows,
    validate,
)
from dynamics.errors import UserError

MERSENNE = 2**31 - 1


def test_is_prime_matches_sympy():
    for n in list(range(0, 2000)) + [P1, P2, P1 + 2, MERSENNE, 2**31 + 11, 561, 1105, 2047 * 2049]:
        assert is_prime(n) == sympy.isprime(n), n


def test_check_prime_rejects_composite_and_large():
    with pytest.raises(UserError, match="not prime"):
        check_prime(268_435_400)
    with pytest.raises(UserError, match="too large"):
        check_prime(2**31 + 11)
    assert check_prime(P1) == P1


@pytest.mark.parametrize("p,k", [(P1, 5), (P1, 300), (MERSENNE, 7), (101, 40)],
                         ids=["p28-short", "p28-long", "p31", "small"])
def test_mm_mod_is_exact(p, k):
    assert products_per_sum(P1) == 128 and products_per_sum(MERSENNE) == 2
    rng = np.random.default_rng(0)
    A = rng.integers(0, p, size=(3, 4, k), dtype=np.int64)
    B = rng.integers(0, p, size=(k, 6), dtype=np.int64)
    exact = (A.astype(object) @ B.astype(object)) % p
    assert (mm_mod(A, B, p) == exact.astype(np.int64)).all()


@pytest.mark.parametrize("p", [P1, MERSENNE, 7])
def test_rank_engines_agree_on_known_rank(p):
    rng = np.random.default_rng(1)
    for n, m, r in [(30, 40, 12), (50, 50, 50), (20, 35, 0), (64, 64, 63)]:
        M = (rng.integers(0, p, size=(n, r)).astype(object) @ rng.integers(0, p, size=(r, m)).astype(object)) % p \
            if r else np.zeros((n, m), dtype=object)
        M = np.asarray(M, dtype=np.int64)
        got = rank_mod_p(M, p), rank_mod_p_numpy(M, p)
        expect = r if p > 1000 else got[0]  # tiny p: a random product may lose rank; engines must still agree
        assert got[0] == got[1] == expect


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("p", [P1, MERSENNE])
def test_network_matches_exact_integers(depth, residual, heads, p):
    """The layer-by-layer evaluation and the grid paths (L = 1: the layer's tables alone, N H lookups a
    tuple; L = 3: layer-1 tables then the deeper layers) equal exact Python integers."""
    rng = np.random.default_rng(2)
    net = LinearAttentionNet.random(rng, 4, depth, heads, residual, p)
    templates = rng.integers(0, p, size=(6, 4), dtype=np.int64)
    idx = rng.integers(0, 6, size=(40, 3))
    f = net.evaluate(templates[idx])
    assert (f == evaluate_exact(net, templates[idx]).astype(np.int64)).all()
    assert (net.evaluate_grid(templates, idx) == f).all()
    assert (net.evaluate_grid(templates, idx, net.grid_tables(templates, 3)) == f).all()


def test_network_is_homogeneous_of_degree_3_to_the_L():
    """Without residual each layer is cubic: f(lambda x) = lambda^(3^L) f(x) (mod p)."""
    p = P1
    rng = np.random.default_rng(3)
    for L in (1, 2, 3):
        net = LinearAttentionNet.random(rng, 3, L, 1, False, p)
        X = rng.integers(0, p, size=(10, 2, 3), dtype=np.int64)
        lam = 12345
        lhs = net.evaluate((X * lam) % p)
        rhs = (net.evaluate(X).astype(object) * pow(lam, 3**L, p)) % p
        assert (lhs == rhs.astype(np.int64)).all()


@pytest.mark.parametrize("L", [1, 2, 3])
def test_rank_width1_matches_analytic(L):
    """d_x = 1: every layer multiplies y^i by c (y^1^2 + y^2^2), so f = c x0 (x0^2 + x1^2)^m with
    m = (3^L - 1)/2, whose separation rank across x0 | x1 is m + 1."""
    for residual in (False, True):
        res = grid_rank(RankSpec(1, L, 1, 2, residual), P1, 0)
        assert res.converged and res.rank == (3**L - 1) // 2 + 1


@pytest.mark.parametrize("N", [2, 4])
def test_depth1_rank_is_width_plus_one(N):
    """L = 1: f = sum_j <x^0, A x^j> <u, x^j>; the A-side terms have rank 1 together, each B-side
    term is linear in x^0, so sep <= d_x + 1 -- reached generically."""
    for d in (1, 2, 3, 5):
        res = grid_rank(RankSpec(d, 1, 1, N, False), P1, 0)
        assert res.converged and res.rank == d + 1


def test_deduplicated_grid_has_the_rank_of_the_full_matricisation():
    """N = 4: columns (k2, k3) and (k3, k2) are equal (f is symmetric in positions 1..N-1)."""
    p = P1
    rng = np.random.default_rng(4)
    net = LinearAttentionNet.random(rng, 2, 2, 1, False, p)
    K = 5
    T = rng.integers(0, p, size=(K, 2), dtype=np.int64)
    idx = np.array(np.unravel_index(np.arange(K**4), (K,) * 4)).T
    full = net.evaluate(T[idx]).reshape(K**2, K**2)
    dedup = grid_matrix(net, T, 2, 2)
    assert dedup.shape == grid_shape(K, 2, 2) == (25, 15)
    assert rank_mod_p(full, p) == rank_mod_p(dedup, p)


def test_rank_agrees_across_primes_and_seeds_and_template_growth():
    ranks = set()
    for p, seed in [(P1, 0), (P2, 0), (P1, 1), (MERSENNE, 3)]:
        res = grid_rank(RankSpec(2, 2, 1, 4, True), p, seed)
        assert res.converged and res.prev_templates != res.templates
        ranks.add(res.rank)
    assert len(ranks) == 1


def test_input_rank_bottleneck():
    """Wies et al.: inputs of rank r give the rank of a width-r network, whatever d_x > r."""
    base = grid_rank(RankSpec(2, 2, 1, 2, False), P1, 0).rank
    for d in (3, 4):
        assert grid_rank(RankSpec(d, 2, 1, 2, False, input_rank=2), P1, 0).rank == base


def test_sweep_family_marks_unresolvable_cells():
    rows = sweep_family([1, 2, 3], [1, 2, 3], 1, 2, False, [(P1, 0), (P2, 0)], max_side=64)
    main = {(r["d_x"], r["L"]): r for r in rows if r["role"] == "main"}
    assert main[(1, 3)]["status"] == "exact" and main[(1, 3)]["rank"] == 14
    assert main[(3, 3)]["status"] != "exact"  # C(16, 3) = 560 > 64
    assert main[(3, 3)]["rank"] in (-1, 64) or main[(3, 3)]["status"].startswith("lower bound")
    cross = [r for r in rows if r["role"] == "cross-check"]
    assert cross and all(r["rank"] == main[(r["d_x"], r["L"])]["rank"] for r in cross)


@pytest.mark.parametrize("spec,msg", [
    (RankSpec(0, 1, 1, 2, False), "d_x=0 out of range"),
    (RankSpec(2, 9, 1, 2, False), "L=9 out of range"),
    (RankSpec(3, 1, 2, 2, False), "must divide"),
    (RankSpec(2, 1, 1, 1, False), "positions=1"),
])
def test_validate_rejects(spec, msg):
    with pytest.raises(UserError, match=msg):
        validate(spec)


def test_validate_refuses_oversized_matrix_with_estimate():
    with pytest.raises(UserError, match=r"needs about [0-9.]+ GiB"):
        validate(RankSpec(2, 1, 1, 2, False), max_side=100_000)


def test_memory_bound_is_the_largest_grid_not_a_square():
    """N = 4 grids have K^2 rows and C(K+1, 2) columns: the bound counts rows x cols (and the kept
    grid), so a max_side whose square would be refused still admits the N = 4 grid under it."""
    from dynamics.depth_width.modular import matrix_bytes
    from dynamics.depth_width.seprank import grid_bytes, largest_grid

    K, rows, cols = largest_grid(4, 1000)
    assert (rows, cols) == grid_shape(K, 2, 2) and rows <= 1000 < max(grid_shape(K + 1, 2, 2))
    assert cols < rows and grid_bytes(rows, cols) < matrix_bytes(1000, 1000)
    budget = (grid_bytes(rows, cols) + matrix_bytes(1000, 1000)) / 2
    validate(RankSpec(2, 2, 1, 4, False), max_side=1000, max_bytes=budget)  # the N = 4 grid fits
    with pytest.raises(UserError, match="GiB"):
        validate(RankSpec(2, 2, 1, 2, False), max_side=1000, max_bytes=budget)  # the square N = 2 one does not


def test_float_svd_is_not_used_and_would_undercount():
    """Why exact arithmetic: the same grid in float64 (small-integer weights) loses rank to SVD."""
    rng = np.random.default_rng(5)
    d, L = 2, 3
    net = LinearAttentionNet.random(rng, d, L, 1, False, P1)
    small = {k: rng.integers(-3, 4, size=getattr(net, k).shape) for k in ("Q", "K", "V", "O", "w")}
    K = 140
    T = rng.permutation(np.array(np.meshgrid(np.arange(-20, 21), np.arange(-20, 21))).reshape(2, -1).T)[:K]
    idx = np.array(np.unravel_index(np.arange(K * K), (K, K))).T
    exact_net = LinearAttentionNet(**{k: np.asarray(v, dtype=np.int64) % P1 for k, v in small.items()},
                                   residual=False, p=P1)
    M = exact_net.evaluate(np.asarray(T, dtype=np.int64)[idx] % P1).reshape(K, K)
    exact = rank_mod_p(M, P1)
    Y = T[idx].astype(np.float64)
    for layer in range(L):
        q, k, v = (Y @ small[n][layer, 0].T for n in ("Q", "K", "V"))
        S = q @ np.swapaxes(k, -1, -2)
        Y = (S @ v) @ small["O"][layer, 0].T
    Mf = (Y[:, 0, :] @ small["w"]).reshape(K, K)
    s = np.linalg.svd(Mf, compute_uv=False)
    float_rank = int((s > s[0] * 1e-12).sum())
    assert exact == math.comb(d + 13, d) == 105
    assert float_rank < exact


def test_grid_rows_of_a_prefix_are_the_smaller_grid_in_order():
    """The lexicographic multisets of range(K) are those of range(K') with all indices below K,
    in the same order: the K-grid is a submatrix of the K'-grid."""
    for n_a, n_b in [(1, 1), (2, 2), (2, 1), (3, 3)]:
        rows, cols = grid_indices(9, n_a, n_b)
        for K in (1, 4, 8):
            small_rows, small_cols = grid_indices(K, n_a, n_b)
            assert (rows[prefix_rows(rows, K)] == small_rows).all()
            assert (cols[prefix_rows(cols, K)] == small_cols).all()


@pytest.mark.parametrize("d,L,N,residual,heads", [
    (3, 2, 2, False, 1), (2, 3, 2, True, 1), (2, 1, 2, False, 1), (2, 2, 4, False, 1),
    (2, 2, 4, True, 2), (1, 3, 4, False, 1), (1, 2, 6, True, 1), (2, 2, 6, False, 1), (1, 3, 6, False, 1),
])
def test_reused_grids_equal_grids_built_from_scratch(d, L, N, residual, heads):
    """grid_rank with reuse (submatrix of the kept grid, or only the new entries evaluated) gives the
    history of the rebuild-every-K path, and every matrix equals grid_matrix from scratch."""
    spec = RankSpec(d, L, heads, N, residual)
    max_side = 400
    new = grid_rank(spec, P1, 0, max_side=max_side)
    old = grid_rank(spec, P1, 0, max_side=max_side, reuse=False)
    assert new == old and len(new.history) >= 2
    g = _Grid(spec, P1, 0, max_side, 2**30, None)
    for K, r in new.history:  # the same K sequence: growth, confirmation below, growth again
        M = g.matrix(K)
        assert (M == grid_matrix(g.net, g.pool[:K], spec.n_a, spec.n_b)).all()
        assert rank_mod_p(M, P1) == r


def test_sweep_certifies_across_a_width_gap():
    """A width past a gap in the list (d_x = 4 after 2) is certified from the widest measured narrower
    width that filled the largest grid, without evaluating a grid (the rank never falls in d_x)."""
    rows = sweep_family([1, 2, 4], [2], 1, 4, False, [(P1, 0)], max_side=30)
    main = {r["d_x"]: r for r in rows if r["role"] == "main"}
    assert main[2]["status"].startswith("lower bound") and main[2]["rank"] == 15
    assert main[4]["templates"] == 0 and main[4]["status"].startswith("lower bound: rank(d_x=2) >= 15")
