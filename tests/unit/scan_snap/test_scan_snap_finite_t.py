"""The O(1/T) correction of Scan and Snap's expected gradient (dynamics/scan_snap/finite_t.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics.scan_snap import finite_t as ft
from dynamics.scan_snap import population as pop
from dynamics.scan_snap import symbolic


@pytest.fixture(scope="module")
def classes():
    return ft.geometric_classes(K=2, n_distinct=6, n_common=1, common_weight=2.0, p_ratio=10.0)


@pytest.mark.parametrize("check", symbolic.FINITE_T_CHECKS, ids=lambda c: c.__name__)
def test_finite_t_sympy_checks(check):
    result = check()
    assert result.ok, f"{result.name}: residual {result.detail}"


def test_geometric_classes_layout(classes):
    P = ft.distinct_probs(classes)
    assert classes.K == 2 and classes.M == 1 + 12 + 1 + 2
    assert np.allclose(classes.probs.sum(1), 1.0)
    assert P[-1] / P[0] == pytest.approx(10.0)
    assert classes.common.sum() == 1 and classes.distinct.sum() == 12


def test_infinite_T_is_the_population_dynamics(classes):
    """eps = 0 gives exactly population gradient descent (another code path for the same expected gradient)."""
    r = ft.CorrectedFlow(classes, [math.inf], [1.0], [0.1]).descend(30, [30])
    ref = pop.descend(pop.Population(classes, [1.0], [0.1]), 30, [30])
    assert np.abs(r.Z[-1] - ref.Z[-1]).max() < 1e-12
    assert np.abs(ref.Z[-1]).max() > 1e-2


def test_correction_matches_monte_carlo_to_second_order(classes):
    """At a random state the O(1/T) term agrees with the Monte Carlo window average, and the residual
    falls like 1/T^2 (the order the expansion drops): evidence the correction, not just its sign, is right."""
    g = torch.Generator().manual_seed(0)
    flow = ft.CorrectedFlow(classes, [16, 64, math.inf], [1.0] * 3, [1.0] * 3)
    Y = torch.randn(1, flow.V, flow.M, generator=g, dtype=torch.float64) * 0.5
    Z = torch.randn(1, 1, flow.V, generator=g, dtype=torch.float64) * 0.3
    _, _, gz = flow.gradients(Y.expand(3, -1, -1).contiguous(), Z.expand(3, -1, -1).contiguous())
    rng = np.random.default_rng(1)
    resid = []
    for i, T in enumerate((16, 64)):
        mc = sum(ft.window_expectation_mc(classes, Y, Z, T, 50000, rng)[1] for _ in range(2)) / 2
        corr, mc_corr = gz[i] - gz[2], mc[0] - gz[2]
        resid.append(float(torch.linalg.vector_norm(mc_corr - corr) / torch.linalg.vector_norm(corr)))
    assert resid[1] < 0.1 and resid[1] < resid[0]


def test_sgd_runs_are_reproducible_and_T_independent_in_cost(classes):
    ss = np.random.SeedSequence(5).spawn(2)
    a = ft.sgd_runs(classes, [16, 4096], [1.0, 1.0], [0.1, 0.1], ss, batch=8, steps=5, record=[5])
    b = ft.sgd_runs(classes, [16, 4096], [1.0, 1.0], [0.1, 0.1], ss, batch=8, steps=5, record=[5])
    assert np.array_equal(a.Z, b.Z) and np.isfinite(a.Z).all()
    assert not np.allclose(a.Z[-1, 0], a.Z[-1, 1])


def test_crossing_interpolates_in_log_T():
    T = np.array([10.0, 100.0, 1000.0])
    assert ft.crossing(T, np.array([-1.0, -1.0, 1.0])) == pytest.approx(math.sqrt(100 * 1000))
    assert math.isnan(ft.crossing(T, np.array([1.0, 2.0, 3.0])))


def test_boundary_scales_like_one_over_p(classes):
    """The predicted boundary falls with P(l|n) (T* P_l roughly constant): rarer distinct tokens need longer
    windows for Theorem 2(a)'s sign, the regime result the finite-T experiment measures."""
    Ts = np.geomspace(16, 8192, 19)
    flow = ft.CorrectedFlow(classes, list(Ts), [1.0] * len(Ts), [0.1] * len(Ts))
    d, _ = ft.token_logits(flow.descend(200, [200]), classes)
    star = np.array([ft.crossing(Ts, d[:, j]) for j in range(d.shape[1])])
    ok = np.isfinite(star)
    assert ok.sum() >= 3
    assert np.all(np.diff(star[ok]) < 0)


def test_pooled_query_keeps_role_tokens_exact_and_pools_the_rest():
    """Real-text classes: role tokens keep their empirical P(l|m,n) (leak included), rare tokens pool into
    one token per class, roles follow the min_count rule."""
    counts = np.zeros((2, 12))
    counts[0, [0, 1, 2]] = [5, 4, 1]  # 0: distinct to class 0; 2: rare everywhere -> pooled
    counts[1, [0, 3, 4]] = [1, 6, 3]  # 0 leaks once into class 1 (stays distinct, P > 0); 3, 4 distinct to 1
    counts[:, 5] = [3, 3]  # common
    pq = ft.pooled_query(counts, 3, query=10, next_tokens=np.array([11, 9]))
    cl = pq.classes
    assert np.allclose(cl.probs.sum(1), 1)
    cols = list(pq.tokens)
    assert 2 not in cols and cl.M == 5 + 2 + 1 + 2  # tokens 0, 1, 3, 4, 5; two pooled; query; next
    assert cl.probs[1, cols.index(0)] == pytest.approx(1 / 13)  # the leak is kept
    assert pq.roles[0, cols.index(0)] == 1 and pq.roles[1, cols.index(0)] == 0
    assert pq.roles[0, cols.index(5)] == -1 and pq.roles[1, cols.index(3)] == 1
    assert cl.probs[0, 5] == pytest.approx(1 / 13)  # class 0's pooled token holds token 2's one occurrence
