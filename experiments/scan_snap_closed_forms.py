"""The paper's theory figures drawn from the closed forms (Tian et al. 2023, Figs. 3, 8 and 9; no code for
them was released), with the checks behind them: Lambert W against root finding, Lemma 7's bound on the
discrete/continuous gap, B_n(t_0)'s independence of eta_Z at fixed eta_Y/eta_Z, and the sympy derivations.

    Fig. 3   growth factor of the dominant distinct token, bounded by chi_l0 <= e^{2 B_n(t)} (Eq. 12) with
             B_n of Eq. 129, against t for K = 10, M = 1000, eta_Z = 0.5, eta_Y in {0.5, 1, 2, 5}
    Fig. 8   h*(s) of Eq. 33 (steps) and h(t) of Eq. 45 (smooth) for M = 50 and M = 1000
    Fig. 9   B_n(t) of Eq. 129 (and Eq. 14's two regimes, dashed) at fixed nu = eta_Y/eta_Z: nu = 10 with
             M = 100, nu = 1 with M = 10^4, eta_Z in {0.5, 1, 2, 4, 8}; dots mark B_n(t_0)

The paper states neither K nor C_0 for Figs. 3 and 9; ``fig9_K`` = 1 and ``C0`` = 1 are this package's
choices (with them Fig. 9's right panel reaches the paper's B ~ 1.5 at t = 50).  B_n is plotted as Eq. 129
prints it (without the -1/4 ln C_0 offset, which is 0 for C_0 = 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.experiment import Experiment
from dynamics.scan_snap import symbolic
from dynamics.scan_snap import theory as th
from dynamics.stats import Band

NAME = "scan-snap-closed-forms"
REF = "Tian et al. 2023"


@dataclasses.dataclass(frozen=True)
class ClosedFormsConfig:
    fig3_K: int = field(10, "Fig. 3: number of classes K")
    fig3_M: int = field(1000, "Fig. 3: vocabulary size M")
    fig3_eta_z: float = field(0.5, "Fig. 3: eta_Z")
    fig3_eta_y: tuple[float, ...] = field((0.5, 1.0, 2.0, 5.0), "Fig. 3: eta_Y values")
    fig3_t_max: float = field(700.0, "Fig. 3: last step drawn")
    fig9_K: int = field(1, "Fig. 9: number of classes K (not stated in the paper)")
    C0: float = field(1.0, "C_0 of Eq. 13 for Figs. 3 and 9 (not stated in the paper)")
    gap_horizon: int = field(20000, "Lemma 7 check: discrete steps s for h*(s) - h(s)")

    def __post_init__(self) -> None:
        require(self.fig3_K >= 1 and self.fig9_K >= 1, "K must be >= 1")
        require(self.fig3_M >= 4, f"fig3_M must be >= 4, got {self.fig3_M}")
        require(self.fig3_eta_z > 0 and all(e > 0 for e in self.fig3_eta_y) and len(self.fig3_eta_y) >= 2,
                "learning rates must be positive (and at least two eta_Y values for Fig. 3)")
        require(self.fig3_t_max > 0, "fig3_t_max must be positive")
        require(self.C0 > 0, f"C0 must be positive, got {self.C0}")
        require(self.gap_horizon >= 10, f"gap_horizon must be >= 10, got {self.gap_horizon}")


FIG8 = [(50, (0.1, 0.2, 0.5, 1.0, 2.0), 80), (1000, (0.2, 0.5, 1.0, 2.0, 4.0), 70)]  # (M, eta_Y values, s_max)
FIG9 = [(10.0, 100, 5.0), (1.0, 10_000, 50.0)]  # (nu = eta_Y/eta_Z, M, t_max)
FIG9_ETA_Z = (0.5, 1.0, 2.0, 4.0, 8.0)


def run_batch(cfgs, ctx):
    return [tables_for(cfg) for cfg in cfgs]


def tables_for(cfg: ClosedFormsConfig) -> dict[str, pd.DataFrame]:
    # Fig. 3
    t = np.linspace(0, cfg.fig3_t_max, 701)
    rows = []
    for ey in cfg.fig3_eta_y:
        B = th.B(t, cfg.fig3_K, cfg.fig3_M, ey, cfg.fig3_eta_z, cfg.C0)
        rows.append(pd.DataFrame({"eta_y": ey, "t": t, "B": B, "chi_upper": np.exp(2 * B),
                                  "t0": float(th.transition_time(cfg.fig3_K, cfg.fig3_M, ey).t0)}))
    fig3 = pd.concat(rows, ignore_index=True)

    # Fig. 8, and Lemma 7's gap over a long horizon
    rows, gaps = [], []
    for M, etas, s_max in FIG8:
        for ey in etas:
            hs = th.h_discrete(s_max, M, ey)
            s = np.arange(s_max + 1)
            rows.append(pd.DataFrame({"M": M, "eta_y": ey, "s": s, "h_star": hs, "h": th.h(s, M, ey)}))
            long = th.h_discrete(cfg.gap_horizon, M, ey) - th.h(np.arange(cfg.gap_horizon + 1), M, ey)
            gaps.append({"M": M, "eta_y": ey, "bound": 2 * ey / M, "max_gap": long.max(), "min_gap": long.min(),
                         "final_gap": long[-1]})
    fig8, gaps = pd.concat(rows, ignore_index=True), pd.DataFrame(gaps)

    # Fig. 9
    rows, dots = [], []
    for nu, M, t_max in FIG9:
        t = np.linspace(0, t_max, 501)
        for ez in FIG9_ETA_Z:
            ey = nu * ez
            rows.append(pd.DataFrame({"nu": nu, "M": M, "eta_z": ez, "eta_y": ey, "t": t,
                                      "B": th.B(t, cfg.fig9_K, M, ey, ez, cfg.C0),
                                      "B_two_regime": th.B(t, cfg.fig9_K, M, ey, ez, cfg.C0, form="two-regime")}))
            t0 = float(th.transition_time(cfg.fig9_K, M, ey).t0)
            dots.append({"nu": nu, "M": M, "eta_z": ez, "eta_y": ey, "t0": t0,
                         "B_t0": float(th.B(t0, cfg.fig9_K, M, ey, ez, cfg.C0)),
                         "B_t0_app_f": float(th.B_at_t0(cfg.fig9_K, M, nu, cfg.C0))})
    fig9, dots = pd.concat(rows, ignore_index=True), pd.DataFrame(dots)

    # Lambert W against Newton's root over a wide range
    tt = np.concatenate([[0.0], np.logspace(-4, 10, 400)])
    worst = 0.0
    for M in (2, 3, 10, 100, 1000, 1e5):
        for ey in (1e-3, 0.1, 1.0, 10.0, 100.0):
            a, b = th.h(tt, M, ey), th.h_root(tt, M, ey)
            worst = max(worst, float(np.max(np.abs(a[1:] - b[1:]) / b[1:])), float(abs(a[0] - b[0])))
    sym = pd.DataFrame([dataclasses.asdict(c) for c in symbolic.run_all()])
    return {"fig3": fig3, "fig8": fig8, "fig9": fig9, "fig9_t0": dots, "lemma7_gaps": gaps, "symbolic": sym,
            "lambert": pd.DataFrame({"max_rel_diff_lambert_vs_newton": [worst], "grid_points": [len(tt) * 30]})}


def summarize(tables, base):
    gaps, dots = tables["lemma7_gaps"], tables["fig9_t0"]
    sym = tables["symbolic"]
    spread = dots.groupby("nu").B_t0.agg(lambda b: (b.max() - b.min()) / abs(b.mean()))
    rows = [
        ("Eq. 45: max relative difference, Lambert W vs Newton root", tables["lambert"].iloc[0, 0]),
        ("Lemma 7: max (h* - h) / (2 eta_Y / M) over Fig. 8's curves", (gaps.max_gap / gaps.bound).max()),
        ("Lemma 7: min (h* - h)", gaps.min_gap.min()),
        ("Lemma 7(b): max final gap / max gap", (gaps.final_gap / gaps.max_gap).max()),
        ("Fig. 9: max relative spread of B_n(t_0) over eta_Z at fixed nu", spread.max()),
        ("Fig. 9: max |B_n(t_0) - App. F's closed form|", (dots.B_t0 - dots.B_t0_app_f).abs().max()),
        ("sympy checks passing", f"{int(sym.ok.sum())} of {len(sym)}"),
    ]
    table = pd.DataFrame(rows, columns=["check", "value"])
    return {"table": table, "headline": table, **{k: v for k, v in tables.items()}}


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    paths = {}
    fig3 = tables["fig3"]
    fig, ax = subplots(figsize=(4.6, 3.4), layout="constrained")
    for k, (ey, sub) in enumerate(fig3.groupby("eta_y")):
        ax.plot(sub.t, sub.chi_upper, color=f"C{k}", label=f"$\\eta_Y$ = {ey:g}")
        ax.axvline(sub.t0.iloc[0], color=f"C{k}", ls=":", lw=0.8)
    ax.set(xlabel="t", ylabel="$e^{2B_n(t)}$ (bound on $\\chi_{l_0}$, Eq. 12)",
           title=f"Fig. 3: K={cfg.fig3_K}, M={cfg.fig3_M}, $\\eta_Z$={cfg.fig3_eta_z:g}, $C_0$={cfg.C0:g}")
    ax.legend(fontsize=7)
    paths["fig3_growth_factor"] = fig

    fig8 = tables["fig8"]
    fig, axes = subplots(1, 2, figsize=(8.5, 3.2), layout="constrained")
    for ax, (M, sub) in zip(axes, fig8.groupby("M")):
        for k, (ey, line) in enumerate(sub.groupby("eta_y")):
            ax.step(line.s, line.h_star, where="post", color=f"C{k}", lw=0.9, label=f"h*, $\\eta_Y$={ey:g}")
            s = np.linspace(0, line.s.max(), 400)
            ax.plot(s, th.h(s, M, ey), color=f"C{k}", lw=0.8, ls="--")
        ax.set(xlabel="t", ylabel="h* (steps) / h (dashed)", title=f"Fig. 8: M = {M}")
        ax.legend(fontsize=6)
    paths["fig8_h_discrete"] = fig

    fig9, dots = tables["fig9"], tables["fig9_t0"]
    fig, axes = subplots(1, 2, figsize=(8.5, 3.2), layout="constrained")
    for ax, ((nu, M), sub) in zip(axes, fig9.groupby(["nu", "M"], sort=False)):
        for k, (ez, line) in enumerate(sub.groupby("eta_z")):
            ax.plot(line.t, line.B, color=f"C{k}", label=f"$\\eta_Z$={ez:g}, $\\eta_Y$={ez * nu:g}")
            ax.plot(line.t, line.B_two_regime, color=f"C{k}", ls="--", lw=0.7)
            d = dots[(dots.nu == nu) & (dots.eta_z == ez)].iloc[0]
            if d.t0 <= line.t.max():
                ax.axvline(d.t0, color=f"C{k}", ls=":", lw=0.7)
                ax.plot([d.t0], [d.B_t0], "o", color=f"C{k}", ms=4)
        ax.set(xlabel="t", ylabel="$B_n(t)$", title=f"Fig. 9: $\\nu=\\eta_Y/\\eta_Z$ = {nu:g}, M = {M}, K = {cfg.fig9_K}")
        ax.legend(fontsize=6)
    paths["fig9_B"] = fig
    return paths


CLAIMS = (
    ClaimSpec("eq45-lambert-vs-root", "consistency",
              "The Lambert-W closed form of Eq. 45 agrees with Newton's root of the same equation (max relative "
              "difference over M in [2, 1e5], eta_Y in [1e-3, 100], t in [0, 1e10]): two solvers of one equation.",
              f"{REF}, Eq. 45", Band.below(1e-12)),
    ClaimSpec("lemma7-gap", "reproduction",
              "The discrete h*(s) of Eq. 33 stays within [h(s), h(s) + 2 eta_Y/M]: max of (h* - h)/(2 eta_Y/M) over "
              "Fig. 8's curves and s <= gap_horizon (-1 if h* < h anywhere); deterministic.",
              f"{REF}, Lemma 7(a)", Band.between(0.0, 1.0), ("gap_horizon",)),
    ClaimSpec("fig9-b-t0", "consistency",
              "B_n(t_0) does not depend on eta_Z at fixed nu = eta_Y/eta_Z (max relative spread over eta_Z of Eq. 129 "
              "at t_0 = 2 K ln M/eta_Y): an algebraic property of the formula the code evaluates.",
              f"{REF}, App. F, Fig. 9", Band.below(1e-12)),
    ClaimSpec("fig3-ordering", "reproduction",
              "At fixed eta_Z, a smaller eta_Y gives a larger bound e^{2 B_n} at the end of Fig. 3 (fraction of "
              "adjacent eta_Y pairs ordered so; deterministic).", f"{REF}, Fig. 3 / Thm. 4", Band.above(1.0)),
    ClaimSpec("symbolic-checks", "consistency",
              "Every sympy derivation (Eq. 44 from Eq. 45, the Lambert-W solution, both regimes of h, Gamma, the "
              "common-token law, B_n, Eq. 14, the distinct-token invariant, Eq. 11) reduces to zero (fraction passing).",
              f"{REF}, Eqs. 11, 14, 44-45, 122-129", Band.above(1.0)),
)


def claims(tables, cfg):
    gaps, dots, sym = tables["lemma7_gaps"], tables["fig9_t0"], tables["symbolic"]
    fig3 = tables["fig3"]
    last = fig3[fig3.t == fig3.t.max()].sort_values("eta_y")
    spread = dots.groupby("nu").B_t0.agg(lambda b: (b.max() - b.min()) / abs(b.mean())).max()
    return {
        "eq45-lambert-vs-root": S.exact(float(tables["lambert"].iloc[0, 0])),
        "lemma7-gap": S.exact(float((gaps.max_gap / gaps.bound).max()) if gaps.min_gap.min() >= -1e-15 else -1.0),
        "fig9-b-t0": S.exact(float(spread)),
        "fig3-ordering": S.exact(float(np.mean(np.diff(last.chi_upper.to_numpy()) < 0))),
        "symbolic-checks": S.exact(float(sym.ok.mean())),
    }


EXPERIMENT = Experiment(
    name=NAME,
    summary="Figs. 3, 8 and 9 from the closed forms, Lemma 7's gap bound and the sympy derivations",
    reference="Tian et al. 2023, Figs. 3, 8, 9; Lemma 7; App. F",
    config=ClosedFormsConfig,
    run_batch=run_batch,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
