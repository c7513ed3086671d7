"""Symbolic (sympy) checks of the Scan and Snap closed forms used in :mod:`.theory`.

Each check builds the expressions from the paper's definitions, differentiates or integrates them,
and asks sympy whether the difference simplifies to zero (or a limit vanishes).  Each returns a
:class:`Check`; :func:`run_all` runs every one.  Equation numbers: Tian et al. 2023, arXiv 2305.16380 v4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sympy as sp

t, s, M, K, eta, eta_y, eta_z, C0 = sp.symbols("t s M K eta eta_Y eta_Z C_0", positive=True)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    statement: str
    ok: bool
    detail: str  # the residual sympy reduced (should read 0)


def _zero(expr) -> bool:
    return sp.simplify(expr) == 0


def implicit_derivative() -> Check:
    """Eq. 45 differentiated implicitly gives Eq. 44: F(h, t) = e^{M h} + (M-1) M h - M eta t - 1 = 0
    => dh/dt = -F_t / F_h = eta / ((M-1) + e^{M h})."""
    hh = sp.Symbol("h", positive=True)
    F = sp.exp(M * hh) + (M - 1) * M * hh - M * eta * t - 1
    dh = -sp.diff(F, t) / sp.diff(F, hh)
    res = sp.simplify(dh - eta / ((M - 1) + sp.exp(M * hh)))
    return Check("eq45-implicit-derivative", "d/dt of Eq. 45's implicit solution is Eq. 44, "
                 "dh/dt = eta_Y / ((M-1) + e^{M h})", res == 0, str(res))


def lambert_solution() -> Check:
    """The Lambert-W closed form x = A/(M-1) - W(z), z = e^{A/(M-1)}/(M-1), A = M eta t + 1, solves
    e^x + (M-1) x = A (Eq. 45 with x = M h): W's defining identity W e^W = z gives e^{-W} = W/z."""
    A = M * eta * t + 1
    z = sp.exp(A / (M - 1)) / (M - 1)
    w = sp.Symbol("W", positive=True)  # stands for LambertW(z)
    x = A / (M - 1) - w
    residual = sp.expand(sp.exp(x)).subs(sp.exp(-w), w / z) + (M - 1) * x - A
    res = sp.simplify(residual)
    return Check("eq45-lambert-w", "h = [A/(M-1) - W(e^{A/(M-1)}/(M-1))]/M with A = M eta_Y t + 1 satisfies "
                 "Eq. 45", res == 0, str(res))


def early_regime() -> Check:
    """Lemma 9, first regime: h = eta t / M solves Eq. 45 up to O(t^2) as t -> 0."""
    hh = eta * t / M
    residual = sp.exp(M * hh) + (M - 1) * M * hh - M * eta * t - 1
    lim = sp.limit(residual / t, t, 0)
    return Check("h-early-regime", "h ~ eta_Y t / M for small t: Eq. 45's residual is o(t)", lim == 0, str(lim))


def late_regime() -> Check:
    """Lemma 9, second regime: h = ln(M eta t)/M solves Eq. 45 with relative residual -> 0 as t -> oo."""
    hh = sp.log(M * eta * t) / M
    residual = sp.exp(M * hh) + (M - 1) * M * hh - M * eta * t - 1
    lim = sp.limit(sp.expand_log(residual, force=True) / (M * eta * t), t, sp.oo)
    return Check("h-late-regime", "h ~ ln(M eta_Y t)/M for large t: Eq. 45's residual is o(M eta_Y t)",
                 lim == 0, str(lim))


def gamma_integral() -> Check:
    """Eqs. 125-128: with gamma(t) = (M-1)^2 h(t/K) / ((M-1) + e^{M h(t/K)}) and Eq. 44 (chain rule:
    d h(t/K)/dt = eta_Y / (K ((M-1) + e^{M h}))), d/dt [eta_Z K (M-1)^2 h(t/K)^2 / (2 eta_Y)] = eta_Z gamma(t)."""
    hk = sp.Symbol("h", positive=True)  # the value h(t/K)
    dh_dt = eta_y / (K * ((M - 1) + sp.exp(M * hk)))
    Gamma = eta_z * K * (M - 1) ** 2 * hk ** 2 / (2 * eta_y)
    gamma = (M - 1) ** 2 * hk / ((M - 1) + sp.exp(M * hk))
    res = sp.simplify(sp.diff(Gamma, hk) * dh_dt - eta_z * gamma)
    return Check("gamma-integral", "Gamma(t) = eta_Z K (M-1)^2 h(t/K)^2/(2 eta_Y) is eta_Z times the integral "
                 "of gamma (Eq. 128)", res == 0, str(res))


def common_token_law() -> Check:
    """Eqs. 118-122: z(t) = -1/4 ln(1 + 4 Gamma(t)/C_0) solves dz/dt = -C_0^{-1} Gamma'(t) e^{4 z} for any
    Gamma with Gamma(0) = 0 (Gamma' = eta_Z gamma), and z(0) = 0."""
    G = sp.Function("Gamma")
    z = -sp.log(1 + 4 * G(t) / C0) / 4
    res = sp.simplify(sp.diff(z, t) + sp.diff(G(t), t) * sp.exp(4 * z) / C0)
    init = sp.simplify(z.subs(t, 0).subs(G(0), 0))
    return Check("common-token-law", "z(t) = -1/4 ln(1 + 4 Gamma(t)/C_0) integrates dz/dt = -C_0^{-1} eta_Z "
                 "gamma e^{4z} from z(0) = 0", res == 0 and init == 0, f"{res}; z(0) = {init}")


def b_integral() -> Check:
    """Eq. 124: with xi_n = C_0^{-1} gamma e^{4 z} and z from the common-token law,
    d/dt [1/4 ln(C_0 + 4 Gamma)] = eta_Z xi_n = Gamma'/(C_0 + 4 Gamma)."""
    G = sp.Function("Gamma")
    z = -sp.log(1 + 4 * G(t) / C0) / 4
    xi_times_eta = sp.diff(G(t), t) * sp.exp(4 * z) / C0  # eta_Z gamma = Gamma'
    Bn = sp.log(C0 + 4 * G(t)) / 4
    res = sp.simplify(sp.diff(Bn, t) - xi_times_eta)
    return Check("b-integral", "B_n(t) = 1/4 ln(C_0 + 4 Gamma(t)) has dB_n/dt = eta_Z xi_n (Eq. 124)",
                 res == 0, str(res))


def two_regime_b() -> Check:
    """Eq. 14 from Eq. 129: substituting Lemma 9's h(t/K) = eta_Y t/(M K) and h(t/K) = ln(M eta_Y t/K)/M
    into 4 Gamma = 2 (eta_Z/eta_Y) K (M-1)^2 h^2 gives the two lines of Eq. 14 exactly."""
    four_gamma = lambda hk: 2 * (eta_z / eta_y) * K * (M - 1) ** 2 * hk ** 2  # noqa: E731
    early = four_gamma(eta_y * t / (M * K)) - 2 * (M - 1) ** 2 / (K * M ** 2) * eta_y * eta_z * t ** 2
    late = four_gamma(sp.log(M * eta_y * t / K) / M) - 2 * K * (M - 1) ** 2 / M ** 2 * (eta_z / eta_y) \
        * sp.log(M * eta_y * t / K) ** 2
    res = (sp.simplify(early), sp.simplify(late))
    return Check("eq14-two-regimes", "Eq. 129 with Lemma 9's two forms of h gives both lines of Eq. 14",
                 res == (0, 0), str(res))


def distinct_invariant() -> Check:
    """If dz_l/dt = kappa(t) P_l^2 e^{2 z_l} (Eq. 98; kappa shared by the class), then
    d/dt [(1 - e^{-2 z_l}) / P_l^2] = 2 kappa(t), the same for every distinct token l."""
    kappa = sp.Function("kappa")
    P = sp.Symbol("P", positive=True)
    zl = sp.Function("z")(t)
    inv = (1 - sp.exp(-2 * zl)) / P ** 2
    res = sp.simplify(sp.diff(inv, t).subs(sp.Derivative(zl, t), kappa(t) * P ** 2 * sp.exp(2 * zl)) - 2 * kappa(t))
    return Check("distinct-invariant", "(1 - e^{-2 z_ml})/P(l|n)^2 has the same time derivative 2 kappa_n(t) for "
                 "all distinct tokens of class n", res == 0, str(res))


def relative_gain() -> Check:
    """Theorem 3 (Eq. 11) from the invariant: with Z(0) = 0 and e^{-2 z_l} = 1 - P_l^2 S(t) for a shared
    S(t), r_{l/l'}(t) := P_l^2 e^{2 z_l} / (P_l'^2 e^{2 z_l'}) - 1 equals r_{l/l'}(0) e^{2 z_l}."""
    Pl, Plp, S = sp.symbols("P_l P_lp S", positive=True)
    e2zl = 1 / (1 - Pl ** 2 * S)
    e2zlp = 1 / (1 - Plp ** 2 * S)
    r = Pl ** 2 * e2zl / (Plp ** 2 * e2zlp) - 1
    r0 = Pl ** 2 / Plp ** 2 - 1
    res = sp.simplify(r - r0 * e2zl)
    return Check("thm3-relative-gain", "r_{l/l'|n}(t) = r_{l/l'|n}(0) e^{2 (z_ml(t) - z_ml(0))} (Eq. 11) follows "
                 "from the distinct-token invariant", res == 0, str(res))


CHECKS: tuple[Callable[[], Check], ...] = (
    implicit_derivative, lambert_solution, early_regime, late_regime, gamma_integral,
    common_token_law, b_integral, two_regime_b, distinct_invariant, relative_gain,
)


def run_all() -> list[Check]:
    return [check() for check in CHECKS]


# ---------------------------------------------------------------------------------------------
# finite T (dynamics/scan_snap/finite_t.py, docs/scan_snap_finite_t.md)
# ---------------------------------------------------------------------------------------------
def window_second_moment() -> Check:
    """A window of T-1 i.i.d. keys has count N_l ~ Binomial(T-1, P_l); from its moment generating function
    (1 - P + P e^s)^(T-1), E[p_hat_l^2] = E[N_l^2]/(T-1)^2 = P_l^2 + P_l (1 - P_l)/(T-1)."""
    P, sv = sp.Symbol("P", positive=True), sp.Symbol("s")
    n = sp.Symbol("T", positive=True) - 1
    mgf = (1 - P + P * sp.exp(sv)) ** n
    second = sp.diff(mgf, sv, 2).subs(sv, 0)
    res = sp.simplify(second / n ** 2 - (P ** 2 + P * (1 - P) / n))
    return Check("ft-window-second-moment", "E[p_hat_l^2] = P_l^2 + P_l (1 - P_l)/(T - 1) for a window of T - 1 "
                 "i.i.d. keys", res == 0, str(res))


def homogeneous_hessian() -> Check:
    """For g homogeneous of degree 0 (the attention c_l = p_l e^{z_l}/sum p e^z and everything computed
    from it), P^T H_g P = 0, so tr(Sigma H_g) with Sigma = diag(P) - P P^T is sum_i P_i d^2 g/dp_i^2 (FT-1)."""
    p = sp.symbols("p1:4", positive=True)
    a = sp.symbols("a1:4", real=True)
    # the attention of token 1 and a normalised-attention feature, both degree 0, with generic weights a
    ez = [p[i] * sp.exp(a[i]) for i in range(3)]
    c1 = ez[0] / sum(ez)
    g = c1 * p[1] / p[2] + ez[0] ** 2 / sum(x ** 2 for x in ez)
    quad = sum(p[i] * p[j] * sp.diff(g, p[i], p[j]) for i in range(3) for j in range(3))
    res = sp.simplify(quad)
    return Check("ft-homogeneous-hessian", "P^T H P = 0 for degree-0 homogeneous g (3 tokens: attention c_1 times "
                 "p_2/p_3 plus f_1^2, generic logits)",
                 res == 0, str(res))


def delta_method_on_simplex() -> Check:
    """(FT-1) reproduces the exact second moment: for the degree-0 form g = p_1^2/(p_1+p_2+p_3)^2 of p_hat_1^2,
    1/2 sum_i P_i d^2 g/dp_i^2 at sum P = 1 equals P_1 (1 - P_1), the exact coefficient of 1/(T-1)."""
    p = sp.symbols("p1:4", positive=True)
    g = p[0] ** 2 / (p[0] + p[1] + p[2]) ** 2
    half_trace = sum(p[i] * sp.diff(g, p[i], 2) for i in range(3)) / 2
    res = sp.simplify(half_trace.subs(p[2], 1 - p[0] - p[1]) - p[0] * (1 - p[0]))
    return Check("ft-delta-method-simplex", "1/2 sum_i P_i d^2/dp_i^2 [p_1^2/(sum p)^2] = P_1 (1 - P_1) on the "
                 "simplex (FT-1 is exact for E[p_hat_l^2])", res == 0, str(res))


def attention_logit_gradient() -> Check:
    """Per sample, with c_l = n_l e^{z_l}/sum n e^z, f = c/||c|| and a decoder whose gradient in f is u,
    d(u^T f)/dz_l = f_l u_l - f_l^2 (f^T u): the form whose window average finite_t corrects (3 tokens)."""
    z = sp.symbols("z1:4", real=True)
    nn = sp.symbols("n1:4", positive=True)
    u = sp.symbols("u1:4", real=True)
    e = [nn[i] * sp.exp(z[i]) for i in range(3)]
    S = sum(e)
    c = [x / S for x in e]
    norm = sp.sqrt(sum(x ** 2 for x in c))
    f = [x / norm for x in c]
    J = sum(u[i] * f[i] for i in range(3))
    fu = sum(f[i] * u[i] for i in range(3))
    res = sp.simplify(sp.diff(J, z[0]) - (f[0] * u[0] - f[0] ** 2 * fu))
    return Check("ft-logit-gradient", "dJ/dz_l = f_l u_l - f_l^2 (f^T u) for J = u^T f (Lemma 1, Eq. 4, per sample)",
                 res == 0, str(res))


FINITE_T_CHECKS: tuple[Callable[[], Check], ...] = (
    window_second_moment, homogeneous_hessian, delta_method_on_simplex, attention_logit_gradient,
)
