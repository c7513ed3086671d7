"""The one pure-attention simulator: float64, centred and high-precision evaluations agree, and the
per-layer exponents are Dong et al.'s (consistency checks of the code, not evidence about the paper)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynamics import rank_collapse as rc


def test_centred_evaluation_equals_the_direct_one_while_float64_resolves_it():
    rng = np.random.default_rng(0)
    net = rc.draw(3, 16, 2, "san", rng)
    X0 = rng.standard_normal((6, 16))
    centred = rc.log_residual_centred(X0, net)
    X = X0
    for l in range(net.depth + 1):
        assert centred[l] == pytest.approx(np.log(rc.residual_ratio(X)), rel=1e-9)
        if l < net.depth:
            X = rc.layer(X, net, l)


def test_high_precision_equals_float64_on_the_first_layer_and_follows_the_cube():
    rng = np.random.default_rng(1)
    net = rc.draw(4, 6, 1, "san", rng)
    X0 = np.broadcast_to(rng.standard_normal(6), (5, 6)) + 0.1 * rng.standard_normal((5, 6))
    mp = rc.forward(X0, net, precision="mp", digits=120)
    f64 = rc.forward(X0, net)
    assert mp[:2] == pytest.approx(f64[:2], rel=1e-8)
    slope = np.polyfit(mp[1:-1], mp[2:], 1)[0]  # ln r_{l+1} against ln r_l
    assert slope == pytest.approx(3.0, abs=0.3)


@pytest.mark.parametrize("variant,expected", [("san", 3.0), ("san+mlp", 3.0), ("san+skip", 1.0),
                                              ("san+skip+mlp", 1.0)])
def test_per_layer_exponent(variant, expected):
    eps = np.logspace(-4, -2, 5)
    y = rc.residual_scaling(eps, variant, 8, 16, np.random.default_rng(2), trials=2)
    assert rc.loglog_slope(eps, y) == pytest.approx(expected, abs=0.15)


def test_multi_head_decrement_ratios_are_three():
    rng = np.random.default_rng(3)
    net = rc.draw(8, 32, 4, "san", rng)
    ratios = rc.decrement_ratios(rc.log_residual_centred(rng.standard_normal((4, 10, 32)), net))
    assert np.nanmedian(ratios) == pytest.approx(3.0, abs=0.1)


def test_collapsed_input_has_no_query_key_gradient():
    collapsed, generic = rc.qk_gradient_ratio(8, 16, np.random.default_rng(4))
    assert collapsed < 1e-10 < 1e-3 < generic


def test_bad_arguments():
    with pytest.raises(ValueError):
        rc.draw(2, 10, 3)
    with pytest.raises(ValueError):
        rc.draw(2, 8, 1, "san+dropout")


def test_pure_attention_centred_matches_direct_and_decrements_grow_threefold():
    """Dong et al. 2021 with heads: the centred evaluation equals the direct float64 pass where the latter
    is resolved, goes far below its round-off, and its log-decrements grow by about 3 per layer."""
    rng = np.random.default_rng(0)
    net = rc.draw(8, 32, 4, "san", rng)
    X0 = rng.standard_normal((6, 16, 32))
    centred = rc.log_residual_centred(X0, net)
    direct = rc.log_residual_direct(X0, net)
    resolved = direct > np.log(1e-10)
    np.testing.assert_allclose(centred[resolved], direct[resolved], rtol=1e-6, atol=1e-8)
    assert np.nanmin(centred) < np.log(1e-40) < np.min(direct)
    ratios = rc.decrement_ratios(centred)
    assert np.isfinite(ratios).sum() >= 6
    assert 2.0 <= np.nanmedian(ratios) <= 4.0


def test_experiment_decides_every_claim_and_the_identities_hold(cli, tmp_path):
    sets = ["trials=2", "collapse_depth=4", "exact_depth=3", "digits=120", "noci_trials=50", "noci_depths=2,4",
            "san_depths=4", "san_widths=16", "san_networks=2", "san_inputs=2", "san_tokens=8"]
    code, out, err = cli("run", "rank-collapse", "--quick", *sum((["--set", s] for s in sets), []),
                         "--out", str(tmp_path))
    assert code == 0, err
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    from dynamics import experiments

    assert set(claims.index) == {c.id for c in experiments.get("rank-collapse").claim_specs}
    for cid in ("dong-cubic-per-layer", "dong-skip-linear", "dong-mlp-keeps-cubic", "noci-qk-gradients-vanish"):
        assert claims.loc[cid, "verdict"] == "PASS", cid
    san = pd.read_csv(tmp_path / "san.csv")
    assert len(san) == 2 * 2 * 5 and set(san.width) == {16}
    assert (tmp_path / "dong_collapse.png").exists() and (tmp_path / "pure_attention_rank_collapse.png").exists()
