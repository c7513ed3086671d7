"""Co-occurrence statistics and the Y/Z simulator on real-text windows, on tiny corpora built here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynamics.corpus import cooccurrence as CO
from dynamics.errors import UserError
from dynamics.scan_snap import model
from dynamics.scan_snap import text as S


def tiny_stream(seed: int = 0, n: int = 400):
    """Token ids and vocab for sentences "ctx ctx ctx q n" with known roles.

    Query "q" is followed by "A" or "B"; contexts of (q, A) draw from common c0, c1 and distinct
    a0 (often), a1 (rarely); contexts of (q, B) from c0, c1 and b0.  "z" pads so every window is full.
    """
    vocab = ["<unk>", "z", "q", "A", "B", "c0", "c1", "a0", "a1", "b0"]
    ix = {w: i for i, w in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    out = [ix["z"]] * 4
    for _ in range(n):
        nxt = rng.choice(["A", "B"])
        pool = ["c0", "c1", "a0", "a0", "a0", "a1"] if nxt == "A" else ["c0", "c1", "b0"]
        out += [ix[w] for w in rng.choice(pool, 3)] + [ix["q"], ix[nxt]]
    return np.array(out), vocab


def test_probabilities_and_roles_by_hand():
    ids, vocab = tiny_stream()
    co = CO.cooccurrence(ids, vocab, T=4, queries=1, next_per_query=2, min_support=10, max_windows=10_000,
                         min_count=1, exclude=("<unk>", "z"))
    assert vocab[co.queries[0]] == "q" and {vocab[n] for n in co.next[0]} == {"A", "B"}
    ix = {w: i for i, w in enumerate(vocab)}
    for k in range(2):
        # P(l|m,n) is the empirical context distribution of the class's windows, counted directly
        hits = co.windows[0, k]
        assert np.all(ids[hits] == ix["q"]) and np.all(ids[hits + 1] == co.next[0, k])
        ctx = np.concatenate([ids[i - 3:i] for i in hits])
        expect = np.bincount(ctx, minlength=len(vocab)) / len(ctx)
        np.testing.assert_allclose(co.probs[0, k], expect, rtol=0, atol=1e-15)
    kA = list(co.next[0]).index(ix["A"])
    assert set(np.flatnonzero(co.distinct[0, kA])) >= {ix["a0"], ix["a1"]}
    assert set(np.flatnonzero(co.common[0])) >= {ix["c0"], ix["c1"]}
    assert not co.distinct[0, :, ix["c0"]].any()
    # the two classes use the same number of windows (balanced), at most the smaller support
    assert co.windows.shape[2] == min(co.support[0])


def test_min_count_threshold_moves_rare_tokens_out_of_the_roles():
    ids, vocab = tiny_stream()
    strict = CO.cooccurrence(ids, vocab, T=4, queries=1, next_per_query=2, min_support=10, min_count=1,
                             exclude=("<unk>", "z"))
    # "z" (padding) occurs once, in the first window only: with min_count=2 it has no role
    iz = vocab.index("z")
    loose = dataclasses.replace(strict, min_count=10**6)
    assert not loose.distinct.any() and not loose.common.any()
    assert strict.omega[0, iz] <= 1


def test_query_table_lists_distinct_and_common_tokens():
    ids, vocab = tiny_stream()
    co = CO.cooccurrence(ids, vocab, T=4, queries=1, next_per_query=2, min_support=10, min_count=2,
                         exclude=("<unk>", "z"))
    table = CO.query_table(co, top=3)
    assert list(table["query"]) == ["q", "q"]
    rowA = table[table["next"] == "A"].iloc[0]
    assert rowA.top_distinct.startswith("a0 (") and "c0" in rowA.top_common
    assert rowA.n_distinct >= 1 and rowA.distinct_leak == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"queries": 50}, "asked for 50"),
    ({"min_support": 10**6}, "only 0 queries"),
    ({"T": 1}, "T must be at least 2"),
    ({"T": 10**6}, "shorter than one window"),
    ({"query_tokens": ["nope"]}, "not in the vocabulary"),
])
def test_bad_requests_are_user_errors(kwargs, message):
    ids, vocab = tiny_stream()
    args = dict(T=4, queries=1, next_per_query=2, min_support=10, exclude=("<unk>", "z")) | kwargs
    with pytest.raises(UserError, match=message):
        CO.cooccurrence(ids, vocab, **args)


def _setup(seed=0, R=3, B=16, L=5, V=12, K=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    Y = torch.randn(R, V, K + 1, generator=g, dtype=dtype)
    Z = torch.randn(R, 1, V, generator=g, dtype=dtype)
    keys = torch.randint(V, (R, B, L), generator=g)
    label = torch.randint(K, (R, B), generator=g)
    first = torch.as_tensor(np.argmax((keys[..., :, None] == keys[..., None, :]).numpy(), axis=-1))
    return Y, Z, keys, first, label


def _grads(fn, Y, Z):
    Y, Z = Y.clone().requires_grad_(True), Z.clone().requires_grad_(True)
    loss = fn(Y, Z)
    gy, gz = torch.autograd.grad(loss.sum(), [Y, Z])
    return loss.detach(), gy, gz


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_window_and_count_losses_match_the_exact_gradients():
    """Both position- and count-based losses give Lemma 1's gradients (loss_and_grads, by hand)."""
    Y, Z, keys, first, label = _setup()
    R, B, L = keys.shape
    V, K = Y.shape[1], Y.shape[2] - 1
    counts = model.context_counts(keys, V, Y.dtype)
    ref_loss, ref_gy, ref_gz = model.loss_and_grads(Y[..., :K].contiguous(), Z, torch.zeros(R, B, dtype=torch.long),
                                                    counts, None, label, True)
    for fn in (lambda y, z: S.window_loss(y, z, keys, first, label),
               lambda y, z: S.count_loss(y, z, counts, label)):
        loss, gy, gz = _grads(fn, Y, Z)
        assert rel(loss, ref_loss) < 1e-12
        assert rel(gy[..., :K], ref_gy) < 1e-12 and float(gy[..., K].abs().max()) == 0.0
        assert rel(gz, ref_gz) < 1e-12


def test_shared_column_for_never_target_outputs_is_exact():
    """M - K identical never-target outputs == one column with multiplicity (loss and per-copy gradient)."""
    Y, Z, keys, first, label = _setup(seed=1)
    _V, K1 = Y.shape[1], Y.shape[2]
    n_rest = 7
    Y[..., -1] = 0.3  # any common value of the copies
    full = torch.cat([Y[..., :-1], Y[..., -1:].expand(*Y.shape[:2], n_rest)], -1)
    loss_full, gy_full, _ = _grads(
        lambda y, z: S.window_loss(torch.cat([y, torch.zeros_like(y[..., :1])], -1), z, keys, first, label), full, Z)
    loss, gy, _ = _grads(lambda y, z: S.window_loss(y, z, keys, first, label, n_rest), Y, Z)
    assert rel(loss, loss_full) < 1e-12
    assert rel(gy[..., -1] / n_rest, gy_full[..., K1 - 1]) < 1e-12  # each copy moves like the representative
    assert rel(gy[..., :-1], gy_full[..., :K1 - 1]) < 1e-12


def test_population_mode_follows_theorems_2_and_3_early_on():
    """Mean counts, Z(0) = 0, exact roles: in the scanning phase every distinct token's logit rises and
    every common token's falls (Tian et al. 2023, Thm. 2), and the logits of a class's distinct tokens
    order like P(l|m,n) (Thm. 3).  (This 5-token toy is far from M >> K^2, so only early signs are
    asserted: later b0's logit turns down, which the theorem's assumptions do not exclude.)"""
    ids, vocab = tiny_stream(n=600)
    co = CO.cooccurrence(ids, vocab, T=4, queries=1, next_per_query=2, min_support=10, min_count=1,
                         exclude=("<unk>", "z"))
    data = S.local_data(co, ids)
    traj = S.train(data, [0, 0], [0, 0], eta_y=[1.0, 5.0], eta_z=[1.0, 1.0], steps=200, mode="population",
                   outputs=50, record=[0, 5, 200])
    m = S.role_metrics(traj.Z[1], traj.Z[0], data.probs[[0, 0]], data.distinct[[0, 0]], data.common[[0, 0]])
    assert np.all(m["distinct_up"] == 1.0) and np.all(m["common_down"] == 1.0)
    # class A has two distinct tokens with P(a0) > P(a1): a0's logit must end higher
    a0, a1 = (list(data.tokens[0]).index(vocab.index(w)) for w in ("a0", "a1"))
    assert np.all(traj.Z[-1][:, a0] > traj.Z[-1][:, a1])


def test_windows_mode_is_reproducible_and_shares_streams_across_learning_rates():
    ids, vocab = tiny_stream()
    co = CO.cooccurrence(ids, vocab, T=4, queries=1, next_per_query=2, min_support=10, exclude=("<unk>", "z"))
    data = S.local_data(co, ids)
    run = lambda lrs: S.train(data, [0] * len(lrs), [0] * len(lrs), lrs, lrs, steps=5, batch=8, record=[5])
    a, b = run([1.0, 2.0]), run([2.0])
    np.testing.assert_array_equal(a.Z[-1][1], b.Z[-1][0])
    assert np.all(a.diverged == -1)
