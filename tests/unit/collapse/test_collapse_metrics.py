"""Attention-collapse metrics on constructed maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.collapse import metrics


def _stochastic(rng, shape):
    A = rng.random(shape) + 0.05
    return A / A.sum(-1, keepdims=True)


def _row_identical(rng, H, T):
    pi = _stochastic(rng, (H, 1, T))
    return np.broadcast_to(pi, (H, T, T)).copy()


def test_row_identical_maps_give_similarity_one():
    """A = 1 pi^T has columns pi_t 1, so any two such maps have M = 1 (DeepViT Eq. 2)."""
    rng = np.random.default_rng(0)
    A, B = _row_identical(rng, 3, 7), _row_identical(rng, 3, 7)
    assert not np.allclose(A, B)
    np.testing.assert_allclose(metrics.cross_layer_similarity(A, B), 1.0, rtol=0, atol=1e-12)
    # Centred columns vanish: no shared pattern beyond the uniform part, 0 by convention.
    np.testing.assert_array_equal(metrics.cross_layer_similarity(A, B, centred=True), 0.0)


def test_permutation_map_against_identity():
    """A^p = I, A^q = P_sigma (query i attends sigma(i)): M_t = 1 at fixed points of sigma, else 0;
    centred: (delta - 1/T) / (1 - 1/T), i.e. -1/(T-1) off the fixed points."""
    T = 6
    sigma = np.array([0, 2, 1, 3, 5, 4])  # fixed points 0 and 3
    I = np.eye(T)[None]
    P = np.eye(T)[sigma][None]  # row i is e_{sigma(i)}
    fixed = (sigma == np.arange(T)).astype(float)
    np.testing.assert_allclose(metrics.cross_layer_similarity(I, P)[0], fixed, atol=1e-15)
    expected_c = np.where(fixed == 1, 1.0, -1.0 / (T - 1))
    np.testing.assert_allclose(metrics.cross_layer_similarity(I, P, centred=True)[0], expected_c, atol=1e-14)


def test_query_permuted_random_map_matches_explicit_sum():
    """Permuting the queries of A: M_t = sum_i A[i,t] A[s(i),t] / ||A[:,t]||^2, written out by hand."""
    rng = np.random.default_rng(1)
    T = 9
    A = _stochastic(rng, (T, T))
    s = rng.permutation(T)
    expected = [sum(A[i, t] * A[s[i], t] for i in range(T)) / sum(A[i, t] ** 2 for i in range(T)) for t in range(T)]
    M = metrics.cross_layer_similarity(A[None], A[s][None])[0]
    np.testing.assert_allclose(M, expected, rtol=1e-13)


def test_similarity_is_symmetric_scale_free_and_one_on_itself():
    rng = np.random.default_rng(2)
    A, B = _stochastic(rng, (2, 4, 5, 5)), _stochastic(rng, (2, 4, 5, 5))
    np.testing.assert_allclose(metrics.cross_layer_similarity(A, B), metrics.cross_layer_similarity(B, A))
    np.testing.assert_allclose(metrics.cross_layer_similarity(A, 3.0 * B), metrics.cross_layer_similarity(A, B))
    np.testing.assert_allclose(metrics.cross_layer_similarity(A, A), 1.0, atol=1e-14)
    M = metrics.cross_layer_similarity(A, B)
    assert M.shape == (2, 4, 5) and np.all(M <= 1 + 1e-12) and np.all(M >= 0)


def _stack(rng, L, first_identical, B=2, H=2, T=5):
    """Blocks 1..first_identical-1 random; blocks first_identical..L share one row-identical map."""
    maps = _stochastic(rng, (L, B, H, T, T)) ** 8  # sharp, so random blocks differ
    maps /= maps.sum(-1, keepdims=True)
    shared = np.broadcast_to(_stochastic(rng, (B, H, 1, T)), (B, H, T, T))
    maps[first_identical - 1:] = shared
    return maps


def test_similar_block_count_window_and_threshold():
    """Blocks 4..8 identical: with k = 1, blocks 5..8 are similar (4 blocks); with k = 2 block 5 also
    compares with block 3, so only 6..8 (3 blocks) reach a ratio of 1."""
    rng = np.random.default_rng(3)
    maps = _stack(rng, 8, 4)
    assert metrics.n_similar_blocks(maps, tau=0.9, k=1, block_thr=0.9) == 4
    assert metrics.n_similar_blocks(maps, tau=0.9, k=2, block_thr=0.9) == 3
    # block_thr 0.5 admits block 5 with k = 2 (ratio 0.5 + a little from the random pair is >= 0.5).
    frac = metrics.pair_fractions(maps, 2, [0.9])[..., 0]
    r = metrics.block_ratios(frac, 2)
    assert np.isnan(r[0]) and r[4] >= 0.5 and r[5:].min() == 1.0
    assert metrics.count_similar(r, 0.5) == 4
    # Centred: the shared block is row-identical, so centred M = 0 and nothing is similar.
    assert metrics.n_similar_blocks(maps, tau=0.9, k=1, centred=True) == 0


def test_block_one_never_similar_and_bad_window():
    rng = np.random.default_rng(4)
    maps = np.broadcast_to(_stochastic(rng, (1, 2, 2, 1, 5)), (6, 2, 2, 5, 5))
    assert metrics.n_similar_blocks(maps, tau=0.5, k=1, block_thr=0.5) == 5  # L - 1
    with pytest.raises(ValueError):
        metrics.block_ratios(np.zeros((6, 2)), 3)
    with pytest.raises(ValueError):
        metrics.lagged_similarity(maps, 6)


def test_similarity_fraction_counts_strictly_above_tau():
    M = np.array([[[0.2, 0.9], [0.95, 1.0]]])
    np.testing.assert_allclose(metrics.similarity_fraction(M, [0.5, 0.9, 0.99]), [0.75, 0.5, 0.25])
    assert metrics.similarity_fraction(M, 0.9) == 0.5
    assert metrics.similarity_fraction(M, [0.9], axes=(-1,)).shape == (1, 2, 1)


def test_entropy_row_identity_dc():
    T = 8
    uniform = np.full((T, T), 1 / T)
    onehot = np.eye(T)
    assert metrics.attention_entropy(uniform).mean() == pytest.approx(1.0)
    assert metrics.attention_entropy(onehot).max() == 0.0
    assert metrics.row_identity(uniform) == pytest.approx(1.0)
    assert metrics.row_identity(onehot) == pytest.approx(1 - np.sqrt((T - 1) / T))
    assert metrics.dc_component(onehot) == pytest.approx(1 / T)


def test_token_residual_zero_for_identical_tokens():
    x = np.tile(np.random.default_rng(5).standard_normal(6), (10, 1))
    assert metrics.residual_ratio(x) == pytest.approx(0.0, abs=1e-15)
    assert metrics.residual_ratio(np.eye(4)) > 0.5
