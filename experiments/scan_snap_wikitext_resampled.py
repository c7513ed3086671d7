"""Scan and Snap on real-text statistics with i.i.d. contexts: WikiText's empirical P(l | m, n), windows
resampled independently while T is swept (issue 19, real text step 1: isolates Assumption 1b).

For each query m (the most frequent qualifying ones, 2 next tokens each, as scan-snap-wikitext with
T = 32, 200 windows per class, role count 3), the classes are built by
:func:`dynamics.scan_snap.finite_t.pooled_query`: every token with a role keeps its exact empirical
P(l|m,n); role-less rare tokens are pooled into one token per class.  Training is finite_t's
multinomial-window SGD (plain SGD, zero init, eta_Y = 1, eta_Z = 0.1), one run per (T, seed), next to
the O(1/T)-corrected flow at the same T and the population flow (T = infinity).

Measured at the final step under the co-occurrence roles: fraction of distinct tokens whose logit rose
and of common tokens whose logit fell.  Theorem 2 is stated for T -> infinity and (part b) one common
token; real classes have about 100 common tokens, so the per-T fractions are reported as measurements,
not claims.  The one claim tests this package's O(1/T) prediction on real-text P: the sign of every
resolved (T, token) cell.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from dynamics import stats
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.corpus import check_wikitext, load_wikitext
from dynamics.corpus.cooccurrence import cooccurrence
from dynamics.experiment import Experiment
from dynamics.scan_snap import finite_t as ft
from dynamics.stats import Band

NAME = "scan-snap-wikitext-resampled"
T_GRID = (8, 32, 128, 512, 2048)


@dataclasses.dataclass(frozen=True)
class ResampledConfig:
    data_dir: str = field("", "WikiText directory ('' = $DYNAMICS_WIKITEXT)")
    query: int = field(0, "index of the query among the qualifying ones, by frequency (grid 0, 1)")
    T: int = field(32, "window length of the resampled contexts (grid 8 ... 2048)")
    cooc_T: int = field(32, "window length of the real windows P(l|m,n) is measured on")
    next_per_query: int = field(2, "next tokens per query (K)")
    min_support: int = field(100, "a class needs at least this many windows")
    max_windows: int = field(200, "windows per class")
    role_min_count: int = field(3, "co-occurrences for a token to have a role")
    eta_y: float = field(1.0, "decoder learning rate")
    eta_z: float = field(0.1, "attention learning rate")
    steps: int = field(300, "SGD steps")
    batch: int = field(64, "SGD batch size")
    seeds: int = field(4, "seeds per T")
    seed: int = field(0, "root seed")

    def __post_init__(self) -> None:
        require(self.query >= 0 and self.T >= 2 and self.cooc_T >= 3, "need query >= 0, T >= 2, cooc_T >= 3")
        require(self.next_per_query >= 2, "need at least 2 next tokens per query")
        require(self.eta_y > 0 and self.eta_z > 0, "learning rates must be positive")
        require(self.steps >= 1 and self.batch >= 1 and self.seeds >= 1, "steps, batch, seeds must be >= 1")


def preflight(cfg) -> None:
    check_wikitext(cfg.data_dir or None)


def batch_key(cfg):
    return dataclasses.replace(cfg, T=2)


def run_batch(cfgs, ctx):
    first = cfgs[0]
    wt = load_wikitext(first.data_dir or None)
    ctx.notes.update(wt.provenance())
    co = cooccurrence(wt.train, wt.vocab, T=first.cooc_T, queries=first.query + 1,
                      next_per_query=first.next_per_query, min_support=first.min_support,
                      max_windows=first.max_windows, min_count=first.role_min_count, seed=first.seed)
    q = first.query
    pq = ft.pooled_query(co.counts[q], first.role_min_count, int(co.queries[q]), co.next[q])
    S, Ts = first.seeds, [c.T for c in cfgs]
    streams = [s for T in Ts for s in np.random.SeedSequence([first.seed, 19, q, T]).spawn(S)]
    sgd = ft.sgd_runs(pq.classes, np.repeat(Ts, S).tolist(), [first.eta_y] * len(streams),
                      [first.eta_z] * len(streams), streams, first.batch, first.steps, [first.steps], bar=ctx.bar)
    flow_T = list(Ts) + [math.inf]
    flow = ft.CorrectedFlow(pq.classes, flow_T, [first.eta_y] * len(flow_T), [first.eta_z] * len(flow_T))
    fs = ft.role_signs(flow.descend(first.steps, [first.steps]), pq)
    ms = ft.role_signs(sgd, pq)
    role = pq.column_roles()
    keep = role != "other"
    p_max = pq.classes.probs.max(0)
    query = co.vocab[co.queries[q]]
    ctx.notes[f"query[{q}]"] = {"token": query, "next": [co.vocab[n] for n in co.next[q]], "M": pq.classes.M,
                                "distinct": int((role == "distinct").sum()), "common": int((role == "common").sum())}
    out = []
    for i, _cfg in enumerate(cfgs):
        r = slice(i * S, (i + 1) * S)
        runs = pd.DataFrame({"query_token": query, "seed_index": np.arange(S), "distinct_up": ms["distinct_up"][r],
                             "common_down": ms["common_down"][r]})
        cols = np.flatnonzero(keep)
        tokens = pd.DataFrame({"column": np.tile(cols, S), "seed_index": np.repeat(np.arange(S), len(cols)),
                               "role": np.tile(role[cols], S), "p_max": np.tile(p_max[cols], S),
                               "z_final": ms["z"][r][:, cols].ravel()})
        pred = pd.DataFrame({"column": cols, "role": role[cols], "p_max": p_max[cols], "z_pred": fs["z"][i, cols],
                             "z_population": fs["z"][len(Ts), cols]})
        summary = pd.DataFrame({"query_token": [query], "pred_distinct_up": [fs["distinct_up"][i]],
                                "pred_common_down": [fs["common_down"][i]],
                                "population_distinct_up": [fs["distinct_up"][len(Ts)]],
                                "population_common_down": [fs["common_down"][len(Ts)]]})
        out.append({"runs": runs, "tokens": tokens, "predicted": pred, "summary": summary})
    return out


def summarize(tables, base):
    runs, summ = tables["runs"], tables["summary"]
    g = runs.groupby(["query", "query_token", "T"]).agg(distinct_up=("distinct_up", "mean"),
                                                       distinct_up_sd=("distinct_up", "std"),
                                                       common_down=("common_down", "mean"),
                                                       n_seeds=("seed_index", "count")).reset_index()
    table = g.merge(summ, on=["query", "query_token", "T"])
    cells = tables["tokens"].groupby(["query", "T", "column", "role", "p_max"]).z_final.agg(
        ["mean", "std", "count"]).reset_index()
    cells = cells.merge(tables["predicted"][["query", "T", "column", "z_pred", "z_population"]],
                        on=["query", "T", "column"])
    return {"table": table, "headline": table, "cells": cells, "runs": runs, "tokens": tables["tokens"]}


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    t = tables["table"]
    fig, axes = subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for j, (qt, g) in enumerate(t.groupby("query_token")):
        g = g.sort_values("T")
        for ax, meas, pred, pop in ((axes[0], "distinct_up", "pred_distinct_up", "population_distinct_up"),
                                    (axes[1], "common_down", "pred_common_down", "population_common_down")):
            ax.plot(g["T"], g[meas], "o-", color=f"C{j}", label=f"'{qt}': SGD, resampled contexts")
            ax.plot(g["T"], g[pred], "s--", mfc="none", color=f"C{j}", label=f"'{qt}': O(1/T) flow")
            ax.axhline(g[pop].iloc[0], color=f"C{j}", ls=":", lw=1, label=f"'{qt}': population (T = inf)")
    axes[0].set(xscale="log", xlabel="T", ylabel="fraction", title="distinct tokens with $z_{ml}$ > 0 (Thm. 2a)")
    axes[1].set(xscale="log", xlabel="T", ylabel="fraction", title="common tokens with $z_{ml}$ < 0 (Thm. 2b)")
    axes[1].legend(fontsize=6)
    return {"wikitext_resampled_signs": fig}


CLAIMS = (
    ClaimSpec("wt-resampled-sign-agreement", "reproduction",
              "On WikiText's empirical P(l|m,n) with i.i.d. resampled contexts, wherever the seed-mean final logit of a "
              "role token is resolved (95% t-interval excludes 0; T >= 32), its sign is the O(1/T)-corrected "
              "flow's: fraction agreeing (Wilson).",
              "O(1/T) correction (docs/scan_snap_finite_t.md) of Tian et al. 2023, Lemma 2 / Thm. 2",
              Band.above(0.9), ("seeds", "steps", "batch", "eta_y", "eta_z", "cooc_T", "role_min_count")),
)


def claims(tables, cfg):
    c = tables["cells"]
    c = c[c["T"] >= 32]
    est, agree, resolved = stats.sign_agreement(c["mean"], c["std"], c["count"], c.z_pred)
    return {"wt-resampled-sign-agreement": (est, f"{agree} of {resolved} resolved (query, T, token) cells")}


EXPERIMENT = Experiment(
    name=NAME,
    summary="WikiText P(l|m,n) with i.i.d. resampled contexts, T swept: Thm. 2 signs vs the O(1/T) prediction",
    reference="Tian et al. 2023, Thm. 2 on real-text statistics (issue 19, step 1)",
    config=ResampledConfig,
    run_batch=run_batch,
    grid={"query": (0, 1), "T": T_GRID},
    quick={"seeds": 2, "steps": 40, "max_windows": 60},
    quick_grid={"query": (0,), "T": (32, 512)},
    batch_key=batch_key,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    preflight=preflight,
)
