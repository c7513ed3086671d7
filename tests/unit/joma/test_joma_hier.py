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


def test_sample_nodes_is_the_sampler_behind_sample():
    """The leaves and label of ``sample`` are columns of ``sample_nodes`` (same stream); each edge flips at
    rate ``flip``."""
    tree, flip = hier.balanced((2, 2, 2)), 0.1
    y = hier.sample_nodes(tree, flip, 20_000, torch.Generator().manual_seed(3))
    present, labels = hier.sample(tree, flip, 20_000, torch.Generator().manual_seed(3))
    assert torch.equal(y[:, tree.leaves], present) and torch.equal(y[:, 0].long(), labels)
    child = np.arange(1, len(tree.parent))
    disagree = (y[:, child] != y[:, np.array(tree.parent)[child]]).double().mean().item()
    assert abs(disagree - flip) < 0.01
    nodes, levels = hier.latent_nodes(tree)
    assert list(levels) == [0, 1, 1, 2, 2, 2, 2] and not set(nodes) & set(tree.leaves.tolist())


def test_max_correlation_against_numpy():
    rng = np.random.default_rng(0)
    lat = (rng.random((2, 500, 3)) < 0.5).astype(float)
    hid = rng.normal(size=(2, 500, 4))
    hid[0, :, 1] = 2 * lat[0, :, 2] + 1  # a unit that is the latent: correlation 1
    hid[1, :, 0] = 5.0  # a dead unit: counted as 0, not NaN
    got = hier.max_correlation(lat, hid)
    for r in range(2):
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.corrcoef(lat[r].T, hid[r].T)[:3, 3:]
        want = np.nanmax(np.where(np.isnan(c), 0, c), axis=1)
        assert np.allclose(got[r], want)
    assert np.isclose(got[0, 2], 1.0)


def test_alignment_frame_on_a_trained_model():
    tree = hier.balanced((2, 2))
    tr = hier.train(tree, 0.1, [0, 1], 20, [0, 20], batch=8, hidden=4, keep_mlp=True)
    assert np.array_equal(tr.params(1)["Z2"].numpy(), tr.Z2[1]) and tr.mlp["W1"].shape == (2, 2, 4, 4)
    df = hier.alignment_frame(tree, 0.1, tr, [0, 1], eval_batch=64, chunk=16)
    assert len(df) == 2 * 2 * 2 * 3  # steps x layers x seeds x latents (root + 2)
    assert set(df.level) == {0, 1} and np.all(np.abs(df[["ncorr", "ncorr_shuffled"]].to_numpy()) <= 1 + 1e-9)
    lo, up = hier.pooled_hidden(tr.params(1), torch.zeros(2, 3, 4, dtype=torch.float64))
    assert lo.shape == up.shape == (2, 3, 4) and float(up.abs().max()) == 0.0  # empty sequence: no position
