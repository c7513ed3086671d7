"""Scan and Snap, Fig. 5 (Syn-Small with Adam): attention c_n over the first steps for eta_Y = eta_Z in
{0.1, 0.5, 1}.

Paper setting (Tian et al. 2023 Sec. 7; the official Fig. 4 command with ``opt.method=adam``): K = 2
classes, 10 common and 10 distinct tokens per class (M = 34), Y(0) = Z(0) = 0, batch 128, T = 128,
100 steps, Adam (PyTorch defaults betas (0.9, 0.999), eps 1e-8) on Y and Z with one learning rate.
Stated result: with Adam the attention also concentrates on distinct tokens and leaves the common ones,
and different learning rates select different subsets of distinct tokens ("tunable inductive bias");
the paper does not analyse Adam.

Tables and figures are those of scan-snap-fig4 (its ``summarize`` and ``plot`` are reused unchanged),
plus ``final_attention``: every seed's final c_n on each class's distinct tokens, from which the
claims read which distinct tokens a learning rate selects (c_l above the uniform share 1/N_d of the
class's distinct-token attention).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pandas as pd

from dynamics import stats
from dynamics.claims import ClaimSpec
from dynamics.config import field
from dynamics.experiment import Experiment
from dynamics.stats import Band

from . import scan_snap_fig4 as fig4
from .scan_snap_common import simulation_key

NAME = "scan-snap-fig5"
REF = "Tian et al. 2023, Fig. 5"


@dataclasses.dataclass(frozen=True)
class Fig5Config(fig4.Fig4Config):
    optimizer: Literal["sgd", "adam"] = field("adam", "Adam, as Fig. 5")
    ratio: float = field(1.0, "eta_Y / eta_Z (Fig. 5: one learning rate for both)")
    eta_z: float = field(0.5, "learning rate (grid 0.1, 0.5, 1)")
    seeds: int = field(10, "seeds per learning rate (paired across learning rates: a seed fixes the data)")


def run_batch(cfgs, ctx):
    """Fig. 4's tables, plus each seed's final attention over every class's distinct tokens (which
    tokens Adam keeps)."""
    out, classes, _, c = fig4.simulate_cells(cfgs, ctx)
    S, K = cfgs[0].seeds, classes.K
    for i, (cfg, tables) in enumerate(zip(cfgs, out)):
        rows = []
        for n in range(K):
            d = np.flatnonzero(classes.distinct[n])
            for s in range(S):
                cd = c[-1, i * S + s, n, d]
                for rank, (tokn, v) in enumerate(zip(d, cd)):
                    rows.append({"seed_index": s, "class": n, "rank_by_p": rank, "token": int(tokn),
                                 "p_l_given_n": classes.probs[n, tokn], "c": v, "share": v / cd.sum()})
        tables["final_attention"] = pd.DataFrame(rows).assign(optimizer=cfg.optimizer, eta_z=cfg.eta_z,
                                                              ratio=cfg.ratio)
    return out


def summarize(tables, base):
    out = fig4.summarize(tables, base)
    fa = tables["final_attention"]
    n_d = fa.groupby(["eta_z", "seed_index", "class"]).token.transform("count")
    fa = fa.assign(selected=fa.share >= 1.0 / n_d)
    sel = fa[fa.selected].groupby(["eta_z", "rank_by_p"]).seed_index.count().unstack(fill_value=0)
    sel = sel.reindex(index=sorted(fa.eta_z.unique()), columns=sorted(fa.rank_by_p.unique()), fill_value=0)
    out["final_attention"] = fa
    out["selection"] = (sel / (fa.seed_index.nunique() * fa["class"].nunique())).reset_index()
    return out


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    paths = {name.replace("fig4", "fig5"): f for name, f in fig4.plot(tables, cfg).items()}
    sel = tables["selection"].set_index("eta_z")
    fig, ax = subplots(figsize=(5, 3.2), layout="constrained")
    for eta, row in sel.iterrows():
        ax.plot(row.index.astype(int) + 1, row.to_numpy(), marker="o", label=f"Adam $\\eta$ = {eta:g}")
    ax.set(xlabel="distinct token, by rank of P(l|n) (10 = most frequent)",
           ylabel="fraction of (seed, class) selecting it", title="Fig. 5: which distinct tokens Adam keeps",
           ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)
    paths["fig5_selection"] = fig
    return paths


CLAIMS = (
    ClaimSpec("adam-common-mass-falls", "reproduction",
              "With Adam, attention mass on common tokens falls from init to the final step at every learning rate "
              "(per seed: the smallest drop over eta in {0.1, 0.5, 1}; t-interval over seeds).",
              f"{REF} (Thm. 2(b) under Adam)", Band.above(0.0), ("seeds", "steps", "batch", "T")),
    ClaimSpec("adam-distinct-sparsifies", "reproduction",
              "With Adam, the distinct-token attention entropy falls from init to the final step at every learning "
              "rate (per seed: the smallest drop over the three rates).", f"{REF} (Thm. 3 under Adam)",
              Band.above(0.0), ("seeds", "steps", "batch", "T")),
    ClaimSpec("adam-lr-selects-different-tokens", "reproduction",
              "Different learning rates select different subsets of distinct tokens: fraction of (seed, class) "
              "whose selected set (c_l >= 1/N_d of the distinct attention) at eta = 0.1 differs from eta = 1 "
              "(Wilson).", f"{REF} ('tunable inductive bias')", Band.above(0.5), ("seeds", "steps", "batch", "T")),
)


def claims(tables, cfg):
    traj = tables["trajectory"]
    etas = sorted(traj.eta_z.unique())
    if len(etas) < 2:
        return {}
    per = traj.groupby(["eta_z", "seed_index", "step"])[["common_mass", "distinct_entropy"]].mean()
    steps = int(traj.step.max())
    drop = (per.xs(0, level="step") - per.xs(steps, level="step")).unstack("eta_z")  # seed x (qty, eta)
    out = {"adam-common-mass-falls": stats.t_interval(drop["common_mass"].min(axis=1).to_numpy()),
           "adam-distinct-sparsifies": stats.t_interval(drop["distinct_entropy"].min(axis=1).to_numpy())}
    fa = tables["final_attention"]
    lo, hi = min(etas), max(etas)
    sets = {e: fa[(fa.eta_z == e) & fa.selected].groupby(["seed_index", "class"]).token.apply(frozenset)
            for e in (lo, hi)}
    keys = sets[lo].index.union(sets[hi].index)
    differ = sum(sets[lo].get(k, frozenset()) != sets[hi].get(k, frozenset()) for k in keys)
    out["adam-lr-selects-different-tokens"] = (stats.wilson(int(differ), len(keys)),
                                               f"{differ} of {len(keys)} (seed, class) pairs, eta {lo:g} vs {hi:g}")
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="Syn-Small with Adam: attention c_n over steps at eta_Y = eta_Z in {0.1, 0.5, 1}",
    reference="Tian et al. 2023, Fig. 5",
    config=Fig5Config,
    run_batch=run_batch,
    grid={"eta_z": (0.1, 0.5, 1.0)},
    quick={"seeds": 3, "steps": 40},
    batch_key=simulation_key,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
