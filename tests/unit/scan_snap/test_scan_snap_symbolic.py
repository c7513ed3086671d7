"""Each sympy derivation in dynamics.scan_snap.symbolic reduces to zero."""

from __future__ import annotations

import pytest

from dynamics.scan_snap import symbolic


@pytest.mark.parametrize("check", symbolic.CHECKS, ids=lambda c: c.__name__)
def test_symbolic_check_passes(check):
    result = check()
    assert result.ok, f"{result.name}: residual {result.detail}"
    assert result.statement


def test_a_wrong_closed_form_is_caught():
    """The checks can fail: a common-token law with the wrong exponent leaves a non-zero residual."""
    import sympy as sp

    t, C0 = symbolic.t, symbolic.C0
    G = sp.Function("Gamma")
    z = -sp.log(1 + 2 * G(t) / C0) / 2  # wrong constants
    residual = sp.simplify(sp.diff(z, t) + sp.diff(G(t), t) * sp.exp(4 * z) / C0)
    assert residual != 0


def test_run_all_names_are_unique():
    names = [c.name for c in symbolic.run_all()]
    assert len(names) == len(set(names)) == len(symbolic.CHECKS)
