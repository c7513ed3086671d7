"""Scan and Snap, App. Figs. 11-12 (Syn-Medium): recall-threshold curves of the final attention.

The paper's appendix complements Fig. 6's entropy with curves obtained by binarising the attention
c_n at a threshold near 1/M and counting which distinct tokens survive; no code for them was released
(/work/shared/reference/scan_snap.md, Sec. 4 and 5.9).  Our reading, stated before running:

    recall(tau) = mean over next tokens n of the fraction of n's distinct tokens l with c_{l|n} >= tau,
    tau = kappa / M,  kappa on a log grid 0.1 ... 10   (curves of different M on one axis)

Fig. 11 draws the curves for eta_Z in {0.5, 1, 2, 3} at each eta_Y/eta_Z; Fig. 12 for eta_Y/eta_Z in
{1, 2, 5, 10} at each eta_Z.  Sparser attention keeps fewer distinct tokens above 1/M.  The setting is
scan-snap-fig6's (its config is reused unchanged): num_last in {1, 3, 5, 10} with 2 next tokens each
(M = 33, 79, 125, 240), random init, SGD momentum 0.9, batch 128, T = 128, 100 steps, 10 seeds.
Claims translate Fig. 6's stated trends to recall at tau = 1/M: it falls as eta_Z grows, and at fixed
eta_Z it rises with eta_Y/eta_Z beyond 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynamics import stats
from dynamics.claims import ClaimSpec
from dynamics.experiment import Experiment
from dynamics.stats import Band

from .scan_snap_common import NOTES, attention_at, simulate, simulation_key
from .scan_snap_fig6 import Fig6Config

NAME = "scan-snap-fig11-12"
KAPPA = np.geomspace(0.1, 10.0, 25)


def recall_curves(c: np.ndarray, distinct: np.ndarray, M: int) -> np.ndarray:
    """recall(kappa/M) for attention c (R, K, M) and distinct (K, M): (R, len(KAPPA))."""
    tau = KAPPA / M
    above = c[..., None] >= tau  # (R, K, M, k)
    frac = (above & distinct[None, :, :, None]).sum(2) / distinct.sum(1)[None, :, None]
    return frac.mean(1)


def run_batch(cfgs, ctx):
    ctx.notes.update(NOTES)
    classes, traj = simulate(cfgs, record=[cfgs[0].steps], bar=ctx.bar)
    c = attention_at(traj, classes)[-1]
    rec = recall_curves(c, classes.distinct, classes.M)
    S = cfgs[0].seeds
    out = []
    for i, cfg in enumerate(cfgs):
        r = slice(i * S, (i + 1) * S)
        seed, k = np.meshgrid(np.arange(S), np.arange(len(KAPPA)), indexing="ij")
        out.append({"runs": pd.DataFrame({
            "num_last": cfg.data.num_last, "eta_z": cfg.eta_z, "ratio": cfg.ratio, "M": classes.M, "K": classes.K,
            "seed_index": seed.ravel(), "kappa": KAPPA[k.ravel()], "tau": KAPPA[k.ravel()] / classes.M,
            "recall": rec[r].ravel(), "diverged": np.repeat(traj.diverged[r] >= 0, len(KAPPA))})})
    return out


def summarize(tables, base):
    runs = tables["runs"]
    ok = runs[~runs.diverged]
    keys = ["num_last", "M", "eta_z", "ratio", "kappa"]
    curves = ok.groupby(keys).recall.agg(["mean", "std", "count"]).reset_index()
    at1 = curves[np.isclose(curves.kappa, 1.0)].drop(columns="kappa")
    table = at1.rename(columns={"mean": "recall_at_1_over_M", "std": "sd", "count": "n_seeds"})
    headline = table.pivot_table(index=["num_last", "M", "eta_z"], columns="ratio",
                                 values="recall_at_1_over_M").reset_index()
    headline.columns = [str(c) if not isinstance(c, float) else f"ratio {c:g}" for c in headline.columns]
    return {"table": table, "headline": headline, "curves": curves, "runs": runs}


def plot(tables, cfg) -> dict:
    from matplotlib import colormaps

    from dynamics.report.figures import subplots

    curves = tables["curves"]
    names = {"eta_z": "$\\eta_Z$", "ratio": "$\\eta_Y/\\eta_Z$"}
    paths = {}
    for fig_no, vary, fixed in ((11, "eta_z", "ratio"), (12, "ratio", "eta_z")):
        Ms = sorted(curves.M.unique())
        fixed_vals = sorted(curves[fixed].unique())
        fig, axes = subplots(len(fixed_vals), len(Ms), figsize=(3.0 * len(Ms), 2.4 * len(fixed_vals)),
                                 squeeze=False, sharex=True, sharey=True, layout="constrained")
        for row, fv in zip(axes, fixed_vals):
            for ax, M in zip(row, Ms):
                sub = curves[(curves.M == M) & (curves[fixed] == fv)]
                for j, (v, g) in enumerate(sub.groupby(vary)):
                    ax.plot(g.kappa / M, g["mean"], color=colormaps['viridis'](j / max(1, sub[vary].nunique() - 1)),
                            label=f"{names[vary]} = {v:g}")
                ax.axvline(1 / M, color="grey", lw=0.6, ls=":")
                ax.set(xscale="log", title=f"M = {M}, {names[fixed]} = {fv:g}")
            row[0].set_ylabel("recall of distinct tokens")
        for ax in axes[-1]:
            ax.set_xlabel("threshold $\\tau$ on $c_{l|n}$")
        axes[0][-1].legend(fontsize=6)
        fig.suptitle(f"App. Fig. {fig_no} (Syn-Medium): fraction of distinct tokens with attention above $\\tau$ "
                     f"(seed mean; dotted: 1/M)")
        paths[f"fig{fig_no}_recall"] = fig
    return paths


INPUTS = ("seeds", "steps", "batch", "T", "init", "momentum")
CLAIMS = (
    ClaimSpec("fig11-recall-falls-with-eta_z", "reproduction",
              "Recall of distinct tokens at tau = 1/M is lower at eta_Z = 3 than at eta_Z = 0.5 (per seed: mean over "
              "K and eta_Y/eta_Z of the difference; paired t over seeds).", "Tian et al. 2023, App. Fig. 11 / Fig. 6",
              Band.below(0.0), INPUTS),
    ClaimSpec("fig12-recall-rises-with-ratio", "reproduction",
              "At fixed eta_Z, recall at tau = 1/M is higher at eta_Y/eta_Z = 10 than at 2 (per seed: mean over K and "
              "eta_Z of the difference; paired t over seeds).", "Tian et al. 2023, App. Fig. 12 / Fig. 6",
              Band.above(0.0), INPUTS),
)


def claims(tables, cfg):
    runs = tables["runs"]
    r = runs[np.isclose(runs.kappa, 1.0) & ~runs.diverged]
    out = {}
    ez = sorted(r.eta_z.unique())
    if len(ez) >= 2:
        lo = r[r.eta_z == ez[0]].set_index(["num_last", "ratio", "seed_index"]).recall
        hi = r[r.eta_z == ez[-1]].set_index(["num_last", "ratio", "seed_index"]).recall
        d = (hi - lo).dropna().groupby("seed_index").mean()
        out["fig11-recall-falls-with-eta_z"] = (stats.t_interval(d.to_numpy()), f"eta_Z {ez[-1]:g} minus {ez[0]:g}")
    if {2.0, 10.0} <= set(r.ratio.unique()):
        a = r[r.ratio == 10.0].set_index(["num_last", "eta_z", "seed_index"]).recall
        b = r[r.ratio == 2.0].set_index(["num_last", "eta_z", "seed_index"]).recall
        d = (a - b).dropna().groupby("seed_index").mean()
        out["fig12-recall-rises-with-ratio"] = stats.t_interval(d.to_numpy())
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="Syn-Medium: recall-threshold curves of the final attention (App. Figs. 11-12)",
    reference="Tian et al. 2023, App. Figs. 11-12",
    config=Fig6Config,
    run_batch=run_batch,
    grid={"num_last": (1, 3, 5, 10), "eta_z": (0.5, 1.0, 2.0, 3.0), "ratio": (1.0, 2.0, 5.0, 10.0)},
    quick={"seeds": 3, "steps": 40},
    quick_grid={"num_last": (1, 3), "eta_z": (0.5, 3.0), "ratio": (2.0, 10.0)},
    batch_key=simulation_key,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
