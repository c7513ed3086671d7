"""Smoke tests of the issue-19 Scan & Snap experiments on tiny grids: values, not just files.

They drive the sweep runner directly (plan + execute), so they check the experiments and their
pre-registered claims independently of the CLI's claim printing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynamics import experiments
from dynamics.sweep.runner import execute, plan


def _run(name, tmp_path, overrides, grid):
    p = plan(experiments.get(name), overrides, grid, quick=True)
    return execute(p, tmp_path, argv=["test"])


def test_finite_t_tiny(tmp_path):
    out = _run("scan-snap-finite-t", tmp_path, {"seeds": 2, "steps": 60, "batch": 16}, {"T": (32, 256, 2048)})
    table = pd.read_csv(out / "table.csv")
    geo = table[table.role == "distinct"]
    assert len(geo) == 10 and np.isfinite(geo.T_star_pred).any()
    # rarer tokens need longer windows: predicted boundaries fall with P where they exist
    star = geo.sort_values("p").T_star_pred.dropna().to_numpy()
    assert np.all(np.diff(star) <= 0)
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.claim) == ["ft-distinct-boundary-geometric", "ft-distinct-boundary-theory",
                                  "ft-common-boundary-theory", "ft-sign-agreement"]
    assert set(claims.verdict) <= {"PASS", "FAIL", "INCONCLUSIVE"}
    assert claims.set_index("claim").loc["ft-distinct-boundary-theory", "method"] == "absent"


def test_t0_law_tiny(tmp_path):
    out = _run("scan-snap-t0-law", tmp_path, {"seeds": 3, "records": 16, "batch": 4, "T": 16, "eta_y_floor": 1.6,
                                             "horizon": 2.5},
               {"num_last": (1, 2), "M": (48, 120), "eta_y": (1.6, 3.2)})
    fits = pd.read_csv(out / "fits.csv").set_index("exponent")
    assert list(fits.index) == ["b_K", "b_lnM", "b_eta"]
    assert fits.loc["b_eta", "exact_gamma_peak"] == pytest_approx(-1.0)
    assert 0.5 < fits.loc["b_lnM", "exact_gamma_peak"] < 1.0  # ln M is the large-M limit of a slower law
    assert fits.loc["b_eta", "measured"] < 0  # larger eta_Y, earlier transition
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 8 and (table.M >= 48).all()


def test_fig5_and_fig11_12_tiny(tmp_path):
    out = _run("scan-snap-fig5", tmp_path / "f5", {"seeds": 2, "steps": 12}, {"eta_z": (0.1, 1.0)})
    fa = pd.read_csv(out / "final_attention.csv")
    assert np.allclose(fa.groupby(["eta_z", "seed_index", "class"]).share.sum(), 1.0)
    table = pd.read_csv(out / "table.csv")
    assert (table.optimizer == "adam").all()
    assert (table.common_mass_final < table.common_mass_init).all()  # Adam drops the common tokens too
    out = _run("scan-snap-fig11-12", tmp_path / "f11", {"seeds": 2, "steps": 10},
               {"num_last": (1,), "eta_z": (0.5, 3.0), "ratio": (2.0, 10.0)})
    curves = pd.read_csv(out / "curves.csv")
    # recall is a survival curve in the threshold: non-increasing, in [0, 1]
    for _, g in curves.groupby(["eta_z", "ratio"]):
        r = g.sort_values("kappa")["mean"].to_numpy()
        assert np.all(np.diff(r) <= 1e-12) and r.min() >= 0 and r.max() <= 1
    assert (out / "fig11_recall.png").stat().st_size > 0 and (out / "fig12_recall.png").stat().st_size > 0


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-9)


def test_wikitext_resampled_tiny(tmp_path, monkeypatch, tiny_wikitext):
    """On a tiny WikiText-like corpus (query "q", next "A"/"B", distinct a*/b*, common c*): roles come out
    as built, and the measured signs agree with the O(1/T) flow."""
    monkeypatch.setenv("DYNAMICS_CACHE", str(tmp_path / "cache"))
    data = tiny_wikitext(tmp_path / "wt")
    out = _run("scan-snap-wikitext-resampled", tmp_path / "res",
               {"data_dir": str(data), "cooc_T": 4, "min_support": 10, "steps": 30, "batch": 16, "seeds": 2,
                "eta_z": 1.0}, {"query": (0,), "T": (32, 512)})
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells.role) == {"distinct", "common"}
    table = pd.read_csv(out / "table.csv")
    assert table.query_token.eq("q").all() and len(table) == 2
    claims = pd.read_csv(out / "claims.csv")
    assert claims.claim.tolist() == ["wt-resampled-sign-agreement"]


def test_wikitext_windows_tiny(tmp_path, monkeypatch, tiny_wikitext):
    """Real windows and resampled contexts on the same tiny classes: both arms cover the same cells, the
    per-T table pairs them, and the three pre-registered claims are decided."""
    monkeypatch.setenv("DYNAMICS_CACHE", str(tmp_path / "cache"))
    data = tiny_wikitext(tmp_path / "wt")
    out = _run("scan-snap-wikitext-windows", tmp_path / "win",
               {"data_dir": str(data), "role_T": 4, "min_support": 10, "steps": 30, "batch": 16, "seeds": 2,
                "eta_z": 1.0}, {"query": (0,), "T": (4, 32)})
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells.arm) == {"resampled", "windows"}
    # windows of 3 context tokens stay in their sentence: distinct tokens; at T = 32 every token is common
    assert set(cells[cells["T"] == 4].role) == {"distinct", "common"} and set(cells[cells["T"] == 32].role) == {"common"}
    per_arm = cells.groupby(["T", "arm"]).column.apply(frozenset).unstack()
    assert (per_arm.resampled == per_arm.windows).all()
    table = pd.read_csv(out / "table.csv")
    assert table["T"].tolist() == [4, 32] and (table.both_resolved <= table.windows_resolved).all()
    assert set(pd.read_csv(out / "fractions.csv").source) == {"flow", "population", "resampled", "windows"}
    claims = pd.read_csv(out / "claims.csv")
    assert claims.claim.tolist() == ["wt-windows-sign-agreement", "wt-windows-vs-resampled", "wt-windows-leak-excess"]
    assert claims.kind.tolist() == ["reproduction", "reproduction", "exploratory"]
    assert (out / "wikitext_windows_signs.png").stat().st_size > 0
