"""JoMA block: Thm. 1's invariant along simulated trajectories, the MLP-only reduction, the data, and the
turning-step analysis (the consistency claims of joma-invariant have their fast twins here)."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.joma import invariant as inv
from dynamics.joma import model, theory

SMALL = model.BlockSpec(num_distinct=4, num_common=3, num_classes=4, hidden=5, attention="exp", activation="relu")


def _rel_error(spec, eta_z, eta_v, steps, optimizer="sgd", seeds=(0, 1)):
    tr = model.train(spec, [eta_z] * len(seeds), [eta_v] * len(seeds), list(seeds), steps, [0, steps],
                     optimizer=optimizer)
    ratio = np.full(len(seeds), eta_z / eta_v)
    z_hat = inv.predicted_logits(spec.attention, tr.z[0], tr.V[0], tr.V, tr.b_bar, ratio)
    return inv.relative_error(tr.z, z_hat, tr.z[0], centre=spec.attention == "softmax")[-1]


def test_class_distributions_are_normalised_with_a_bump():
    x = model.class_distributions(model.BlockSpec(), seed=3)
    assert x.shape == (20, 20) and np.allclose(x.sum(1), 1)
    # class c's distinct-token bump peaks at token c/C * 10
    assert np.argmax(x[10, :10]) == 5


def test_exp_invariant_holds_to_first_order_in_eta():
    """Claims exp-exact and first-order-error: the exp-attention invariant is exact in gradient flow, the
    remaining error is the O(eta) Euler term (halving eta at fixed flow time halves it)."""
    small = _rel_error(SMALL, 0.01, 0.01, 400)
    double = _rel_error(SMALL, 0.02, 0.02, 200)
    assert np.all(small < 1e-2)
    assert np.all((double / small > 1.5) & (double / small < 2.5))


def test_exp_invariant_with_unequal_rates():
    """Claim exp-rate-ratio: the factor eta_z / eta_v of our derivation."""
    assert np.all(_rel_error(SMALL, 0.01, 0.02, 200) < 1e-2)


def test_adam_breaks_the_invariant():
    """Claim adam-breaks: per-coordinate rescaling breaks the identity."""
    assert np.all(_rel_error(SMALL, 0.01, 0.01, 400, optimizer="adam") > 0.1)


def test_large_steps_degrade_in_proportion():
    """Claim large-steps-break: eta = 0.2 vs 0.01 at equal flow time gives >10x the error."""
    small = _rel_error(SMALL, 0.01, 0.01, 400)
    large = _rel_error(SMALL, 0.2, 0.2, 20)
    assert np.all(large / small > 10)


def test_linear_attention_invariant():
    """Thm. 1, linear attention: z^2 - sum_k v_k^2 is conserved (up to O(eta))."""
    spec = model.BlockSpec(num_distinct=4, num_common=3, num_classes=4, hidden=5, attention="linear",
                           activation="relu", init_scale=0.5)
    assert np.all(_rel_error(spec, 0.005, 0.005, 200) < 2e-2)


def test_integrating_out_exp_attention_reproduces_the_joint_dynamics():
    """JoMA's MLP-only dynamics equal the joint ones when the invariant is exact (exp attention)."""
    joint = model.train(SMALL, [0.01], [0.01], [0], 300, [300])
    reduced = model.train(SMALL, [0.01], [0.01], [0], 300, [300], integrate_attention=True)
    assert np.allclose(joint.V, reduced.V, rtol=0, atol=1e-4 * np.abs(joint.V).max())
    assert np.allclose(joint.z, reduced.z, atol=1e-3 * np.abs(joint.z - 0).max() + 1e-6)


def test_softmax_invariant_centres_and_correlates():
    spec = model.BlockSpec(num_distinct=4, num_common=3, num_classes=4, hidden=4, attention="softmax",
                           activation="linear", readout="none")
    tr = model.train(spec, [0.1], [0.1], [0], 300, [0, 300])
    z_hat = inv.predicted_logits("softmax", tr.z[0], tr.V[0], tr.V, tr.b_bar, np.ones(1))
    assert inv.normalized_correlation(z_hat, tr.z)[-1, 0] > 0.9


def test_turning_step_on_a_v_shaped_curve():
    steps = np.arange(0, 101)
    H = np.stack([np.abs(steps - 40) / 40.0, 1 - steps / 100.0], axis=1)  # turns at 40; never turns
    t = theory.turning_step(steps, H, delta=0.05)
    assert t[0] == 40 and np.isnan(t[1])
    r = theory.rise_step(steps, H, delta=0.05)
    assert r[0] == 43 and np.isnan(r[1])  # |43 - 40| / 40 = 0.075 > 0.05 first at step 43
    assert theory.rebound(H)[1] == 0 and theory.drop(H)[0] == pytest.approx(1.0)


def test_fig4_dynamics_sparse_then_dense_and_linear_only_sparse():
    mu = np.sort(np.random.default_rng(0).uniform(1, 4, (2, 10)), axis=1)
    _, H = theory.reduced_dynamics(mu, 0.05, 0.02, 3.0, 3000)
    assert np.all(theory.rebound(H) > 0.05) and np.all(theory.drop(H) > 0.05)
    _, Hl = theory.reduced_dynamics(mu, 0.05, 0.02, 3.0, 3000, linear=True)
    assert np.all(np.diff(Hl, axis=0) <= 1e-12)


def test_bad_block_spec_is_a_user_error():
    from dynamics.errors import UserError

    with pytest.raises(UserError):
        model.BlockSpec(readout="none", hidden=3, num_classes=4)
    with pytest.raises(UserError):
        model.BlockSpec(activation="tanh")
