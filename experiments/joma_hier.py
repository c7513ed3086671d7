"""JoMA Sec. 5 and Fig. 5: a two-layer model on the hierarchical binary latent-tree (HBLT) model.

Data (dynamics.joma.hier): a tree of binary latents, each edge a binary symmetric channel with flip
probability ``flip``; leaf l present iff y_l = 1.  Co-occurrence P(y_l = 1 | y_m = 1) = (1 + q^{2h}) / 2 with
q = 1 - 2 flip and h the height of the lowest common ancestor (Thm. 5's content: closer ancestors, stronger
co-occurrence).  Trees (``tree``):

    deep16   binary, depth 4, 16 leaves: pairs at h = 1, 2, 3, 4 (co-occurrence 0.82, 0.70, 0.63, 0.58)
    deep8    binary, depth 3, 8 leaves: leaves 2k, 2k+1 share a latent beta (h = 1); beta pairs share alpha
    flat8    the same 8 leaves without the beta layer: root -> 2 alphas -> 4 leaves each

Model: two JoMA blocks trained by SGD on masked-leaf prediction (predict y_m from the other present
tokens): layer 1 (lower) mixes the context tokens with logits Z1, layer 2 (upper) lets the query m attend
over them with logits Z2.  Associations are the centred logits zeta_ml = Z[m, l] - mean_l' Z[m, l'].

Measured: per seed, the Spearman correlation between co-occurrence and zeta over all pairs at a quarter
of the run and at the end, per layer (claims use the end: in deep16 layer 2 is still near zero at a quarter); the mean zeta per LCA height over time; and for
deep8 against flat8 the gap zeta(beta siblings) - zeta(alpha cousins), pairs named by deep8's tree.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.experiment import Experiment
from dynamics.joma import hier
from dynamics.joma.theory import spearman
from dynamics.runtime import DTYPE_NAMES, even_record_steps

NAME = "joma-hier"
REF = "Tian et al. 2024 (JoMA)"
TREES = {"deep16": (2, 2, 2, 2), "deep8": (2, 2, 2), "flat8": (2, 4)}
LAYERS = ("Z1", "Z2")


@dataclasses.dataclass(frozen=True)
class HierConfig:
    tree: str = field("deep16", f"one of {', '.join(TREES)}")
    flip: float = field(0.1, "flip probability of every edge of the latent tree")
    steps: int = field(1000, "SGD steps")
    lr: float = field(0.5, "SGD learning rate (all parameters)")
    batch: int = field(32, "sequences per step and run")
    hidden: int = field(16, "hidden units of each MLP")
    records: int = field(21, "recorded steps (evenly spaced)")
    seeds: int = field(8, "independent runs per tree")
    root_seed: int = field(0, "root of the SeedSequence")
    dtype: str = field("float32", "float32 or float64")
    device: str = field("cpu", "torch device")

    def __post_init__(self) -> None:
        require(self.tree in TREES, f"tree must be one of {', '.join(TREES)}, got {self.tree!r}")
        require(0 < self.flip < 0.5, f"flip must be in (0, 0.5), got {self.flip}")
        require(self.steps >= 8 and self.lr > 0 and self.batch >= 1 and self.hidden >= 1,
                "steps >= 8, lr > 0, batch >= 1, hidden >= 1 required")
        require(self.records >= 5 and self.seeds >= 1, "records >= 5 and seeds >= 1 required")
        require(self.dtype in DTYPE_NAMES, f"dtype must be float32 or float64, got {self.dtype!r}")


def early_step(cfg) -> int:
    return cfg.steps // 4


def run_batch(cfgs, ctx):
    out = []
    for cfg in cfgs:
        tree = hier.balanced(TREES[cfg.tree])
        record = np.union1d(even_record_steps(cfg.steps, cfg.records), [early_step(cfg)])
        tr = hier.train(tree, cfg.flip, list(range(cfg.seeds)), cfg.steps, record, hidden=cfg.hidden,
                        lr=cfg.lr, batch=cfg.batch, root_seed=cfg.root_seed, dtype=cfg.dtype, device=cfg.device,
                        bar=ctx.bar)
        co = hier.cooccurrence(tree, cfg.flip)
        h = tree.lca_height()
        M = co.shape[0]
        off = ~np.eye(M, dtype=bool)
        beta = hier.balanced(TREES["deep8"]).lca_height() if M == 8 else None
        by_height, per_seed = [], []
        for layer in LAYERS:
            zeta = hier.centred_logits(getattr(tr, layer))  # (S, R, M, M)
            for k, step in enumerate(tr.steps):
                for hh in np.unique(h[off]):
                    vals = np.nanmean(zeta[k][:, h == hh], axis=-1)
                    by_height.append(pd.DataFrame({"layer": layer, "step": step, "lca_height": hh,
                                                   "cooccurrence": co[h == hh][0], "seed_index": np.arange(len(vals)),
                                                   "zeta": vals}))
            k_early, k_end = int(np.flatnonzero(tr.steps == early_step(cfg))[0]), len(tr.steps) - 1
            for r in range(zeta.shape[1]):
                row = {"layer": layer, "seed_index": r,
                       "spearman_early": spearman(co[off], zeta[k_early, r][off]),
                       "spearman_end": spearman(co[off], zeta[k_end, r][off]),
                       "loss_end": tr.loss[-1, r]}
                if beta is not None:
                    for tag, kk in (("early", k_early), ("end", k_end)):
                        z = zeta[kk, r]
                        row[f"beta_gap_{tag}"] = np.nanmean(z[beta == 1]) - np.nanmean(z[beta == 2])
                per_seed.append(row)
        out.append({"by_height": pd.concat(by_height, ignore_index=True), "per_seed": pd.DataFrame(per_seed)})
    return out


def summarize(tables, base):
    ps = tables["per_seed"]
    agg = {"spearman_early": "mean", "spearman_end": "mean", "loss_end": "mean", "seed_index": "count"}
    if "beta_gap_early" in ps:
        agg |= {"beta_gap_early": "mean", "beta_gap_end": "mean"}
    table = ps.groupby(["tree", "layer"], sort=False).agg(agg).rename(columns={"seed_index": "n_seeds"}).reset_index()
    return {"table": table, "per_seed": ps, "by_height": tables["by_height"]}


def figure(by_height: pd.DataFrame):
    from dynamics.report.figures import subplots

    trees = list(dict.fromkeys(by_height.tree))
    fig, axes = subplots(len(LAYERS), len(trees), figsize=(3.6 * len(trees), 5.6), squeeze=False, sharex="col")
    for j, tree in enumerate(trees):
        for i, layer in enumerate(LAYERS):
            ax = axes[i][j]
            g = by_height[(by_height.tree == tree) & (by_height.layer == layer)]
            for hh, s in g.groupby("lca_height"):
                m = s.groupby("step").zeta.mean()
                ax.plot(m.index, m.values, label=f"h={hh} (P={s.cooccurrence.iloc[0]:.2f})")
            ax.axhline(0, color="k", lw=0.4)
            ax.set_title(f"{tree}: {'layer 1 (lower)' if layer == 'Z1' else 'layer 2 (query)'}")
            ax.legend(fontsize=6)
        axes[-1][j].set_xlabel("SGD step")
    for i in range(len(LAYERS)):
        axes[i][0].set_ylabel("centred logit zeta (mean over pairs, seeds)")
    fig.suptitle("JoMA Fig. 5: associations by height of the lowest common ancestor (co-occurrence P)")
    return fig


def plot(tables, cfg) -> dict:
    return {"hier_associations": figure(tables["by_height"])}


CLAIMS = (
    ClaimSpec("query-layer-ordered", "reproduction",
              "deep16, layer 2 (the query's attention): at the end of the run the associations m-l are ordered by "
              "co-occurrence: per-seed Spearman(co-occurrence, zeta) over all pairs > 0.",
              f"{REF}, Sec. 5, Fig. 5(b), Thm. 5", S.Band.above(0.0), ("tree", "steps", "seeds", "flip", "lr")),
    ClaimSpec("lower-layer-ordered", "reproduction",
              "deep16, layer 1 (lower): associations at the end of the run ordered by co-occurrence: Spearman > 0.",
              f"{REF}, Sec. 5, Fig. 5(b)", S.Band.above(0.0), ("tree", "steps", "seeds", "flip", "lr")),
    ClaimSpec("strong-before-weak", "reproduction",
              "deep16, layer 2: the strongest pairs (h = 1) lead the next (h = 2): paired per-seed "
              "zeta(h=1) - zeta(h=2) at the end of the run > 0.",
              f"{REF}, Fig. 5(b)", S.Band.above(0.0), ("tree", "steps", "seeds", "flip", "lr")),
    ClaimSpec("extra-latent-query-layer", "reproduction",
              "Adding the latent layer beta (deep8 vs flat8, same leaves): layer 2 prefers the beta siblings over the "
              "alpha cousins more: beta-gap(deep8) - beta-gap(flat8) > 0 at the end of the run, paired by seed.",
              f"{REF}, Fig. 5(c)", S.Band.above(0.0), ("steps", "seeds", "flip", "lr")),
    ClaimSpec("extra-latent-lower-layer", "reproduction",
              "Adding the latent layer beta changes what the lower layer (layer 1) learns first: it associates the "
              "beta siblings first: beta-gap(deep8) - beta-gap(flat8) > 0 at the end of the run, paired by seed.",
              f"{REF}, Fig. 5(c)", S.Band.above(0.0), ("steps", "seeds", "flip", "lr")),
)


def claims(tables, cfg):
    ps = tables["per_seed"]
    bh = tables["by_height"]
    out = {}
    d16 = ps[ps.tree == "deep16"]
    for cid, layer in (("query-layer-ordered", "Z2"), ("lower-layer-ordered", "Z1")):
        g = d16[d16.layer == layer]
        if len(g):
            out[cid] = S.t_interval(g.spearman_end)
    g = bh[(bh.tree == "deep16") & (bh.layer == "Z2") & (bh.step == cfg.steps)]
    if len(g):
        a = g[g.lca_height == 1].sort_values("seed_index").zeta.to_numpy()
        b = g[g.lca_height == 2].sort_values("seed_index").zeta.to_numpy()
        out["strong-before-weak"] = S.paired(a, b)
    for cid, layer in (("extra-latent-query-layer", "Z2"), ("extra-latent-lower-layer", "Z1")):
        d = ps[(ps.tree == "deep8") & (ps.layer == layer)].sort_values("seed_index")
        f = ps[(ps.tree == "flat8") & (ps.layer == layer)].sort_values("seed_index")
        if len(d) and len(d) == len(f):
            out[cid] = S.paired(d.beta_gap_end.to_numpy(), f.beta_gap_end.to_numpy())
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="JoMA Fig. 5: two-layer model on a latent-tree model; co-occurrence orders what each layer learns",
    reference="Tian et al. 2024 (JoMA), Sec. 5, Fig. 5, Thm. 5",
    config=HierConfig,
    run_batch=run_batch,
    grid={"tree": tuple(TREES)},
    quick={"steps": 120, "seeds": 3, "batch": 16, "records": 7},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    local_workers=1,
)
