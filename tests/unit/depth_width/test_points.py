"""Separation rank at independent random points (dynamics.depth_width.points)."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.depth_width.modular import P1, P2
from dynamics.depth_width.network import evaluate_exact
from dynamics.depth_width.points import RandomPoints, fast_path, largest_points, point_bytes, point_rank
from dynamics.depth_width.rank_sweep import sweep_family
from dynamics.depth_width.seprank import RankSpec, grid_rank, validate
from dynamics.errors import UserError


@pytest.mark.parametrize("N", [2, 3, 4, 5, 6])
def test_pair_formula_matches_the_network_exactly(N):
    """The L = 2, H = 1 pair formula against the layer-by-layer evaluator and exact Python integers."""
    g = RandomPoints(RankSpec(7, 2, 1, N, False), P1, 3, max_side=64, max_bytes=2**30)
    assert g._fast is not None
    rows, cols = np.array([3, 0, 63, 17]), np.arange(5, 55)
    r, c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    X = np.concatenate([g.XA[r], g.XB[c]], axis=1)
    fast = g.block(rows, cols).ravel()
    assert (fast == g.net.evaluate(X)).all()
    assert (fast[:20] == np.array(evaluate_exact(g.net, X[:20]), dtype=np.int64)).all()


def test_fast_path_only_where_the_formula_holds():
    for spec, fast in [(RankSpec(4, 2, 1, 4, False), True), (RankSpec(4, 2, 2, 4, False), False),
                       (RankSpec(4, 2, 1, 4, True), False), (RankSpec(4, 3, 1, 4, False), False),
                       (RankSpec(4, 1, 1, 4, False), False)]:
        assert fast_path(RandomPoints(spec, P1, 0, 16, 2**30).net) == fast, spec


@pytest.mark.parametrize("spec", [RankSpec(4, 2, 1, 4, False), RankSpec(3, 2, 1, 2, False),
                                  RankSpec(4, 2, 2, 4, True), RankSpec(3, 1, 1, 6, False),
                                  RankSpec(2, 3, 1, 2, False)],
                         ids=["N4-fast", "N2-fast", "H2-res-generic", "L1-generic", "L3-generic"])
def test_random_points_give_the_template_grid_rank(spec):
    """Two independent routes to the same generic rank: shared-template grids and random points."""
    pts = point_rank(spec, P1, 0)
    assert pts.converged and pts.rank == grid_rank(spec, P1, 0).rank
    assert pts.rank < min(pts.templates, pts.prev_templates)  # two sizes, one rank, below both


def test_smaller_matrix_is_the_top_left_block_of_a_larger_one():
    g = RandomPoints(RankSpec(5, 2, 1, 6, False), P1, 1, 300, 2**30)
    small = g.matrix(40).copy()
    big = g.matrix(90)
    assert (big[:40, :40] == small).all()
    fresh = RandomPoints(RankSpec(5, 2, 1, 6, False), P1, 1, 300, 2**30, threads=1)
    assert (fresh.matrix(90) == big).all()


def test_n6_rank_beyond_the_template_grid():
    """At N = 6, d_x = 7, L = 2 template grids under the default bound only certify a lower bound;
    random points give the exact rank, the same on a second prime and seed."""
    spec = RankSpec(7, 2, 1, 6, False)
    rows = sweep_family([7], [2], 1, 6, False, [(P1, 0), (P2, 0), (P1, 1)], max_side=1000,
                        points="random", first_hint=600)
    main = [r for r in rows if r["role"] == "main"][0]
    assert main["status"] == "exact" and main["points"] == "random"
    assert all(r["rank"] == main["rank"] for r in rows)
    assert main["rank"] == point_rank(spec, P2, 1, hint=600).rank


def test_random_point_memory_bound_is_one_clear_error():
    assert point_bytes(1000) == 32 * 10**6 + 36 * 10**6
    assert largest_points(100_000, 4 * 2**30) < 100_000
    with pytest.raises(UserError, match="GiB"):
        validate(RankSpec(4, 2, 1, 6, False), max_side=100_000, points="random")
    with pytest.raises(UserError, match="choose"):
        validate(RankSpec(4, 2, 1, 6, False), points="lattice")


@pytest.mark.parametrize("depth,heads,residual", [(1, 1, False), (2, 1, False), (2, 2, True), (3, 1, True)])
def test_f_sees_the_b_side_only_through_its_second_moment(depth, heads, residual):
    """Without softmax every layer's statistics are built from X = sum_j x_j x_j^T, so f(x^A, x^B)
    depends on the B points only through X_B = sum_{j in B} x_j x_j^T (docs/depth_width.md §1).  A
    rotation of two B points by an orthogonal 2 x 2 matrix over Z_p (3/5, 4/5) keeps X_B and must keep
    f; a non-orthogonal mixing (the control) changes it."""
    from dynamics.depth_width.network import LinearAttentionNet

    p = P1
    rng = np.random.default_rng(depth * 10 + heads)
    net = LinearAttentionNet.random(rng, 4, depth, heads, residual, p)
    X = rng.integers(0, p, size=(30, 4, 4), dtype=np.int64)  # N = 4: A = {0, 1}, B = {2, 3}
    inv5 = pow(5, p - 2, p)
    c, s = 3 * inv5 % p, 4 * inv5 % p
    assert (c * c + s * s) % p == 1
    for (a, b), same in [((c, s), True), ((2, 1), False)]:
        Y = X.copy()
        Y[:, 2] = (a * X[:, 2] - b * X[:, 3]) % p
        Y[:, 3] = (b * X[:, 2] + a * X[:, 3]) % p
        assert ((net.evaluate(Y) == net.evaluate(X)).all()) == same


def test_width_equivalence_does_not_turn_an_unresolved_search_into_a_bound():
    """When the shallower partner's rank cannot be resolved (a lower bound below the target), the
    needed width is unknown: kind 'unresolved', width NaN, and the layer-worth claims skip the row."""
    import pandas as pd

    from dynamics.experiments.depth_width_rank import RankConfig, width_equivalence

    # N = 4 at random points, max_side 300: L = 3 at d_x = 2 is exact (232), L = 2 partners resolve up
    # to d' = 5 (rank 216); a target of 2640 (N = 4, d_x = 3, L = 3) needs an L = 2 width of 11.
    cfg = RankConfig(widths=(2,), depths=(2, 3), positions=4, primes=(P1,), seeds=1, max_side=300,
                     equiv_max_width=12, points="random")
    rows = pd.DataFrame([dict(d_x=3, L=3, heads=1, positions=4, residual=False, rank=2640, status="exact",
                              role="main")])
    eq = width_equivalence(rows, cfg)
    row = eq.iloc[0]
    assert row.kind.startswith("unresolved") and np.isnan(row.width_needed) and np.isnan(row.width_ratio)
    from dynamics.experiments.depth_width_rank import layer_worth

    known = pd.DataFrame([dict(positions=4, d_x=3, L=2, width_ratio=16.0)])
    assert layer_worth(pd.concat([known, eq])) == ([], [])  # the NaN row is not compared with anything
