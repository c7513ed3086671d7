"""The hierarchical latent-tree model: tree geometry, the co-occurrence closed form against the sampler."""

from __future__ import annotations

import numpy as np
import torch

from dynamics.joma import hier


def test_balanced_tree_geometry():
    deep = hier.balanced((2, 2, 2))
    assert len(deep.leaves) == 8
    h = deep.lca_height()
    assert h[0, 1] == 1 and h[0, 2] == 2 and h[0, 7] == 3 and h[3, 3] == 0
    flat = hier.balanced((2, 4))
    assert flat.lca_height()[0, 3] == 1 and flat.lca_height()[0, 4] == 2


def test_cooccurrence_closed_form_matches_the_sampler():
    """Consistency: P(y_l=1 | y_m=1) = (1 + q^d)/2 against 100k sampled sequences."""
    tree, flip = hier.balanced((2, 2, 2)), 0.1
    present, labels = hier.sample(tree, flip, 100_000, torch.Generator().manual_seed(0))
    p = present.numpy()
    cond = (p.T @ p / len(p)) / p.mean(0)[None, :]
    assert np.abs(cond - hier.cooccurrence(tree, flip)).max() < 0.01
    # closer common ancestors co-occur more strongly (the content of Thm. 5)
    co = hier.cooccurrence(tree, flip)
    assert co[0, 1] > co[0, 2] > co[0, 7] > 0.5
    assert set(np.unique(labels.numpy())) == {0, 1}


def test_centred_logits():
    Z = np.arange(9.0).reshape(3, 3)
    z = hier.centred_logits(Z)
    assert np.isnan(z[0, 0]) and np.allclose(np.nansum(z, axis=1), 0)


def test_training_moves_the_query_layer_and_is_reproducible():
    tree = hier.balanced((2, 2))
    a = hier.train(tree, 0.1, [0, 1], 30, [0, 30], batch=8, hidden=4)
    b = hier.train(tree, 0.1, [0, 1], 30, [0, 30], batch=8, hidden=4)
    assert np.array_equal(a.Z2, b.Z2) and np.all(np.isfinite(a.loss))
    assert np.abs(a.Z2[-1] - a.Z2[0]).max() > 0
