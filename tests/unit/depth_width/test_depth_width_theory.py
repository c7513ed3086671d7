"""Closed forms and related bounds: Levine et al.'s fit, the N=2 rank law, Noci's uniform-attention growth, SES
ranks (Dong et al.'s rank collapse is tested in test_rank_collapse.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynamics.depth_width import theory
from dynamics.depth_width.modular import P1, rank_mod_p
from dynamics.depth_width.seprank import RankSpec, grid_rank
from dynamics.depth_width.tasks import ses_class_rank, ses_matrix


def test_levine_fit_numbers():
    assert theory.optimal_params(70) == pytest.approx(47.38e9, rel=1e-3)  # BigScience's worked example
    L = theory.optimal_depth(1e12)
    assert theory.optimal_params(L) == pytest.approx(1e12, rel=1e-9)
    assert L == pytest.approx(94.7, abs=0.05)
    assert theory.optimal_width(L) == pytest.approx(29657, rel=1e-3)
    rows = {r["model"]: r for r in theory.fit_table()}
    assert rows["GPT-3 175B"]["opt_depth"] == pytest.approx(80.5, abs=0.05)
    assert rows["GPT-3 175B"]["opt_depth"] < 96


def test_depth_threshold():
    assert theory.depth_threshold(3**5) == pytest.approx(5.0)
    assert theory.degree(3) == 27


@pytest.mark.parametrize("d,L", [(2, 2), (3, 2), (2, 3), (4, 1)])
def test_n2_closed_form_matches_exact_rank(d, L):
    assert grid_rank(RankSpec(d, L, 1, 2, False), P1, 0).rank == theory.n2_rank(d, L)


def test_n2_log_rank_regimes():
    """ln C(d + m, d): ~ m ln d (shallow, m << d) and ~ d ln m (deep, m >> d)."""
    d = 10**6
    assert theory.n2_log_rank(d, 1) == pytest.approx(math.log(math.comb(d + 1, 1)))
    deep = theory.n2_log_rank(3, 30)
    assert deep / (3 * 30 * math.log(3)) == pytest.approx(1.0, rel=0.05)


def test_closed_form_crossover_tracks_log3_with_slope_one():
    """The N = 2 bound's continuous crossover (ratio sqrt 3) moves one layer per factor 3 of width."""
    from dynamics.depth_width.rank_fits import closed_form_crossover

    ks = np.arange(4, 13)
    stops = [closed_form_crossover(3.0**k) for k in ks]
    assert np.polyfit(ks, stops, 1)[0] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("k,V", [(3, 3), (4, 4), (2, 5), (3, 2)])
def test_ses_rank_from_krawtchouk_matches_exact(k, V):
    for m in range(k + 1):
        assert ses_class_rank(m, k, V) == rank_mod_p(ses_matrix(m, k, V), P1)


def test_uniform_attention_growth_law():
    rng = np.random.default_rng(0)
    for L, alpha in [(8, 1.0), (8, 1 / math.sqrt(8))]:
        s = theory.simulate_uniform_attention(L, alpha, 8, 64, 400, rng)
        pred = theory.uniform_attention_growth(L, alpha)
        assert abs(s.mean() - pred) < 4 * s.std(ddof=1) / math.sqrt(len(s))
    assert theory.uniform_attention_growth(100, 0.1) < math.e


def test_bottleneck_width():
    assert theory.bottleneck_width(8, 3) == 3
    assert theory.bottleneck_width(2, 3) == 2
    assert theory.bottleneck_width(5, 0) == 5
