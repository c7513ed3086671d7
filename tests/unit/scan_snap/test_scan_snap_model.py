import numpy as np
import pytest
import torch

from dynamics.scan_snap import model, optim
from dynamics.scan_snap.data import SyntheticSpec, build_classes
from dynamics.scan_snap.train import TrainOptions, train


@pytest.mark.parametrize("normalize", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("residual", [True, False], ids=["res", "no-res"])
def test_hand_gradients_equal_autograd_of_the_official_model(normalize, residual):
    """loss_and_grads (counts, compact parameters) against autograd through the token-level model."""
    g = torch.Generator().manual_seed(0)
    R, B, T, M = 3, 6, 9, 12
    queries, vocab = torch.tensor([9, 11]), torch.arange(7)  # keys live in tokens 0..6
    if residual:
        vocab = torch.cat([vocab, queries])
    Y = torch.randn(R, M, M, generator=g, dtype=torch.float64, requires_grad=True)
    Z = torch.randn(R, M, M, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randint(7, (R, B, T), generator=g)
    qrow = torch.randint(2, (R, B), generator=g)
    x[..., -1] = queries[qrow]
    label = torch.randint(M, (R, B), generator=g)
    loss, _ = model.forward(Y, Z, x, label, normalize, residual)
    gY, gZ = torch.autograd.grad(loss.sum(), [Y, Z])

    col = torch.full((M,), len(vocab), dtype=torch.long)
    col[vocab] = torch.arange(len(vocab))
    counts = model.context_counts(col[x[..., :-1]], len(vocab) + 1, torch.float64)[..., :-1]
    qcol = col[x[..., -1]] if residual else None
    loss2, dY, dZ = model.loss_and_grads(Y.detach()[:, vocab], Z.detach()[:, queries[:, None], vocab[None, :]],
                                         qrow, counts, qcol, label, normalize)
    torch.testing.assert_close(loss2, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dY, gY[:, vocab], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dZ, gZ[:, queries[:, None], vocab[None, :]], rtol=1e-10, atol=1e-12)
    # everything outside the stored entries has exactly zero gradient (why they need not be stored)
    mask = torch.ones(M, dtype=torch.bool)
    mask[vocab] = False
    assert gY[:, mask].abs().max() == 0
    zmask = torch.ones(M, M, dtype=torch.bool)
    zmask[queries[:, None], vocab[None, :]] = False
    assert gZ[:, zmask].abs().max() == 0


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_batched_optimisers_match_torch_optim(name):
    g = torch.Generator().manual_seed(1)
    p0 = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    grads = [torch.randn(2, 4, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    lrs = torch.tensor([0.3, 1.7], dtype=torch.float64)
    mine = p0.clone()
    opt = optim.make(name, [lrs], momentum=0.9)
    for gr in grads:
        opt.step([mine], [gr])
    for r in range(2):
        ref = p0[r].clone().requires_grad_(True)
        t = (torch.optim.SGD([ref], lr=lrs[r].item(), momentum=0.9) if name == "sgd"
             else torch.optim.Adam([ref], lr=lrs[r].item()))
        for gr in grads:
            ref.grad = gr[r].clone()
            t.step()
        torch.testing.assert_close(mine[r], ref.detach(), rtol=1e-12, atol=1e-12)


def test_uniform_init_bound_and_shared_by_seed():
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    Y, Z = model.init_params(4, 25, "uniform", gens, torch.tensor([0, 1, 0, 1]), torch.float64, "cpu")
    assert Y.abs().max() <= 1 / 5 and Z.abs().max() <= 1 / 5 and Y.abs().max() > 0.15
    assert torch.equal(Y[0], Y[2]) and not torch.equal(Y[0], Y[1])


def test_a_run_does_not_depend_on_its_batch():
    """Same seed and learning rates give the same trajectory alone or batched with other cells —
    what makes --resume and any grouping of cells produce identical tables."""
    cl = build_classes(SyntheticSpec(num_last=1, num_next_per_last=2))
    opts = TrainOptions(steps=5, batch=16, T=20, init="uniform", dtype="float64")
    alone = train(cl, [2.0], [1.0], [1], opts, record=[5])
    batch = train(cl, [1.0, 2.0, 5.0, 2.0], [1.0, 1.0, 0.5, 1.0], [0, 1, 1, 0], opts, record=[5])
    np.testing.assert_allclose(batch.Z[-1, 1], alone.Z[-1, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(batch.loss[:, 1], alone.loss[:, 0], rtol=1e-12)


def test_divergence_is_recorded_and_other_runs_go_on():
    cl = build_classes(SyntheticSpec())
    opts = TrainOptions(steps=30, batch=8, T=16, momentum=0.9)
    traj = train(cl, [1.0, 1e30], [1.0, 1e30], [0, 0], opts, record=[30])
    assert traj.diverged[0] == -1 and traj.diverged[1] > 0
    assert np.isfinite(traj.Z[-1, 0]).all() and np.isnan(traj.Z[-1, 1]).all()
    assert np.isfinite(traj.loss[:, 0]).all()


def test_sgd_lowers_the_loss():
    cl = build_classes(SyntheticSpec())
    traj = train(cl, [1.0], [1.0], [0], TrainOptions(steps=30), record=[30])
    assert traj.loss[-1, 0] < 0.1 * traj.loss[0, 0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_records_are_snapshots_not_views_of_the_live_parameters(dtype):
    cl = build_classes(SyntheticSpec())
    traj = train(cl, [1.0], [1.0], [0], TrainOptions(steps=6, dtype=dtype), record=[0, 3, 6], record_y=True)
    assert np.all(traj.Z[0] == 0) and np.all(traj.Y[0] == 0)  # zero init, recorded before any step
    assert not np.allclose(traj.Z[1], traj.Z[2]) and not np.allclose(traj.Y[1], traj.Y[2])


@pytest.mark.parametrize("normalize", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("residual", [True, False], ids=["res", "no-res"])
def test_class_grouped_kernel_equals_the_dense_one(normalize, residual):
    """Grouping samples by class (grouped.py) changes only the arithmetic, not the numbers: whole
    trajectories agree in float64, on classes whose supports differ in size (per-query common tokens)."""
    cl = build_classes(SyntheticSpec(num_last=3, num_next_per_last=2, num_common=4, num_common_per_last=3,
                                     num_unique_per_next=5))
    runs = dict(eta_y=[1.0, 3.0, 0.5], eta_z=[1.0, 0.5, 2.0], run_seed=[0, 1, 0], record=[0, 10, 20], record_y=True)
    out = {k: train(cl, opts=TrainOptions(steps=20, batch=32, T=16, init="uniform", dtype="float64",
                                          residual=residual, normalize=normalize, kernel=k), **runs)
           for k in ("dense", "grouped")}
    np.testing.assert_allclose(out["grouped"].Z, out["dense"].Z, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["grouped"].Y, out["dense"].Y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["grouped"].loss, out["dense"].loss, rtol=1e-12)
    assert np.ptp(out["dense"].Z[-1]) > 0.1  # the runs moved, so the comparison means something


def test_class_layout_groups_every_sample_once():
    from dynamics.scan_snap import grouped
    from dynamics.scan_snap.data import Sampler
    from dynamics.scan_snap.train import input_vocab

    cl = build_classes(SyntheticSpec(num_last=3, num_next_per_last=2, num_common=4, num_common_per_last=3))
    vocab = input_vocab(cl, False)
    layout = grouped.ClassLayout(cl, vocab, cl.queries, False, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    draws = [Sampler(cl).draw(40, 12, g) for _ in range(2)]
    cls = torch.stack([d[0] for d in draws])
    col = torch.full((cl.M,), len(vocab), dtype=torch.long)
    col[torch.as_tensor(vocab)] = torch.arange(len(vocab))
    counts = model.context_counts(col[torch.stack([d[1] for d in draws])], len(vocab) + 1, torch.float64)
    grouped_counts, w = layout.arrange(cls, counts, torch.float64)
    assert w.sum((1, 2)).tolist() == [40.0, 40.0]
    assert torch.equal(w.sum(2), torch.nn.functional.one_hot(cls, cl.K).sum(1).double())
    real = grouped_counts[w.bool()]
    assert (real.sum(-1) == 11).all()  # every real row carries all T-1 keys of one sequence
    assert real.sum() == counts.sum()
