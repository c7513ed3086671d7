"""Population (T -> infinity) dynamics: the expected gradient against autograd, the decoder against
Eq. 45/Eq. 33, Lemma 3's modified decoder, batching, and the acceptance regime of Assumption 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.scan_snap import data
from dynamics.scan_snap import population as P
from dynamics.scan_snap import theory as th


def classes_with(num_common=1, p_common=1.0, unique=6, next_per_last=2, num_last=1):
    return data.build_classes(data.SyntheticSpec(num_last=num_last, num_next_per_last=next_per_last,
                                                 num_common=num_common, num_unique_per_next=unique,
                                                 common_unnormalized_prob=p_common))


def reference_loss(pop: P.Population, Y: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Population loss written from Eq. 5 directly: c_n = softmax_l(log P(l|n) + z_{psi(n) l})."""
    cl = pop.classes
    probs = torch.as_tensor(cl.probs[:, pop.vocab])
    rows = [int(np.flatnonzero(pop.queries == q)[0]) for q in cl.query]
    logits = Z[:, rows, :] + torch.log(probs).masked_fill(probs == 0, float("-inf"))
    c = torch.softmax(logits, -1)
    f = c / c.norm(dim=-1, keepdim=True)
    out = torch.einsum("rkv,rvo->rko", f, Y)
    labels = torch.as_tensor(cl.next)
    return -torch.log_softmax(out, -1)[:, torch.arange(cl.K), labels].mean(-1).sum()


def test_velocity_is_minus_eta_times_autograd_gradient():
    cl = classes_with(num_last=2, next_per_last=2, num_common=2)
    pop = P.Population(cl, [0.7, 2.0], [0.3, 0.05])
    gen = torch.Generator().manual_seed(0)
    Y = torch.randn(pop.R, pop.V, pop.M, generator=gen, dtype=torch.float64)
    Z = torch.randn(pop.R, pop.Q, pop.V, generator=gen, dtype=torch.float64)
    _, dy, dz = pop.velocity(Y.clone(), Z.clone())
    Yg, Zg = Y.clone().requires_grad_(), Z.clone().requires_grad_()
    reference_loss(pop, Yg, Zg).backward()
    assert torch.allclose(dy, -pop.lr_y * Yg.grad, rtol=1e-10, atol=1e-13)
    assert torch.allclose(dz, -pop.lr_z * Zg.grad, rtol=1e-10, atol=1e-13)


def test_frozen_attention_on_disjoint_classes_follows_eq45_and_eq33():
    """No common token: F^T F = I, so w_n = (M-1) h(t/K) zeta_n exactly (Lemma 5, Eq. 45)."""
    cl = classes_with(num_common=0, unique=8, next_per_last=3)
    K, M = cl.K, cl.M
    etas = [0.3, 2.0]
    pop = P.Population(cl, etas, [0.0, 0.0])
    t = np.array([0.0, 1, 5, 20, 100, 400])
    ode = P.integrate(pop, t, rtol=1e-11, atol=1e-13)
    gd = P.descend(pop, 400, t.astype(int))
    h_ode, h_gd = P.margin_h(ode, cl), P.margin_h(gd, cl)  # (S, R, K)
    for r, ey in enumerate(etas):
        theory = th.h(t / K, M, ey)
        assert np.allclose(h_ode[:, r, :], theory[:, None], rtol=1e-7, atol=1e-14)
        discrete = th.h_discrete(400, M, ey / K)[t.astype(int)]
        assert np.allclose(h_gd[:, r, :], discrete[:, None], rtol=1e-11, atol=1e-14)
    assert np.all(ode.Z == 0)  # with eta_Z = 0 the attention never moves


def test_lemma3_decoder_follows_eq45_with_overlapping_classes():
    """Lemma 3: the modified update makes W = F^T Y follow Eq. 8 row by row even when f_n overlap."""
    cl = classes_with(num_common=3, p_common=1.0)
    pop = P.Population(cl, [1.0], [0.0], decoder="lemma3")
    t = np.array([1.0, 10, 100, 1000])
    h = P.margin_h(P.integrate(pop, t, rtol=1e-11, atol=1e-13), cl)[:, 0, :]
    assert np.allclose(h, th.h(t / cl.K, cl.M, 1.0)[:, None], rtol=1e-6)
    with pytest.raises(ValueError, match="lemma3"):
        P.Population(cl, [1.0], [0.0], decoder="lemma3", residual=True)


def test_runs_in_a_batch_equal_runs_alone():
    cl = classes_with()
    rates = [(1.0, 0.1), (0.5, 0.5), (3.0, 0.03)]
    together = P.descend(P.Population(cl, [a for a, _ in rates], [b for _, b in rates]), 50, [0, 10, 50])
    for r, (a, b) in enumerate(rates):
        alone = P.descend(P.Population(cl, [a], [b]), 50, [0, 10, 50])
        assert np.allclose(together.Z[:, r], alone.Z[:, 0], rtol=1e-12, atol=1e-15)
        assert np.allclose(together.Y[:, r], alone.Y[:, 0], rtol=1e-12, atol=1e-15)


def test_gradient_descent_approaches_the_flow_for_small_steps():
    cl = classes_with()
    T = 40.0
    flow = P.integrate(P.Population(cl, [1.0], [0.5]), [T])
    errs = []
    for n in (40, 160):  # n steps of size 1/n per unit time: rates scaled by T/n
        gd = P.descend(P.Population(cl, [T / n], [0.5 * T / n]), n, [n])
        errs.append(np.abs(gd.Z[-1] - flow.Z[-1]).max())
    assert errs[1] < errs[0] / 3  # first-order convergence in the step size


def test_theorem2_signs_and_theorem3_ordering_in_population():
    cl = classes_with(num_common=1, p_common=1.0, unique=6)
    pop = P.Population(cl, [1.0], [0.1])
    tr = P.integrate(pop, [5.0, 50.0, 300.0])
    Zr = tr.full_Z(cl.M)[:, 0][:, cl.query, :]  # (S, K, M)
    assert np.all(Zr[:, cl.distinct] > 0)
    assert np.all(Zr[:, :, cl.common] < 0)
    for n in range(cl.K):
        d = np.flatnonzero(cl.distinct[n])
        order = np.argsort(cl.probs[n, d])
        assert np.all(np.diff(Zr[-1, n, d[order]]) > 0)  # higher P(l|n), larger logit


def test_acceptance_regime_eq45_within_5pct_and_invariant_within_10pct():
    """Assumption 1 (eta_Y/eta_Z = 10) on the theory experiment's data model (M = 104, one common token)."""
    cl = data.build_classes(data.SyntheticSpec(num_last=1, num_next_per_last=2, num_common=1,
                                               num_unique_per_next=50, common_unnormalized_prob=2.0))
    pop = P.Population(cl, [1.0], [0.1])
    t = np.array([1.0, 3, 10, 30, 100, 300])
    tr = P.integrate(pop, t)
    h = P.margin_h(tr, cl).mean(-1)[:, 0]
    assert np.max(np.abs(h / th.h(t / cl.K, cl.M, 1.0) - 1)) < 0.05
    spread = th.invariant_spread(tr.full_Z(cl.M)[:, 0][:, cl.query, :], cl.probs, cl.distinct)
    assert np.nanmax(spread) < 0.10


def test_bad_arguments():
    cl = classes_with()
    with pytest.raises(ValueError, match="one entry per run"):
        P.Population(cl, [1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="decoder"):
        P.Population(cl, [1.0], [0.1], decoder="other")
    with pytest.raises(ValueError, match="t_eval"):
        P.integrate(P.Population(cl, [1.0], [0.1]), [-1.0, 2.0])
