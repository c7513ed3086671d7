"""dynamics.stats against scipy.stats, and the verdict rules every claim uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from dynamics import claims as C
from dynamics import stats as S

X = np.array([0.31, 0.12, 0.45, 0.27, 0.38, 0.22])


def test_t_interval_matches_scipy():
    ci = st.ttest_1samp(X, 0).confidence_interval(0.95)
    e = S.t_interval(X)
    assert (e.low, e.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert e.n == 6 and e.value == pytest.approx(X.mean())


def test_paired_matches_scipy_ttest_rel():
    b = X[::-1] + 0.05
    ci = st.ttest_rel(X, b).confidence_interval(0.95)
    e = S.paired(X, b)
    assert (e.low, e.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert e.method == "paired-t"


def test_welch_matches_scipy():
    a, b = X, np.array([0.5, 0.61, 0.42, 0.7])
    ci = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    e = S.welch(a, b)
    assert (e.low, e.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (47, 120)])
def test_wilson_matches_scipy(k, n):
    ci = st.binomtest(k, n).proportion_ci(0.95, method="wilson")
    e = S.wilson(k, n)
    assert (e.low, e.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_bootstrap_is_seeded_and_matches_scipy_percentile():
    data = np.random.default_rng(1).normal(size=40)
    a = S.bootstrap(data, np.mean, n_boot=4000, seed=7)
    assert a == S.bootstrap(data, np.mean, n_boot=4000, seed=7)  # same seed, same interval
    ref = st.bootstrap((data,), np.mean, n_resamples=4000, method="percentile",
                       random_state=np.random.default_rng(3)).confidence_interval
    assert a.low == pytest.approx(ref.low, abs=0.05) and a.high == pytest.approx(ref.high, abs=0.05)


def test_one_seed_has_no_interval_and_is_inconclusive():
    e = S.t_interval([0.7])
    assert e.n == 1 and math.isnan(e.low) and math.isnan(e.high)
    assert S.verdict(e, S.Band.above(0)) == "INCONCLUSIVE"


def test_nonfinite_units_are_excluded_and_counted():
    e = S.t_interval([0.1, np.nan, 0.2, np.inf])
    assert e.n == 2 and e.excluded == 2


def test_verdicts():
    band = S.Band.between(0.8, 1.2)
    assert S.verdict(S.Estimate(1.0, 0.9, 1.1, 5, "t", 0.1), band) == "PASS"
    assert S.verdict(S.Estimate(1.5, 1.3, 1.7, 5, "t", 0.1), band) == "FAIL"
    assert S.verdict(S.Estimate(1.2, 1.1, 1.3, 5, "t", 0.1), band) == "INCONCLUSIVE"
    assert S.verdict(S.exact(1.0), band) == "PASS" and S.verdict(S.exact(2.0), band) == "FAIL"


def test_two_seed_claim_with_wide_interval_is_inconclusive_and_says_how_many_seeds():
    spec = C.ClaimSpec("gap", "reproduction", "the gap is positive", "paper", S.Band.above(0), ("seeds",))
    d = C.decide("exp", spec, S.t_interval([0.05, 0.4]))  # 1 df: t = 12.7
    assert d.verdict == "INCONCLUSIVE"
    assert d.seeds_needed >= 3 and "seeds would decide" in d.note


def test_mde_shrinks_like_root_n():
    small, large = S.t_interval(X), S.t_interval(np.tile(X, 4))
    assert large.mde() < small.mde() / 1.8


def test_fingerprint_changes_with_band_and_inputs():
    spec = C.ClaimSpec("a", "reproduction", "s", "r", S.Band.above(0), ("steps",))

    class Cfg:
        steps = 100

    fp = spec.fingerprint(Cfg)
    assert fp == C.ClaimSpec("a", "reproduction", "s", "r", S.Band.above(0), ("steps",)).fingerprint(Cfg)
    assert fp != C.ClaimSpec("a", "reproduction", "s", "r", S.Band.above(0.1), ("steps",)).fingerprint(Cfg)
    Cfg.steps = 200
    assert fp != spec.fingerprint(Cfg)


def test_absent_inputs_are_said():
    spec = C.ClaimSpec("a", "reproduction", "s", "r", S.Band.above(0))
    d = C.decide("exp", spec, None)
    assert d.verdict == "INCONCLUSIVE" and "not measured" in d.note


def test_t_from_summary_matches_t_interval():
    e = S.t_interval(X)
    f = S.t_from_summary(X.mean(), X.std(ddof=1) / np.sqrt(len(X)), len(X))
    assert (f.low, f.high, f.n) == pytest.approx((e.low, e.high, e.n))
    assert not S.t_from_summary(1.0, 0.1, 1).has_interval


def test_a_sampled_interval_on_the_edge_is_inconclusive_but_an_exact_value_is_in_the_band():
    zeros = S.t_interval([0.0, 0.0, 0.0])  # every seed exactly 0: no evidence of a positive sign
    assert S.verdict(zeros, S.Band.above(0.0)) == "INCONCLUSIVE"
    assert S.verdict(S.exact(1.0), S.Band.above(1.0)) == "PASS"
    assert S.verdict(S.t_interval([2.0, 2.0, 2.0]), S.Band.above(0.0)) == "PASS"


def test_sign_agreement_counts_only_cells_whose_interval_excludes_zero():
    # cell 0: resolved, agrees; 1: resolved, disagrees; 2: interval covers 0; 3: a single value
    half = st.t.ppf(0.975, 3) * 1.0 / 2.0
    mean = [half + 0.01, -(half + 0.01), half - 0.01, 5.0]
    est, agree, resolved = S.sign_agreement(mean, [1.0, 1.0, 1.0, np.nan], [4, 4, 4, 1], [1.0, 2.0, 1.0, 1.0])
    assert (agree, resolved) == (1, 2)
    assert est == S.wilson(1, 2)


def test_sign_resolved_is_sign_agreements_rule_per_cell():
    half = st.t.ppf(0.975, 3) * 1.0 / 2.0
    mean = [half + 0.01, -(half + 0.01), half - 0.01, 5.0]
    res = S.sign_resolved(mean, [1.0, 1.0, 1.0, np.nan], [4, 4, 4, 1])
    assert res.tolist() == [True, True, False, False]
