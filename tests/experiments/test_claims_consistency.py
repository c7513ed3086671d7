"""Every consistency claim is also a fast test: the identity, construction or second solver it checks
on the saved results is checked here (or in the test named in CONSISTENCY_TESTS) on a small config,
so a broken code path fails the suite, not only ``dynamics verify``.

``test_every_consistency_claim_has_a_test`` keeps the map complete: a new consistency claim without
a test fails it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dynamics import experiments
from dynamics.depth_width import theory
from dynamics.depth_width.modular import P1
from dynamics.depth_width.seprank import RankSpec, grid_rank
from dynamics.detr import analytic

# claim id -> "tests/file.py::test_name" that checks the same identity or construction
CONSISTENCY_TESTS = {
    ("joma-invariant", "exp-exact"): "tests/unit/joma/test_joma_model.py::test_exp_invariant_holds_to_first_order_in_eta",
    ("joma-invariant", "exp-rate-ratio"): "tests/unit/joma/test_joma_model.py::test_exp_invariant_with_unequal_rates",
    ("joma-invariant", "first-order-error"): "tests/unit/joma/test_joma_model.py::test_exp_invariant_holds_to_first_order_in_eta",
    ("joma-invariant", "large-steps-break"): "tests/unit/joma/test_joma_model.py::test_large_steps_degrade_in_proportion",
    ("joma-invariant", "adam-breaks"): "tests/unit/joma/test_joma_model.py::test_adam_breaks_the_invariant",
    ("depth-width-rank", "ranks-agree-primes-seeds"):
        "tests/unit/depth_width/test_depth_width.py::test_rank_agrees_across_primes_and_seeds_and_template_growth",
    ("depth-width-rank", "rank-stable-when-templates-grow"):
        "tests/unit/depth_width/test_depth_width.py::test_rank_agrees_across_primes_and_seeds_and_template_growth",
    ("depth-width-rank", "n2-closed-form"): "tests/unit/depth_width/test_depth_width_theory.py::test_n2_closed_form_matches_exact_rank",
    ("depth-width-rank", "below-degree-bound"): "tests/experiments/test_claims_consistency.py::test_exact_rank_below_degree_bound",
    ("depth-width-trained", "ts-linear-above-rank-floor"):
        "tests/unit/depth_width/test_depth_width_trained.py::test_trained_linear_students_stay_above_their_rank_floor",
    ("depth-width-theory", "fit-1T-depth"): "tests/unit/depth_width/test_depth_width_theory.py::test_levine_fit_numbers",
    ("depth-width-theory", "fit-1T-width"): "tests/unit/depth_width/test_depth_width_theory.py::test_levine_fit_numbers",
    ("depth-width-theory", "gpt3-175B-too-deep"): "tests/unit/depth_width/test_depth_width_theory.py::test_levine_fit_numbers",
    ("depth-width-theory", "fit-bigscience-70-layers"): "tests/unit/depth_width/test_depth_width_theory.py::test_levine_fit_numbers",
    ("rank-collapse", "dong-cubic-per-layer"): "tests/unit/test_rank_collapse.py::test_per_layer_exponent",
    ("rank-collapse", "dong-skip-linear"): "tests/unit/test_rank_collapse.py::test_per_layer_exponent",
    ("rank-collapse", "dong-mlp-keeps-cubic"): "tests/unit/test_rank_collapse.py::test_per_layer_exponent",
    ("rank-collapse", "dong-doubly-exponential"):
        "tests/unit/test_rank_collapse.py::test_high_precision_equals_float64_on_the_first_layer_and_follows_the_cube",
    ("rank-collapse", "pure-attention-doubly-exponential"):
        "tests/unit/test_rank_collapse.py::test_pure_attention_centred_matches_direct_and_decrements_grow_threefold",
    **{("rank-collapse", f"noci-growth-L{L}-alpha-{a}"): "tests/unit/depth_width/test_depth_width_theory.py::"
       "test_uniform_attention_growth_law" for L in (4, 16) for a in ("1", "invsqrtL")},
    ("rank-collapse", "noci-qk-gradients-vanish"):
        "tests/unit/test_rank_collapse.py::test_collapsed_input_has_no_query_key_gradient",
    ("dacdetr-gather", "plane-ca-gathers"): "tests/experiments/test_claims_consistency.py::test_plane_o_decoder_signs",
    ("dacdetr-gather", "plane-sa-rep-disperses"): "tests/experiments/test_claims_consistency.py::test_plane_o_decoder_signs",
    ("dacdetr-gather", "plane-sa-avg-no-disperse"): "tests/experiments/test_claims_consistency.py::test_plane_o_decoder_signs",
    ("dacdetr-gather", "plane-c-more-than-o"): "tests/unit/detr/test_detr_model.py::test_plane_ca_only_ends_above_o_type",
    ("dacdetr-gather", "plane-ca-hard-limit"): "tests/unit/detr/test_detr_model.py::test_plane_hard_limit_matches_small_temperature",
    ("dacdetr-gather", "plane-sweep-signs"): "tests/experiments/test_claims_consistency.py::test_plane_sweep_signs",
    ("dacdetr-gather", "detr-sa-init-no-disperse"):
        "tests/experiments/test_detr_experiment.py::test_smoke_run_writes_tables_figures_and_claims",
    ("scan-snap-theory", "eq122-common-logit-ode-lemma3"): "tests/unit/scan_snap/test_scan_snap_theory.py::test_theory_experiment_smoke",
    ("scan-snap-closed-forms", "eq45-lambert-vs-root"): "tests/unit/scan_snap/test_scan_snap_theory.py::test_h_lambert_matches_newton_root",
    ("scan-snap-closed-forms", "fig9-b-t0"): "tests/unit/scan_snap/test_scan_snap_theory.py::test_B_at_t0_depends_on_nu_only",
    ("scan-snap-closed-forms", "symbolic-checks"): "tests/unit/scan_snap/test_scan_snap_symbolic.py::test_symbolic_check_passes",
    # the count difference at init is the consequence of BN's exact removal of the uniform component;
    # a tiny init sweep has no similar blocks to remove, so the identity itself is the test
    ("deepvit-collapse", "reattention-fewer-similar-blocks-at-init"):
        "tests/unit/collapse/test_collapse_model.py::test_batchnorm_removes_uniform_component_exactly",
    ("deepvit-collapse", "reattention-bn-removes-uniform-component"):
        "tests/unit/collapse/test_collapse_model.py::test_batchnorm_removes_uniform_component_exactly",
}


def test_every_consistency_claim_has_a_test():
    declared = {(name, spec.id) for name in experiments.names()
                for spec in experiments.get(name).claim_specs if spec.kind == "consistency"}
    assert declared == set(CONSISTENCY_TESTS), (
        f"without a test: {sorted(declared - set(CONSISTENCY_TESTS))}; "
        f"no longer consistency claims: {sorted(set(CONSISTENCY_TESTS) - declared)}")
    root = Path(__file__).resolve().parents[2]
    for target in set(CONSISTENCY_TESTS.values()):
        path, name = target.split("::")
        assert f"\ndef {name}(" in (root / path).read_text(), target


@pytest.mark.parametrize("d_x,depth,positions", [(1, 2, 2), (2, 1, 4), (2, 2, 2), (3, 1, 2)])
def test_exact_rank_below_degree_bound(d_x, depth, positions):
    """depth-width-rank/below-degree-bound: f is a polynomial of degree 3^L, so its separation rank is at
    most the number of degree-<=3^L monomials in one side's variables."""
    res = grid_rank(RankSpec(d_x, depth, 1, positions, False), P1, 0)
    assert res.converged
    assert res.rank <= theory.degree_bound(d_x, depth, (positions + 1) // 2)


def _deltas(kind: str, spec: analytic.PlaneSpec, seed: int = 0):
    """Per sublayer: (point, mean change, s.e.) of the queries-per-object count over trials."""
    points, counts = analytic.run(spec, kind, np.random.default_rng(seed))
    out = []
    for i in range(1, len(points)):
        d = counts[i] - counts[i - 1]
        out.append((points[i], float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))))
    return out


def test_plane_o_decoder_signs():
    """plane-ca-gathers / plane-sa-rep-disperses / plane-sa-avg-no-disperse: attractive CA gathers,
    repulsive SA disperses queries a CA has gathered (layers >= 1), averaging SA never disperses."""
    spec = analytic.PlaneSpec(trials=40, layers=3)
    rep = _deltas("o-rep", spec)
    assert all(m - 2 * se > 0 for (layer, p), m, se in rep if p == "ca")
    assert all(m + 2 * se < 0 for (layer, p), m, se in rep if p == "sa" and layer >= 1)
    avg = _deltas("o-avg", spec)
    assert all(m + 2 * se >= 0 for (layer, p), m, se in avg if p == "sa")


@pytest.mark.parametrize("over", [{"eta": 0.25}, {"queries": 50}, {"objects": 2}])
def test_plane_sweep_signs(over):
    """plane-sweep-signs: across settings, the O-type decoder's CA sublayers gather and its SA sublayers
    disperse in total."""
    spec = analytic.PlaneSpec(trials=30, layers=3, **over)
    d = _deltas("o-rep", spec)
    assert sum(m for (_, p), m, _ in d if p == "ca") > 0
    assert sum(m for (_, p), m, _ in d if p == "sa") < 0


def test_claim_inputs_are_config_keys():
    """A pre-registered input that is not a config key would silently drop out of the fingerprint."""
    from dynamics.config import resolve

    for name in experiments.names():
        exp = experiments.get(name)
        for spec in exp.claim_specs:
            for key in spec.inputs:  # qualified, or a bare name unique in the config (data.num_last, num_last)
                assert not resolve(exp.config, key).spec, (name, spec.id, key)
