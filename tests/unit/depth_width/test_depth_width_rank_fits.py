"""The N = 2 rank theorem (sympy-checked), the depth-2 grid evaluator, the row-by-row FLINT copy, and
the exponent / crossover fits of the rank experiment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynamics.depth_width import modular, rank_fits, theory
from dynamics.depth_width.modular import P1, rank_mod_p, rank_mod_p_numpy
from dynamics.depth_width.network import LinearAttentionNet, evaluate_exact

MERSENNE = 2**31 - 1


def _sympy_network(d: int, L: int, heads: int, residual: bool, seed: int):
    """f(x^0, x^1) of a random integer-weight network, expanded by sympy; returns (poly, x0, x1)."""
    import sympy as sp

    rng = np.random.default_rng(seed)
    x0, x1 = sp.symbols(f"a0:{d}"), sp.symbols(f"b0:{d}")
    Y = [sp.Matrix(x0), sp.Matrix(x1)]
    d_a = d // heads
    rand = lambda r, c: sp.Matrix(rng.integers(-999, 1000, size=(r, c)).tolist())  # noqa: E731
    for _ in range(L):
        W = [(rand(d_a, d), rand(d_a, d), rand(d_a, d), rand(d, d_a)) for _ in range(heads)]
        new = []
        for i in range(2):
            out = sp.zeros(d, 1)
            for Q, K, V, O in W:
                for j in range(2):
                    out += ((Q * Y[i]).dot(K * Y[j])) * (O * (V * Y[j]))
            new.append((out + Y[i]) if residual else out)
        Y = [sp.expand(v) for v in new]
    w = rand(d, 1)
    return sp.Poly(sp.expand(w.dot(Y[0])), *x0, *x1), x0, x1


@pytest.mark.parametrize("d,L,heads,residual", [
    (2, 2, 1, False), (3, 1, 1, True), (1, 3, 1, False),
    pytest.param(2, 2, 2, True, marks=pytest.mark.slow)])
def test_n2_rank_theorem_sympy(d, L, heads, residual):
    """docs/depth_width.md, N = 2 theorem: every monomial of f has odd degree in x^0 and even degree
    in x^1, so splitting f by the side of degree <= m_L gives rank <= C(d + m_L, d); the coefficient
    matrix (x^0 monomials x x^1 monomials) of a random integer network has exactly that rank."""
    import sympy as sp

    poly, _, _ = _sympy_network(d, L, heads, residual, seed=d * 10 + L)
    m = (3**L - 1) // 2
    rows, cols, entries = {}, {}, []
    for mono, coef in poly.terms():
        a, b = mono[:d], mono[d:]
        assert sum(a) % 2 == 1 and sum(b) % 2 == 0, (a, b)  # the parity lemma
        assert sum(a) + sum(b) <= 3**L
        entries.append((rows.setdefault(a, len(rows)), cols.setdefault(b, len(cols)), coef))
    M = sp.zeros(len(rows), len(cols))
    for i, j, c in entries:
        M[i, j] = c
    assert M.rank() == theory.n2_rank(d, L) == theory.n2_parity_count(d, L) == math.comb(d + m, d)


def test_hockey_stick_count():
    """sum_{k<=m} C(k+d-1, d-1) = C(m+d, d): the count in the proof equals the closed form."""
    for d in range(1, 7):
        for L in range(1, 5):
            assert theory.n2_parity_count(d, L) == theory.n2_rank(d, L)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("N", [2, 4, 6])
@pytest.mark.parametrize("p", [P1, MERSENNE])
@pytest.mark.parametrize("L", [2, 3])
def test_atom_grid_path_matches_exact_integers(residual, heads, N, p, L):
    rng = np.random.default_rng(5)
    net = LinearAttentionNet.random(rng, 4, L, heads, residual, p)
    templates = rng.integers(0, p, size=(7, 4), dtype=np.int64)
    idx = rng.integers(0, 7, size=(30, N))
    exact = evaluate_exact(net, templates[idx]).astype(np.int64)
    assert (net.evaluate_grid(templates, idx) == exact).all()


def test_row_by_row_flint_copy(monkeypatch):
    rng = np.random.default_rng(0)
    M = (rng.integers(0, P1, (60, 7)) @ rng.integers(0, 3, (7, 50))) % P1
    monkeypatch.setattr(modular, "LIST_LIMIT", 10)
    assert rank_mod_p(M, P1) == rank_mod_p_numpy(M, P1) == 7


def _closed_form_family(widths, depths):
    rows = [dict(d_x=d, L=L, heads=1, positions=2, residual=False, status="exact", rank=theory.n2_rank(d, L))
            for d in widths for L in depths]
    return pd.DataFrame(rows)


def test_width_exponent_recovers_closed_form_slope():
    ex = rank_fits.exact_family(_closed_form_family(range(1, 30), (1, 2)))
    est, g = rank_fits.width_exponent(ex, 2, 2, "shallow")
    xs = g.d_x.to_numpy(float)
    assert est.value == pytest.approx(np.polyfit(np.log(xs), [theory.n2_log_rank(d, 2) for d in xs], 1)[0])
    assert est.low <= est.value <= est.high and 1 < est.value < 4  # tends to m_2 = 4 from below
    est, _ = rank_fits.width_exponent(ex, 2, 1, "shallow")
    assert est.value == pytest.approx(1.0, abs=0.1)


def test_crossover_fit_on_closed_form_is_near_log3():
    widths = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    main = _closed_form_family(widths, range(1, 9))
    from dynamics.experiments.depth_width_rank import increments

    c = rank_fits.crossover(increments(main.assign(L=main.L.astype(int))), 2)
    assert c["slope"].value == pytest.approx(1.0, abs=0.25)
    assert c["slope"].has_interval and abs(c["offset"].value) < 1.5
