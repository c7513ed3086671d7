"""Scan and Snap on real text: the Y/Z model driven by WikiText windows grouped by (query, next token).

Tian et al. 2023 state their theory for synthetic classes s_{m,n} with context distribution
P(l|m,n).  Here the classes are the (m, n) pairs of WikiText-2 (:mod:`dynamics.corpus.cooccurrence`):
for the most frequent queries m, their ``next_per_query`` most frequent next tokens n, each class
with the same number of real windows.  Each query is trained on its own (the theory's setting:
one query, psi^{-1}(m) its next tokens), from Y(0) = Z(0) = 0, plain SGD, in two data modes
(:mod:`dynamics.scan_snap.text`): ``population`` (mean counts, the T -> infinity input of
Lemma 2; deterministic) and ``windows`` (real windows, finite T).

Measured at the final step, for two role definitions (``_exact``: the paper's Omega(l) with any
co-occurrence; plain: at least ``role_min_count`` co-occurrences, robust to single stray tokens):

* Thm. 2(a): fraction of distinct tokens whose logit z_ml rose; Thm. 2(b): fraction of common
  tokens whose logit fell;
* Thm. 3: Spearman rho of final z_ml against P(l|m,n) over each class's distinct tokens (exploratory
  claims: the paper proves the ordering for its synthetic classes and does not claim it on WikiText);
* Thm. 4 / Fig. 6: distinct-token attention entropy against eta_Z and eta_Y/eta_Z.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pandas as pd

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.corpus import check_wikitext, load_wikitext
from dynamics.corpus.cooccurrence import cooccurrence, query_table
from dynamics.experiment import Experiment
from dynamics.scan_snap import text as sim
from dynamics.stats import Band

NAME = "scan-snap-wikitext"
RECORD = (0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 2000)


@dataclasses.dataclass(frozen=True)
class WikiYZConfig:
    data_dir: str = field("", "WikiText directory ('' = $DYNAMICS_WIKITEXT)")
    vocab_min_count: int = field(1, "corpus vocabulary cut-off: rarer tokens become <unk>")
    T: int = field(32, "window length including the query (T-1 context tokens)")
    queries: int = field(12, "number of query tokens m (the most frequent ones that qualify)")
    next_per_query: int = field(2, "next tokens n per query: K classes (m, n) per query")
    min_support: int = field(100, "a class needs at least this many windows in the training split")
    max_windows: int = field(200, "windows per class (all classes use the same number, at most this)")
    role_min_count: int = field(3, "co-occurrences needed for a token to count as seen with a next token")
    outputs: int = field(0, "decoder output size M: 0 = the corpus vocabulary (the paper's Y is M x M); "
                            "next_per_query = only the next tokens")
    mode: Literal["windows", "population"] = field("windows", "real windows, or mean counts (T -> infinity)")
    eta_z: float = field(1.0, "learning rate of the attention logits Z")
    ratio: float = field(1.0, "eta_Y / eta_Z")
    momentum: float = field(0.0, "SGD momentum (0: the gradient flow the theory analyses)")
    steps: int = field(500, "SGD steps")
    batch: int = field(64, "windows per SGD step (windows mode; population uses each class once)")
    seeds: int = field(3, "seeds (windows mode; population mode is deterministic and uses one)")
    seed: int = field(0, "root seed (window choice and sample stream)")
    dtype: Literal["float32", "float64"] = field("float64", "simulation precision")
    device: str = field("cpu", "torch device")
    sign_threshold: float = field(0.9, "claim: windows-mode fraction of tokens moving the predicted way")
    rho_threshold: float = field(0.9, "claim: windows-mode mean Spearman rho (theory: 1)")
    rise_from_ratio: float = field(2.0, "claim: entropy rises with eta_Y/eta_Z from this ratio on")

    def __post_init__(self) -> None:
        require(self.vocab_min_count >= 1, f"vocab_min_count must be >= 1, got {self.vocab_min_count}")
        require(self.T >= 3, f"T must be at least 3, got {self.T}")
        require(self.queries >= 1, f"queries must be >= 1, got {self.queries}")
        require(self.next_per_query >= 2, f"next_per_query must be >= 2 (one query, several next tokens), "
                                          f"got {self.next_per_query}")
        require(self.min_support >= 1 and self.max_windows >= 1, "min_support and max_windows must be >= 1")
        require(self.outputs == 0 or self.outputs >= self.next_per_query,
                f"outputs must be 0 (the vocabulary) or >= next_per_query, got {self.outputs}")
        require(self.role_min_count >= 1, f"role_min_count must be >= 1, got {self.role_min_count}")
        require(self.eta_z > 0 and self.ratio > 0, "eta_z and ratio must be positive")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(self.steps >= 1 and self.batch >= 1 and self.seeds >= 1, "steps, batch, seeds must be >= 1")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"unknown device {self.device!r}")

    @property
    def eta_y(self) -> float:
        return self.ratio * self.eta_z


def batch_key(cfg):
    return dataclasses.replace(cfg, eta_z=1.0, ratio=1.0)


def run_batch(cfgs, ctx):
    first = cfgs[0]
    wt = load_wikitext(first.data_dir or None, min_count=first.vocab_min_count)
    ctx.notes.update(wt.provenance())
    co = cooccurrence(wt.train, wt.vocab, T=first.T, queries=first.queries, next_per_query=first.next_per_query,
                      min_support=first.min_support, max_windows=first.max_windows,
                      min_count=first.role_min_count, seed=first.seed)
    data = sim.local_data(co, wt.train)
    exact = sim.local_data(dataclasses.replace(co, min_count=1), wt.train)
    S = 1 if first.mode == "population" else first.seeds
    Q, K = co.Q, co.K
    # runs are cell-major, then query, then seed
    q_run = np.tile(np.repeat(np.arange(Q), S), len(cfgs))
    s_run = np.tile(np.arange(S), Q * len(cfgs))
    eta_z = np.repeat([c.eta_z for c in cfgs], Q * S)
    eta_y = np.repeat([c.eta_y for c in cfgs], Q * S)
    record = [s for s in RECORD if s < first.steps] + [first.steps]
    traj = sim.train(data, q_run, s_run, eta_y, eta_z, steps=first.steps, batch=first.batch, mode=first.mode,
                     momentum=first.momentum, outputs=first.outputs or wt.V, dtype=first.dtype, device=first.device, root_seed=first.seed,
                     record=record, bar=ctx.bar)
    z0, zT = traj.Z[0], traj.Z[-1]
    m = sim.role_metrics(zT, z0, data.probs[q_run], data.distinct[q_run], data.common[q_run])
    mx = sim.role_metrics(zT, z0, exact.probs[q_run], exact.distinct[q_run], exact.common[q_run])
    H = np.stack([sim.role_metrics(z, z0, data.probs[q_run], data.distinct[q_run], data.common[q_run])["entropy"]
                  for z in traj.Z])  # (S_rec, R, K)
    vocab = co.vocab
    note = f"WikiText ({', '.join(f['release'] for f in wt.files.values())}): {wt.note}; Y/Z data from " \
           f"the {wt.train_split} split"
    per_run = len(q_run) // len(cfgs)
    out = []
    for i, _cfg in enumerate(cfgs):
        r = np.arange(i * per_run, (i + 1) * per_run)
        rr, kk = np.repeat(r, K), np.tile(np.arange(K), len(r))
        runs = pd.DataFrame({
            "query": [vocab[co.queries[q]] for q in q_run[rr]], "next": [vocab[co.next[q, k]] for q, k in zip(q_run[rr], kk)],
            "seed": s_run[rr], "n_distinct": data.distinct[q_run[rr], kk].sum(-1),
            "n_common": data.common[q_run[rr]].sum(-1),
            "distinct_up": m["distinct_up"][rr, kk], "common_down": m["common_down"][rr], "rho": m["rho"][rr, kk],
            "distinct_up_exact": mx["distinct_up"][rr, kk], "common_down_exact": mx["common_down"][rr],
            "rho_exact": mx["rho"][rr, kk],
            "entropy": m["entropy"][rr, kk], "entropy_all": m["entropy_all"][rr, kk],
            "common_mass": m["common_mass"][rr, kk], "final_loss": traj.loss[-1, rr],
            "diverged_step": traj.diverged[rr], "data": note})
        trajectory = pd.DataFrame({
            "step": np.repeat(traj.steps, len(r)),
            "entropy": np.nanmean(H[:, r, :], -1).ravel(),
            "query": np.tile([vocab[co.queries[q]] for q in q_run[r]], len(traj.steps)),
            "seed": np.tile(s_run[r], len(traj.steps))})
        tables = {"runs": runs, "trajectory": trajectory}
        if i == 0:
            tables["cooccurrence"] = query_table(co)
        # z against P for the first query's classes, seed 0: the Thm. 3 picture
        r0 = int(r[0])
        rows = []
        for k in range(K):
            for role, mask in (("distinct", data.distinct[0, k]), ("common", data.common[0] & (data.probs[0, k] > 0))):
                cols = np.flatnonzero(mask)
                rows.append(pd.DataFrame({"query": vocab[co.queries[0]], "next": vocab[co.next[0, k]], "role": role,
                                          "token": [vocab[t] for t in data.tokens[0, cols]],
                                          "P": data.probs[0, k, cols], "z": zT[r0, cols]}))
        tables["order"] = pd.concat(rows, ignore_index=True)
        out.append(tables)
    ctx.notes["cooccurrence"] = {"queries": [vocab[q] for q in co.queries], "windows_per_class": co.N, "T": co.T}
    return out


def summarize(tables, base):
    runs = tables["runs"]
    keys = ["mode", "eta_z", "ratio"]
    ok = runs[runs.diverged_step < 0]
    g = ok.groupby(keys, sort=True)
    table = g.agg(distinct_up=("distinct_up", "mean"), common_down=("common_down", "mean"),
                  rho=("rho", "mean"), distinct_up_exact=("distinct_up_exact", "mean"),
                  common_down_exact=("common_down_exact", "mean"), rho_exact=("rho_exact", "mean"),
                  entropy_mean=("entropy", "mean"), entropy_std=("entropy", "std"),
                  entropy_all=("entropy_all", "mean"), common_mass=("common_mass", "mean"),
                  final_loss=("final_loss", "mean"), n=("entropy", "count")).reset_index()
    table["n_diverged"] = runs.groupby(keys, sort=True).diverged_step.apply(lambda s: int((s >= 0).sum())).to_numpy()
    co = tables["cooccurrence"]
    co = co.drop(columns=[c for c in keys if c in co.columns]).drop_duplicates(["query", "next"])
    traj = tables["trajectory"].groupby(keys + ["step"], sort=True).entropy.mean().reset_index()
    note = "; ".join(sorted(runs["data"].unique()))
    headline = table.groupby("mode", sort=True).agg(
        distinct_up=("distinct_up", "mean"), common_down=("common_down", "mean"), rho=("rho", "mean"),
        distinct_up_exact=("distinct_up_exact", "mean"), common_down_exact=("common_down_exact", "mean"),
        rho_exact=("rho_exact", "mean")).reset_index()
    trend = []
    for _mode, t in table.groupby("mode", sort=True):
        trend.append(_trends(t, base.rise_from_ratio))
    headline["entropy_falls_with_eta_z"] = [x[0] for x in trend]
    headline["entropy_rises_with_eta_y"] = [x[1] for x in trend]
    headline["data"] = note
    table["data"] = note
    return {"table": table, "headline": headline, "runs": runs, "cooccurrence": co, "trajectory": traj,
            "order": tables["order"]}


def _trends(t: pd.DataFrame, rise_from: float) -> tuple[float, float]:
    """(fraction of ratio-series with entropy falling in eta_Z, fraction of eta_Z-series with entropy
    rising in eta_Y/eta_Z for ratio >= rise_from), by Spearman sign of the seed-mean entropy."""
    from scipy import stats

    falls = [stats.spearmanr(s.eta_z, s.entropy_mean).statistic < 0
             for _, s in t.groupby("ratio") if s.eta_z.nunique() > 1]
    rises = [stats.spearmanr(s.ratio, s.entropy_mean).statistic > 0
             for _, s in t[t.ratio >= rise_from].groupby("eta_z") if s.ratio.nunique() > 1]
    return (float(np.mean(falls)) if falls else np.nan, float(np.mean(rises)) if rises else np.nan)


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    table, traj, order = tables["table"], tables["trajectory"], tables["order"]
    modes = sorted(table["mode"].unique())
    paths = {}
    fig, axes = subplots(1, len(modes), figsize=(4.2 * len(modes), 3.2), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = table[table["mode"] == mode]
        for eta_z, line in sub.groupby("eta_z"):
            se = line.entropy_std / np.sqrt(line.n)
            ax.errorbar(line.ratio, line.entropy_mean, yerr=se.fillna(0), marker="o", ms=3, capsize=2,
                        label=f"$\\eta_Z$={eta_z:g}")
        ax.set(xscale="log", xlabel="$\\eta_Y/\\eta_Z$", title=f"{mode}")
        ax.set_xticks(sorted(sub.ratio.unique()), [f"{r:g}" for r in sorted(sub.ratio.unique())])
    axes[0][0].set_ylabel("distinct-token entropy of $c_{\\cdot|m,n}$ (nats)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Y/Z model on WikiText-2 classes (m, n): final attention entropy (mean ± s.e.)", fontsize=9)
    paths["entropy_vs_eta"] = fig

    fig, axes = subplots(1, len(modes), figsize=(4.2 * len(modes), 3.2), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = traj[(traj["mode"] == mode) & (traj.step > 0)]
        for (eta_z, ratio), line in sub.groupby(["eta_z", "ratio"]):
            if ratio in (sub.ratio.min(), sub.ratio.max()):
                ax.plot(line.step, line.entropy, marker=".", label=f"$\\eta_Z$={eta_z:g}, ratio {ratio:g}")
        ax.set(xscale="log", xlabel="SGD step", title=mode)
    axes[0][0].set_ylabel("distinct-token entropy (nats)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("Scan then snap: entropy over training (mean over queries, classes, seeds)", fontsize=9)
    paths["entropy_over_training"] = fig

    sub = order[(order.eta_z == order.eta_z.min()) & (order.ratio == order.ratio.max())]
    if len(sub):
        nexts = list(dict.fromkeys(sub["next"]))
        fig, axes = subplots(len(modes), len(nexts), figsize=(4 * len(nexts), 3 * len(modes)), squeeze=False)
        for row, mode in zip(axes, modes):
            for ax, nx in zip(row, nexts):
                part = sub[(sub["next"] == nx) & (sub["mode"] == mode)]
                for role, mk in (("common", "x"), ("distinct", "o")):
                    pr = part[part.role == role]
                    ax.scatter(pr.P, pr.z, s=8, marker=mk, label=role, alpha=0.7)
                ax.set(xscale="log", xlabel="P(l | m, n)", ylabel="final $z_{ml}$",
                       title=f"{mode}: m={part['query'].iloc[0]!r}, n={nx!r}" if len(part) else mode)
                ax.axhline(0, color="grey", lw=0.5)
                ax.legend(fontsize=7)
        fig.suptitle(f"Final attention logits against co-occurrence ($\\eta_Z$={sub.eta_z.iloc[0]:g}, "
                     f"$\\eta_Y/\\eta_Z$={sub.ratio.iloc[0]:g}, seed 0; roles with >= {cfg.role_min_count} "
                     "co-occurrences)", fontsize=9)
        fig.tight_layout()
        paths["z_vs_cooccurrence"] = fig
    return paths


_REF2, _REF3, _REF4 = "Tian et al. 2023, Thm. 2", "Tian et al. 2023, Thm. 3 / Eq. (11)", "Tian et al. 2023, Thm. 4"
_IN = ("steps", "queries", "next_per_query", "min_support", "T", "batch")
_WIN = _IN + ("seeds", "seed", "role_min_count", "max_windows")
CLAIMS = (
    ClaimSpec("thm2a-distinct-up-population", "reproduction",
              "Population mode (T -> infinity mean counts, exact gradient; the theory's regime), exact roles: every "
              "distinct token's logit z_ml rises (mean fraction over classes and cells; deterministic).",
              _REF2 + "(a)", Band.above(1.0), _IN),
    ClaimSpec("thm3-order-population", "exploratory",
              "Population mode, exact roles: final z_ml orders like P(l|m,n) over each class's distinct tokens (mean "
              "Spearman rho over classes and cells; 1% allowance for float ties; deterministic).  Exploratory: the "
              "paper does not claim co-occurrence ordering on WikiText (issue 19).",
              _REF3, Band.above(0.99), _IN),
    ClaimSpec("thm2b-common-down-population", "reproduction",
              "Population mode, exact roles: every common token's logit z_ml falls (mean fraction; deterministic).",
              _REF2 + "(b)", Band.above(1.0), _IN),
    ClaimSpec("thm2a-distinct-up-windows", "reproduction",
              "Real windows, roles with >= role_min_count co-occurrences: per seed, the mean fraction of distinct "
              "tokens whose logit rises (over classes and cells); t over seeds; >= 0.9 (theory: 1).",
              _REF2 + "(a)", Band.above(0.9), _WIN),
    ClaimSpec("thm2b-common-down-windows", "reproduction",
              "Real windows: per seed, the mean fraction of common tokens whose logit falls; t over seeds; >= 0.9.",
              _REF2 + "(b)", Band.above(0.9), _WIN),
    ClaimSpec("thm3-order-windows", "exploratory",
              "Real windows: per seed, the mean Spearman rho of z_ml against P(l|m,n) on distinct tokens; t over "
              "seeds; >= 0.9.  Exploratory: the paper does not claim co-occurrence ordering on WikiText (issue 19).",
              _REF3, Band.above(0.9), _WIN),
    ClaimSpec("entropy-falls-with-eta_z-population", "reproduction",
              "Population mode: at fixed eta_Y/eta_Z, class-mean distinct-token entropy falls as eta_Z grows "
              "(fraction of ratio series with negative Spearman rho; deterministic).", _REF4 + "(b) / Fig. 6",
              Band.above(1.0), _IN),
    ClaimSpec("entropy-rises-with-eta_y-population", "reproduction",
              "Population mode: at fixed eta_Z and eta_Y/eta_Z >= rise_from_ratio, class-mean entropy rises with eta_Y "
              "(fraction of eta_Z series with positive Spearman rho; deterministic).", _REF4 + "(c) / Fig. 6",
              Band.above(1.0), _IN + ("rise_from_ratio",)),
    ClaimSpec("entropy-falls-with-eta_z-windows", "reproduction",
              "Real windows: per seed, the mean over ratio series of Spearman rho between eta_Z and class-mean "
              "entropy; t over seeds, predicted negative.", _REF4 + "(b) / Fig. 6", Band.below(0.0), _WIN),
    ClaimSpec("entropy-rises-with-eta_y-windows", "reproduction",
              "Real windows: per seed, the share of eta_Z series (eta_Y/eta_Z >= rise_from_ratio) whose class-mean "
              "entropy rises with eta_Y/eta_Z (positive Spearman rho); t over seeds, predicted 1 (every series, the "
              "definition in force before the verdict rules, kept so the claim is not loosened after its result "
              "was seen).", _REF4 + "(c) / Fig. 6", Band.above(1.0), _WIN + ("rise_from_ratio",)),
)
_NOTE_WINDOWS = ("finite windows of real text: contexts are not i.i.d. draws from P(l|m,n), a token's role is decided "
                 "from ~100 windows per class and 'distinct' tokens still co-occur (below the threshold) with the "
                 "other next token; the population-mode claims isolate the theory's regime")
_NOTE_COMMON = ("Thm. 2(b) is proved for a single common token (Cor. 2: several, under a symmetry); real text has "
                "dozens of common tokens with unequal P(l|m,n), and those much more frequent with one next token "
                "behave like distinct tokens")


def claims(tables, cfg):
    runs = tables["runs"]
    runs = runs[runs.diverged_step < 0]
    pop, win = runs[runs["mode"] == "population"], runs[runs["mode"] == "windows"]
    out: dict = {}
    if len(pop):
        out["thm2a-distinct-up-population"] = S.exact(pop.distinct_up_exact.mean())
        out["thm3-order-population"] = S.exact(pop.rho_exact.mean())
        cd = S.exact(pop.common_down_exact.mean())
        out["thm2b-common-down-population"] = cd if cd.value >= 1 else (cd, _NOTE_COMMON)
        t = pop.groupby(["eta_z", "ratio"]).entropy.mean().rename("entropy_mean").reset_index()
        falls, rises = _trends(t, cfg.rise_from_ratio)
        out["entropy-falls-with-eta_z-population"] = None if np.isnan(falls) else S.exact(falls)
        out["entropy-rises-with-eta_y-population"] = None if np.isnan(rises) else S.exact(rises)
    if len(win):
        per_seed = win.groupby("seed")
        for col, cid in (("distinct_up", "thm2a-distinct-up-windows"), ("common_down", "thm2b-common-down-windows"),
                         ("rho", "thm3-order-windows")):
            est = S.t_interval(per_seed[col].mean().to_numpy())
            out[cid] = est if S.verdict(est, Band.above(0.9)) == "PASS" else (est, _NOTE_WINDOWS)
        cells = win.groupby(["seed", "eta_z", "ratio"]).entropy.mean().reset_index()
        if cells.eta_z.nunique() > 1:
            out["entropy-falls-with-eta_z-windows"] = S.t_interval(
                S.spearman_by_unit(cells, "seed", ["ratio"], "eta_z", "entropy"))
        high = cells[cells.ratio >= cfg.rise_from_ratio]
        if high.ratio.nunique() > 1:
            rising = [float(np.mean([np.corrcoef(s.ratio.rank(), s.entropy.rank())[0, 1] > 0
                                     for _, s in g.groupby("eta_z")])) for _, g in high.groupby("seed")]
            rho = S.spearman_by_unit(high, "seed", ["eta_z"], "ratio", "entropy")
            out["entropy-rises-with-eta_y-windows"] = (S.t_interval(rising), (
                "per-seed mean Spearman rho " + ", ".join(f"{r:.2f}" for r in rho)
                + " (positive, but the pre-registered test asks every series to rise)"))
    return out


def preflight(cfg) -> None:
    """Fail before anything is written when the WikiText directory is missing or incomplete."""
    check_wikitext(cfg.data_dir or None)


EXPERIMENT = Experiment(
    name=NAME,
    summary="Y/Z model on WikiText-2 (m, n) classes: Thm. 2 signs, Thm. 3 ordering, entropy vs eta",
    reference="Tian et al. 2023, Thms. 2-4 on real text (Sec. 7 / Fig. 6 metric)",
    config=WikiYZConfig,
    run_batch=run_batch,
    grid={"mode": ("population", "windows"), "eta_z": (0.5, 1.0, 2.0, 4.0), "ratio": (1.0, 2.0, 5.0, 10.0)},
    quick={"queries": 3, "seeds": 1, "steps": 100},
    quick_grid={"eta_z": (0.5, 2.0), "ratio": (1.0, 2.0, 10.0)},
    batch_key=batch_key,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    preflight=preflight,
)
