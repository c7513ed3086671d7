"""Scan and Snap, Figs. 4–5 (Syn-Small): attention c_n over the first SGD steps.

Paper setting (Tian et al. 2023 Sec. 7, official command for Fig. 4): K = 2 classes, one query per
class, 10 common tokens, 10 distinct tokens per class with P(l|n) rising across the block
(M = 34), Y(0) = Z(0) = 0, SGD momentum 0.9, batch 128, T = 128, 100 steps; eta_Y = eta_Z = 1
(left) and eta_Y = 10, eta_Z = 1 (right).  Fig. 5 is the same with Adam and eta_Y = eta_Z in
{0.1, 0.5, 1}: ``dynamics sweep scan-snap-fig4 --set optimizer=adam --grid eta_z=0.1,0.5,1``.

Stated result: at eta_Y = eta_Z = 1 the weight on common tokens falls and c_n concentrates on the
most probable distinct tokens within about 10 steps; with eta_Y = 10 the loss converges faster and
attention stays less sparse.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field
from dynamics.experiment import Experiment
from dynamics.scan_snap import metrics
from dynamics.stats import Band
from dynamics.sweep.grid import POOLED_KEYS, group_keys

from .scan_snap_common import (
    NOTES,
    SynConfig,
    attention_at,
    memory_bytes,
    simulate,
    simulation_key,
)

NAME = "scan-snap-fig4"
SNAPSHOTS = (0, 2, 4, 6, 8, 10)


@dataclasses.dataclass(frozen=True)
class Fig4Config(SynConfig):
    seeds: int = field(5, "seeds per cell; figures show seed 0, tables mean and s.d. over seeds")
    early_step: int = field(10, "the step at which the claims check early sparsification")
    loss_target: float = field(0.1, "claim: steps until the mean training loss first falls below this")


def run_batch(cfgs, ctx):
    return simulate_cells(cfgs, ctx)[0]


def simulate_cells(cfgs, ctx):
    """One batched simulation of the cells: (per-cell tables, classes, trajectory, attention c of shape
    (steps, runs, K, M)); runs are cell-major, so cell i's seeds are runs i*S .. (i+1)*S - 1."""
    ctx.notes.update(NOTES)
    steps = cfgs[0].steps
    classes, traj = simulate(cfgs, record=range(steps + 1), bar=ctx.bar)
    c = attention_at(traj, classes)  # (S, R, K, M)
    H = metrics.distinct_entropy(c, classes)
    common = metrics.common_mass(c, classes)
    top = metrics.top_distinct_weight(c, classes)
    S, K = cfgs[0].seeds, classes.K
    out = []
    for i, cfg in enumerate(cfgs):
        r = slice(i * S, (i + 1) * S)
        seed, step, cls = np.meshgrid(np.arange(S), traj.steps, np.arange(K), indexing="ij")
        loss = np.concatenate([np.full((1, S), np.nan), traj.loss[:, r]])  # no loss before step 1
        trajectory = pd.DataFrame({
            "seed_index": seed.ravel(), "step": step.ravel(), "class": cls.ravel(),
            "common_mass": common[:, r].transpose(1, 0, 2).ravel(),
            "top_distinct_weight": top[:, r].transpose(1, 0, 2).ravel(),
            "distinct_entropy": H[:, r].transpose(1, 0, 2).ravel(),
            "loss": np.repeat(loss.T[:, :, None], K, axis=2).ravel(),
        })
        tokens = np.flatnonzero(classes.probs[0] > 0)  # class 0's contextual tokens, as Fig. 4
        snaps = [s for s in SNAPSHOTS if s < steps] + [steps]
        st, tok = np.meshgrid(snaps, tokens, indexing="ij")
        attention = pd.DataFrame({"step": st.ravel(), "token": tok.ravel(),
                                  "p_l_given_n": classes.probs[0][tok.ravel()],
                                  "distinct": classes.distinct[0][tok.ravel()],
                                  "c": c[snaps][:, i * S, 0][:, tokens].ravel()})
        diverged = pd.DataFrame({"seed_index": np.arange(S), "diverged_step": traj.diverged[r]})
        out.append({name: df.assign(optimizer=cfg.optimizer, eta_z=cfg.eta_z, ratio=cfg.ratio)
                    for name, df in (("trajectory", trajectory), ("attention", attention), ("diverged", diverged))})
    return out, classes, traj, c


def summarize(tables, base):
    traj = tables["trajectory"]
    keys = group_keys(traj, Fig4Config, ["optimizer", "eta_z", "ratio"])
    run = keys + [k for k in POOLED_KEYS if k in traj.columns] + ["seed_index"]  # one training run
    metrics_ = ["common_mass", "top_distinct_weight", "distinct_entropy", "loss"]
    # a diverged run contributes NaN from its divergence step on (its frozen parameters are not a
    # measurement), and any non-finite metric is NaN: both are counted in n_diverged, never averaged
    div = tables["diverged"][run + ["diverged_step"]]
    masked = traj.merge(div, on=run, how="left", validate="many_to_one")
    gone = (masked.diverged_step >= 0) & (masked.step >= masked.diverged_step)
    masked.loc[gone, metrics_] = np.nan
    masked[metrics_] = masked[metrics_].where(np.isfinite(masked[metrics_]))
    per_seed = masked.groupby(run + ["step"], sort=True)[metrics_].mean().reset_index()
    rows = []
    for key, g in per_seed.groupby(keys, sort=True):
        row = dict(zip(keys, key))
        row["eta_y"] = row["eta_z"] * row["ratio"]
        for label, step in (("init", 0), (f"step{base.early_step}", base.early_step), ("final", base.steps)):
            at = g[g.step == step]
            for q in ("common_mass", "top_distinct_weight", "distinct_entropy"):
                row[f"{q}_{label}"] = at[q].mean()
        row["distinct_entropy_final_std"] = g[g.step == base.steps].distinct_entropy.std()
        row["final_loss"] = g[g.step == base.steps].loss.mean()
        mean_loss = g.groupby("step").loss.mean()
        below = mean_loss.index[mean_loss < base.loss_target]
        row["steps_to_loss_target"] = int(below.min()) if len(below) else np.nan
        final = g[g.step == base.steps]
        row["n_seeds"] = len(final)
        row["n_diverged"] = int(final.distinct_entropy.isna().sum())  # diverged or non-finite by the end
        rows.append(row)
    table = pd.DataFrame(rows)
    headline = table[keys[3:] + ["optimizer", "eta_y", "eta_z", "common_mass_init", f"common_mass_step{base.early_step}",
                      "common_mass_final", "top_distinct_weight_final", "distinct_entropy_final",
                      "steps_to_loss_target", "final_loss"]]
    return {"table": table, "headline": headline, "trajectory": traj, "attention": tables["attention"],
            "diverged": tables["diverged"]}


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    att = tables["attention"]
    written = {}
    cells = att[["optimizer", "eta_z", "ratio"]].drop_duplicates().itertuples(index=False)
    fig, axes = subplots(len(att.step.unique()), 0 + len(att[["eta_z", "ratio"]].drop_duplicates()),
                             figsize=(4.2 * len(att[["eta_z", "ratio"]].drop_duplicates()), 7.5),
                             sharex=True, squeeze=False)
    for col, (opt, eta_z, ratio) in enumerate(cells):
        sub = att[(att.optimizer == opt) & (att.eta_z == eta_z) & (att.ratio == ratio)]
        for row, (step, snap) in enumerate(sub.groupby("step", sort=True)):
            ax = axes[row][col]
            colors = np.where(snap.distinct, "tab:orange", "tab:gray")
            ax.bar(np.arange(len(snap)), snap.c, color=colors)
            ax.set_ylabel("Final" if step == cfg.steps else ("Init" if step == 0 else f"Iter {step}"), fontsize=8)
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{opt}: $\\eta_Y$={eta_z * ratio:g}, $\\eta_Z$={eta_z:g}")
        axes[-1][col].set_xlabel("contextual token")
    fig.suptitle("Scan & Snap Fig. 4 (Syn-Small): attention $c_n$ of class 1, seed 0\n"
                 "grey: common tokens; orange: distinct tokens, P(l|n) rising to the right")
    written["fig4_attention"] = fig

    traj = tables["trajectory"]
    fig, axes = subplots(1, 3, figsize=(11, 3))
    for (opt, eta_z, ratio), g in traj.groupby(["optimizer", "eta_z", "ratio"]):
        m = g.groupby("step")[["common_mass", "distinct_entropy", "loss"]].mean()
        label = f"{opt} $\\eta_Y$={eta_z * ratio:g}, $\\eta_Z$={eta_z:g}"
        for ax, q in zip(axes, ["common_mass", "distinct_entropy", "loss"]):
            ax.plot(m.index, m[q], label=label)
    for ax, t in zip(axes, ["attention mass on common tokens", "distinct-token entropy (nats)", "training loss"]):
        ax.set(title=t, xlabel="SGD step", xscale="symlog")
    axes[0].legend(fontsize=7)
    written["fig4_dynamics"] = fig
    return written


CLAIMS = (
    ClaimSpec("common-mass-falls", "reproduction",
              "eta_Y = eta_Z: attention mass on common tokens falls by the early step (per seed: init minus "
              "early mass, averaged over classes; t over seeds).",
              "Tian et al. 2023, Fig. 4 / Thm. 2(b)", Band.above(0.0), ("seeds", "steps", "early_step", "seed")),
    ClaimSpec("distinct-concentrates", "reproduction",
              "eta_Y = eta_Z: distinct-token entropy drops by the early step (attention concentrates on "
              "high-probability distinct tokens; per seed: init minus early entropy; t over seeds).",
              "Tian et al. 2023, Fig. 4 / Thm. 3", Band.above(0.0), ("seeds", "steps", "early_step", "seed")),
    ClaimSpec("top-distinct-grows", "reproduction",
              "eta_Y = eta_Z: weight on the most probable distinct token grows by the early step (per seed: "
              "early minus init weight; t over seeds).",
              "Tian et al. 2023, Fig. 4 / Thm. 3", Band.above(0.0), ("seeds", "steps", "early_step", "seed")),
    ClaimSpec("faster-convergence", "reproduction",
              "eta_Y = 10 eta_Z reaches training loss < loss_target sooner: per seed, steps at eta_Y = eta_Z "
              "minus steps at eta_Y = 10 eta_Z (a run that never gets there counts as `steps`); paired t, the "
              "two arms share seeds.",
              "Tian et al. 2023, Fig. 4 (right)", Band.above(0.0), ("seeds", "steps", "loss_target", "seed")),
    ClaimSpec("less-sparse", "reproduction",
              "eta_Y = 10 eta_Z leaves attention less sparse: final distinct-token entropy at eta_Y = 10 eta_Z "
              "minus at eta_Y = eta_Z, per seed; paired t.",
              "Tian et al. 2023, Fig. 4 (right) / Thm. 4(c)", Band.above(0.0), ("seeds", "steps", "seed")),
)


def _per_seed(traj: pd.DataFrame, ratio: float) -> pd.DataFrame | None:
    """Per (seed, step): the class-averaged metrics of the default-optimizer cell at ``ratio``."""
    sub = traj[traj.ratio == ratio]
    if sub.empty or sub.optimizer.nunique() != 1 or sub.eta_z.nunique() != 1:
        return None  # a sweep over optimizers or eta_Z has no single arm to test
    return sub.groupby(["seed_index", "step"])[
        ["common_mass", "top_distinct_weight", "distinct_entropy", "loss"]].mean().reset_index()


def _at(per_seed: pd.DataFrame, step: int, q: str) -> np.ndarray:
    return per_seed[per_seed.step == step].sort_values("seed_index")[q].to_numpy()


def _steps_to(per_seed: pd.DataFrame, target: float, steps: int) -> np.ndarray:
    out = []
    for _, g in per_seed.groupby("seed_index", sort=True):
        below = g.step[g.loss < target]
        out.append(float(below.min()) if len(below) else float(steps))
    return np.array(out)


def claims(tables, cfg):
    traj = tables["trajectory"]
    slow, fast = _per_seed(traj, 1.0), _per_seed(traj, 10.0)
    e = cfg.early_step
    out: dict = {}
    if slow is not None:
        out["common-mass-falls"] = S.t_interval(_at(slow, 0, "common_mass") - _at(slow, e, "common_mass"))
        out["distinct-concentrates"] = S.t_interval(_at(slow, 0, "distinct_entropy") - _at(slow, e, "distinct_entropy"))
        out["top-distinct-grows"] = S.t_interval(_at(slow, e, "top_distinct_weight") - _at(slow, 0, "top_distinct_weight"))
    if slow is not None and fast is not None:
        out["faster-convergence"] = S.paired(_steps_to(slow, cfg.loss_target, cfg.steps),
                                             _steps_to(fast, cfg.loss_target, cfg.steps))
        out["less-sparse"] = S.paired(_at(fast, cfg.steps, "distinct_entropy"), _at(slow, cfg.steps, "distinct_entropy"))
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="Syn-Small: attention c_n over SGD steps at eta_Y/eta_Z = 1 and 10",
    reference="Tian et al. 2023, Figs. 4-5",
    config=Fig4Config,
    run_batch=run_batch,
    grid={"ratio": (1.0, 10.0)},
    quick={"seeds": 2, "steps": 40},
    batch_key=simulation_key,
    memory=lambda c: memory_bytes(c, records=c[0].steps + 1),
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
