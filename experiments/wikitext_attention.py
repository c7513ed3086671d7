"""Standard Transformers trained with SGD on WikiText-2 (Tian et al. 2023, Fig. 7 and App. G Fig. 10).

* Fig. 7: attention entropy over training and attention maps of the lowest layer, for a 1-layer and a
  ``deep_layers``-layer (3) model at eta = ``map_lr`` (5): attention sparsifies, then freezes.  Every
  layer's entropy is recorded; the claims are about the lowest layer, the one the figure shows.
* App. G Fig. 10: final attention entropy of the 1-layer model against the SGD learning rate eta,
  at convergence (the run is long enough that the entropy and the evaluation loss drift less than
  ``conv_tol_entropy`` / ``conv_tol_loss`` between its last two ``conv_window`` windows) on a grid
  where every run is stable (no non-finite loss; final evaluation loss below its initial value; no
  evaluation of the second half more than ``spike_tol`` above the run's best).  The Fig. 10 grid is the
  learning rates up to ``fig10_max_lr``; larger ones (map_lr = 5) serve Fig. 7 only.
* Exploratory, not a paper claim (the paper computes no co-occurrence statistics on WikiText): whether
  the learned token-to-token logits of the first layer order by co-occurrence (table ``order``).

Model (:mod:`dynamics.scan_snap.lm`): token embedding, ``n_layers`` single-head causal softmax
self-attention layers, no MLP, post-LayerNorm residual blocks, linear decoder; positional encoding
off by default (Assumption 1(a) of the theory; the paper's notebook used sinusoidal,
``--set pos=sinusoidal``).  Training: the word-language-model layout (stream in ``batch`` columns,
``bptt``-token chunks in order, cycling epochs), plain SGD at a constant learning rate with global
gradient clipping as the paper's notebook.  Without the training split the model trains on ``valid``
and is evaluated on ``test`` (every table says so).

Window statistics: "final" values are means over the evaluations in the last ``final_frac`` of the
run, "mid" over the ``final_frac`` window ending at half the run; "drift" is the mean over the last
``conv_window`` of the run minus the mean over the ``conv_window`` before it; the initial entropy is
the single evaluation at step 0.

Co-occurrence ordering: for the classes (m, n) of :mod:`dynamics.corpus.cooccurrence` on the
training split with T = bptt, the first layer's content logits q(m) . k(l) / sqrt(d) (with
pos="none" exactly the attention logits of query token m on key token l, the paper's z_ml) are
compared with P(l|m,n): Spearman rho over each class's distinct tokens, and the fraction of
distinct tokens whose (row-centred) logit rose and of common tokens whose logit fell since init.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import pandas as pd
import torch

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.corpus import check_wikitext, load_wikitext
from dynamics.corpus.cooccurrence import cooccurrence
from dynamics.engine import replica_seeds
from dynamics.experiment import Experiment
from dynamics.scan_snap.lm import LMSpec, batchify, chunk, replica_token_logits, train_replicas
from dynamics.scan_snap.text import role_metrics
from dynamics.stats import Band

NAME = "wikitext-attention"


@dataclasses.dataclass(frozen=True)
class WikiAttnConfig:
    data_dir: str = field("", "WikiText directory ('' = $DYNAMICS_WIKITEXT)")
    max_vocab: int = field(1000, "vocabulary cap incl. <unk> (0 = every training-split token); the decoder "
                                 "dominates the CPU time (2000: ~1.8x, the full 13.8k: ~12x)")
    d_model: int = field(64, "embedding / attention width (single head)")
    n_layers: int = field(1, "layers of the model swept over lr (App. G Fig. 10 and Fig. 7 top: 1)")
    deep_layers: int = field(3, "layers of Fig. 7's second model, trained at eta = map_lr only (0 = none)")
    d_ff: int = field(0, "MLP width (0 = no MLP, the theory's model)")
    pos: Literal["none", "sinusoidal", "learned"] = field("none", "positional encoding")
    norm: Literal["none", "pre", "post"] = field("post", "LayerNorm placement (post: nn.TransformerEncoderLayer)")
    dropout: float = field(0.0, "dropout (the paper's notebook: 0.2-0.3)")
    lr: float = field(5.0, "SGD learning rate eta (shared by all parameters)")
    clip: float = field(0.5, "global gradient-norm clipping (the paper's notebook: 0.5; 0 = none)")
    batch: int = field(20, "training columns (the notebook: 20)")
    bptt: int = field(35, "tokens per training chunk (the notebook: 35)")
    iters: int = field(4000, "SGD iterations, chosen from pilots so that every run converges (docs/wikitext.md)")
    eval_every: int = field(100, "iterations between entropy measurements on the evaluation split")
    eval_chunks: int = field(8, "evaluation chunks (10 columns x bptt tokens each) for entropy and loss")
    map_every: int = field(500, "iterations between recorded attention maps (Fig. 7: 0, 500, 1000, 1500)")
    map_lr: float = field(5.0, "learning rate of Fig. 7: the freezing claims, the deep model, the maps")
    fig10_max_lr: float = field(3.0, "App. G Fig. 10 grid: the swept learning rates up to this (larger ones "
                                     "showed evaluation-loss spikes in the pilots)")
    seeds: int = field(4, "seeds per learning rate and model (initialisation; the data order is fixed)")
    seed: int = field(0, "root seed")
    final_frac: float = field(0.1, "fraction of the run at its end (and before its middle) averaged into the "
                                   "final (mid) entropy and loss")
    conv_window: float = field(0.25, "convergence: drift = mean over the last conv_window of the run minus the "
                                     "mean over the conv_window before it")
    conv_tol_entropy: float = field(0.1, "convergence: |entropy drift| at most this (nats; about half the gap "
                                         "between adjacent learning rates of the grid in the pilots)")
    conv_tol_loss: float = field(0.05, "convergence: |evaluation-loss drift| at most this (nats)")
    spike_tol: float = field(0.3, "stability: every evaluation loss of the second half at most this above the "
                                  "run's best (nats)")
    queries: int = field(12, "co-occurrence ordering (exploratory): number of query tokens")
    next_per_query: int = field(2, "co-occurrence ordering (exploratory): next tokens per query")
    min_support: int = field(100, "co-occurrence ordering (exploratory): windows a class needs")
    role_min_count: int = field(3, "co-occurrences for a token to count as seen with a next token")
    freeze_ratio: float = field(0.25, "claim: entropy change over the second half <= this x the first half's")
    device: str = field("cpu", "torch device")

    def __post_init__(self) -> None:
        require(self.max_vocab == 0 or self.max_vocab >= 2, f"max_vocab must be 0 or >= 2, got {self.max_vocab}")
        require(self.d_model >= 1 and self.d_ff >= 0, "d_model must be >= 1 and d_ff >= 0")
        require(self.n_layers >= 1 and self.deep_layers >= 0, "n_layers must be >= 1 and deep_layers >= 0")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.clip >= 0, f"clip must be >= 0, got {self.clip}")
        require(self.batch >= 1 and self.bptt >= 2, "batch must be >= 1 and bptt >= 2")
        require(self.iters >= 2 and self.eval_every >= 1 and self.map_every >= 1 and self.eval_chunks >= 1,
                "iters >= 2, eval_every, map_every, eval_chunks >= 1")
        require(self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}")
        require(0 < self.final_frac < self.conv_window <= 0.5, "need 0 < final_frac < conv_window <= 0.5")
        require(self.conv_tol_entropy > 0 and self.conv_tol_loss > 0 and self.spike_tol > 0,
                "conv_tol_entropy, conv_tol_loss and spike_tol must be positive")
        require(self.queries >= 1 and self.next_per_query >= 2 and self.min_support >= 1 and self.role_min_count >= 1,
                "queries >= 1, next_per_query >= 2, min_support >= 1, role_min_count >= 1")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"unknown device {self.device!r}")


def spec_of(cfg: WikiAttnConfig, vocab: int, n_layers: int) -> LMSpec:
    return LMSpec(vocab=vocab, d_model=cfg.d_model, n_layers=n_layers, d_ff=cfg.d_ff, pos=cfg.pos, norm=cfg.norm,
                  dropout=cfg.dropout, max_len=max(cfg.bptt, 2))


def eval_chunks(ids: torch.Tensor, cfg: WikiAttnConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``eval_chunks`` chunks spread evenly over the evaluation stream (10 columns, as the notebook's
    eval batch): inputs and targets (C, 10, bptt)."""
    source = batchify(ids, 10)
    starts = np.linspace(0, source.shape[0] - cfg.bptt - 2, cfg.eval_chunks).astype(int)
    xs, ys = zip(*(chunk(source, int(i), cfg.bptt) for i in starts))
    return torch.stack(xs), torch.stack(ys)


def centred(z: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Content logits (Q, V), each row minus its mean over the query's context tokens (the LM's logits
    are defined up to a per-query constant; the Y/Z model keeps the row sum fixed instead)."""
    return z - np.where(support, z, 0.0).sum(-1, keepdims=True) / support.sum(-1, keepdims=True)


def window_mean(it: np.ndarray, y: np.ndarray, end: float, width: float) -> float:
    """Mean of y over the evaluations with end - width < it <= end (the one at ``end`` or, if none
    falls in the window, the nearest earlier one)."""
    keep = (it > end - width) & (it <= end)
    if keep.any():
        return float(np.mean(y[keep]))
    return float(y[it <= end][-1])


def run_measures(iters: np.ndarray, entropy: np.ndarray, loss: np.ndarray, cfg: WikiAttnConfig) -> dict:
    """One run's (one layer's) window statistics: initial, mid, final entropy and its drift between the
    last two ``conv_window`` windows, the same for the evaluation loss, and the convergence / stability flags
    (definitions in the module docstring).  ``iters`` (E,) ascending from 0, entropy and loss (E,)."""
    T, w, cw = float(iters[-1]), cfg.final_frac * float(iters[-1]), cfg.conv_window * float(iters[-1])
    fin_h, fin_l = window_mean(iters, entropy, T, w), window_mean(iters, loss, T, w)
    # whole-window means: the evaluation loss swings by ~0.1-0.3 nats between evaluations with the topic
    # of the last training chunks (constant-lr SGD), so single evaluations cannot show a plateau
    drift_h = window_mean(iters, entropy, T, cw) - window_mean(iters, entropy, T - cw, cw)
    drift_l = window_mean(iters, loss, T, cw) - window_mean(iters, loss, T - cw, cw)
    peak = float(np.max(loss[iters >= T / 2]))
    return {"entropy_init": float(entropy[0]), "entropy_mid": window_mean(iters, entropy, T / 2, w),
            "entropy_final": fin_h, "entropy_drift": drift_h, "eval_loss": fin_l, "loss_drift": drift_l,
            "loss_best": float(np.min(loss)),
            "converged": bool(abs(drift_h) <= cfg.conv_tol_entropy and abs(drift_l) <= cfg.conv_tol_loss),
            "loss_peak": peak,
            "stable": bool(np.isfinite(loss).all() and peak <= np.min(loss) + cfg.spike_tol
                           and fin_l < float(loss[0]))}


def batch_key(cfg: WikiAttnConfig):
    """Cells that differ only in the learning rate train together as replicas of one program."""
    return dataclasses.replace(cfg, lr=1.0)


def run_batch(cfgs, ctx):
    base = cfgs[0]
    wt = load_wikitext(base.data_dir or None, max_vocab=base.max_vocab or None)
    ctx.notes.update(wt.provenance())
    note = f"WikiText ({', '.join(f['release'] for f in wt.files.values())}): {wt.note}"
    co = cooccurrence(wt.train, wt.vocab, T=base.bptt, queries=base.queries, next_per_query=base.next_per_query,
                      min_support=base.min_support, min_count=base.role_min_count, seed=base.seed)
    dev = torch.device(base.device)
    train_src = batchify(torch.as_tensor(wt.train, device=dev), base.batch)
    ex, ey = eval_chunks(torch.as_tensor(wt.eval, device=dev), base)
    queries = torch.as_tensor(co.queries, device=dev)
    support = co.counts.sum(1) > 0  # (Q, V): tokens in the query's contexts
    # the swept model over every lr of the batch; the deep model of Fig. 7 at map_lr only.  Replica
    # (lr, seed): the init depends on the seed only, so learning rates are paired.
    models = [(base.n_layers, [c.lr for c in cfgs], (base.seed, 0x1A77))]
    if base.deep_layers and base.deep_layers != base.n_layers and any(c.lr == base.map_lr for c in cfgs):
        models.append((base.deep_layers, [base.map_lr], (base.seed, 0x1A77, base.deep_layers)))
    out = [{"runs": [], "trajectory": [], "order": [], "maps": []} for _ in cfgs]
    for n_layers, lrs, entropy_key in models:
        spec = spec_of(base, wt.V, n_layers)
        seeds = replica_seeds(np.random.SeedSequence(list(entropy_key)), base.seeds)
        cells = [(lr, s) for lr in lrs for s in range(base.seeds)]
        map_at = [i for i, (lr, s) in enumerate(cells) if lr == base.map_lr and s == 0]
        z0: list[np.ndarray] = []

        def logits(params, spec=spec) -> np.ndarray:
            return replica_token_logits(params, spec, queries)[:, 0].double().cpu().numpy()  # (R, Q, V), head 0

        def on_init(params, z0=z0, logits=logits) -> None:
            z0.append(logits(params))

        with ctx.bar(base.iters, f"{n_layers}-layer: {len(cells)} replicas (lr x seed)", unit="it") as bar:
            run = train_replicas(spec, [seeds[s] for _, s in cells], [lr for lr, _ in cells], train_src, ex, ey,
                                 base.iters, base.bptt, base.clip, base.eval_every, base.map_every,
                                 map_at[0] if map_at else -1, base.device, on_init=on_init,
                                 bar=bar)
        z_final = logits(run.params)
        traj_all = pd.DataFrame(run.trajectory)
        for r, (lr, s) in enumerate(cells):
            tables = out[[c.lr for c in cfgs].index(lr)]
            m = role_metrics(centred(z_final[r], support), centred(z0[0][r], support), co.probs, co.distinct,
                             co.common)
            K = co.K
            tables["order"].append(pd.DataFrame({
                "n_layers": n_layers, "seed": s, "query": np.repeat([wt.vocab[q] for q in co.queries], K),
                "next": [wt.vocab[n] for n in co.next.ravel()], "n_distinct": co.distinct.sum(-1).ravel(),
                "rho": m["rho"].ravel(), "distinct_up": m["distinct_up"].ravel(),
                "common_down": np.repeat(m["common_down"], K)}))
            traj = traj_all[traj_all.replica == r].drop(columns="replica").reset_index(drop=True)
            traj.insert(0, "seed", s)
            traj.insert(0, "n_layers", n_layers)
            tables["trajectory"].append(traj)
            if r in map_at:
                for it, a in run.maps.items():
                    a = a.double().cpu().numpy()
                    q, k = np.tril_indices(a.shape[0])
                    tables["maps"].append(pd.DataFrame({"n_layers": n_layers, "iter": it, "query_pos": q,
                                                        "key_pos": k, "weight": a[q, k], "seed": s}))
            for layer, lt in traj.groupby("layer", sort=True):
                row = {"n_layers": n_layers, "layer": layer, "seed": s,
                       **run_measures(lt.iter.to_numpy(), lt.entropy.to_numpy(), lt.eval_loss.to_numpy(), base),
                       "diverged_iter": int(run.diverged[r])}
                row["eval_ppl"] = math.exp(min(row["eval_loss"], 50))
                first = layer == 0  # the content logits (and so the ordering) are the first layer's
                row.update({"rho": _nanmean(m["rho"]) if first else math.nan,
                            "distinct_up": _nanmean(m["distinct_up"]) if first else math.nan,
                            "common_down": _nanmean(m["common_down"]) if first else math.nan,
                            "uniform_entropy": float(np.mean(np.log(np.arange(2, base.bptt + 1)))),
                            "vocab": wt.V, "data": note})
                if run.diverged[r] >= 0:
                    row["stable"] = row["converged"] = False
                tables["runs"].append(row)
    return [{k: (pd.concat(v, ignore_index=True) if k != "runs" else pd.DataFrame(v))
             for k, v in t.items() if len(v)} for t in out]


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def summarize(tables, base):
    runs = tables["runs"]
    g = runs.groupby(["n_layers", "layer", "lr"], sort=True)
    table = g.agg(entropy_final=("entropy_final", "mean"), entropy_std=("entropy_final", "std"),
                  entropy_init=("entropy_init", "mean"), entropy_mid=("entropy_mid", "mean"),
                  entropy_drift=("entropy_drift", "mean"), eval_loss=("eval_loss", "mean"),
                  loss_drift=("loss_drift", "mean"), eval_ppl=("eval_ppl", "mean"), rho=("rho", "mean"),
                  distinct_up=("distinct_up", "mean"), common_down=("common_down", "mean"),
                  uniform_entropy=("uniform_entropy", "first"), n_seeds=("seed", "count"),
                  n_converged=("converged", "sum"), n_stable=("stable", "sum"),
                  n_diverged=("diverged_iter", lambda s: int((s >= 0).sum()))).reset_index()
    note = "; ".join(sorted(runs["data"].unique()))
    table["data"] = note
    headline = table[["n_layers", "layer", "lr", "entropy_init", "entropy_final", "entropy_std", "entropy_drift",
                      "eval_ppl", "n_converged", "n_stable", "n_seeds"]].copy()
    headline["data"] = note
    out = {"table": table, "headline": headline, "runs": runs, "trajectory": tables["trajectory"],
           "order": tables["order"]}
    if "maps" in tables:
        out["maps"] = tables["maps"]
    return out


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    paths = {}
    traj, table = tables["trajectory"], tables["table"]
    depths = sorted(traj.n_layers.unique())
    fig, axes = subplots(1, len(depths) + 1, figsize=(4.2 * (len(depths) + 1), 3.3), squeeze=False)
    axes = axes[0]
    for ax, n in zip(axes, depths):
        part = traj[traj.n_layers == n]
        for (lr, layer), p in part.groupby(["lr", "layer"]):
            mean = p.groupby("iter").entropy.mean()
            label = f"$\\eta$={lr:g}" + (f", layer {layer + 1}" if n > 1 else "")
            ax.plot(mean.index, mean.values, label=label)
        ax.set(xlabel="SGD iteration", ylabel="attention entropy (nats)",
               title=f"{n}-layer: entropy over training (Fig. 7)")
        ax.legend(fontsize=7)
    fig10 = table[(table.n_layers == cfg.n_layers) & (table.layer == 0)]
    axes[-1].errorbar(fig10.lr, fig10.entropy_final, yerr=fig10.entropy_std.fillna(0), marker="o", capsize=3)
    axes[-1].set(xlabel="learning rate $\\eta$", ylabel="final attention entropy (nats)",
                 title=f"{cfg.n_layers}-layer: final entropy vs $\\eta$ (App. G Fig. 10), mean ± std")
    fig.suptitle(f"Transformers on WikiText-2 ({table['data'].iloc[0]})", fontsize=7)
    paths["entropy"] = fig
    if "maps" in tables:
        maps = tables["maps"]
        iters = sorted(maps["iter"].unique())
        depths = sorted(maps.n_layers.unique())
        fig, axes = subplots(len(depths), len(iters), figsize=(2.6 * len(iters), 2.8 * len(depths)), squeeze=False)
        L = int(maps.query_pos.max()) + 1
        for row, n in zip(axes, depths):
            for ax, it in zip(row, iters):
                part = maps[(maps["iter"] == it) & (maps.n_layers == n)]
                a = np.zeros((L, L))
                a[part.query_pos.to_numpy(), part.key_pos.to_numpy()] = part.weight.to_numpy()
                ax.imshow(a, cmap="viridis", vmin=0, vmax=1)
                ax.set(title=f"{n}-layer, iteration {it}", xticks=[], yticks=[])
        fig.suptitle(f"lowest-layer attention maps, first evaluation chunk ($\\eta$={cfg.map_lr:g}, seed 0)",
                     fontsize=8)
        paths["attention_maps"] = fig
    return paths


_IN = ("seeds", "seed", "iters", "d_model", "max_vocab", "batch", "bptt", "final_frac")
_CONV = ("n_layers", "conv_window", "conv_tol_entropy", "conv_tol_loss", "spike_tol")
CLAIMS = (
    ClaimSpec("entropy-falls-with-lr", "reproduction",
              "At convergence, the 1-layer model's final attention entropy falls as the SGD learning rate grows: "
              "per seed, -Spearman rho of final entropy against eta over the grid's rates <= fig10_max_lr "
              "(1 = strictly decreasing; with 4 rates one adjacent swap gives 0.8); t over seeds.  Decided only "
              "if every run of that grid is stable and converged (criteria in the config), else INCONCLUSIVE.",
              "Tian et al. 2023, App. G Fig. 10", Band.above(0.9), _IN + _CONV + ("fig10_max_lr",)),
    ClaimSpec("attention-sparsifies", "reproduction",
              "The 1-layer model's final attention entropy is below its value at initialisation: per seed, the "
              "mean over learning rates of (initial - final entropy); t over seeds, predicted positive.",
              "Tian et al. 2023, Fig. 7 (top)", Band.above(0.0), _IN + ("n_layers",)),
    ClaimSpec("attention-freezes", "reproduction",
              "At eta = map_lr, the 1-layer model's entropy moves much less in the second half of training than "
              "in the first: per seed, |mid - final| / |initial - mid|; t over seeds; <= 0.25.",
              "Tian et al. 2023, Fig. 7 (top) / Thm. 4 (snapping)", Band.between(0.0, 0.25),
              _IN + ("n_layers", "map_lr")),
    ClaimSpec("attention-sparsifies-deep", "reproduction",
              "The deep_layers-layer (3) model's lowest-layer attention entropy at eta = map_lr ends below its "
              "value at initialisation: per seed, initial - final entropy; t over seeds, predicted positive.",
              "Tian et al. 2023, Fig. 7 (bottom)", Band.above(0.0), _IN + ("deep_layers", "map_lr")),
    ClaimSpec("attention-freezes-deep", "reproduction",
              "At eta = map_lr, the deep_layers-layer (3) model's lowest-layer entropy moves much less in the second "
              "half of training than in the first: per seed, |mid - final| / |initial - mid|; t over seeds; "
              "<= 0.25.",
              "Tian et al. 2023, Fig. 7 (bottom) / Thm. 4 (snapping)", Band.between(0.0, 0.25),
              _IN + ("deep_layers", "map_lr")),
)

_SNAP_NOTE = ("the entropy keeps falling: Thm. 4's snapping phase slows the logits to O(ln ln t) growth but never "
              "stops them")


def _freeze(runs: pd.DataFrame):
    first = (runs.entropy_init - runs.entropy_mid).abs()
    second = (runs.entropy_mid - runs.entropy_final).abs()
    est = S.t_interval((second / first.replace(0, np.nan)).to_numpy())
    return est if S.verdict(est, Band.between(0.0, 0.25)) == "PASS" else (est, _SNAP_NOTE)


def claims(tables, cfg):
    runs = tables["runs"]
    low = runs[runs.layer == 0]
    swept = low[low.n_layers == cfg.n_layers]
    ok = swept[swept.diverged_iter < 0]
    out: dict = {}
    if not ok.empty:
        grid10 = swept[swept.lr <= cfg.fig10_max_lr]
        if grid10.lr.nunique() > 2:
            rho = S.spearman_by_unit(grid10[grid10.diverged_iter < 0], "seed", ["seed"], "lr", "entropy_final",
                                     min_points=3)
            est = S.t_interval(-rho)
            bad = grid10[~(grid10.stable & grid10.converged)]
            if len(bad):
                which = ", ".join(f"eta={r.lr:g} seed {r.seed} ({'unstable' if not r.stable else 'not converged'})"
                                  for r in bad.itertuples())
                est = (None, f"measured {est.value:.3g} [{est.low:.3g}, {est.high:.3g}], but not every run is "
                             f"stable and converged: {which}")
            out["entropy-falls-with-lr"] = est
        out["attention-sparsifies"] = S.t_interval(
            ok.assign(drop=ok.entropy_init - ok.entropy_final).groupby("seed").drop.mean().to_numpy())
        fig7 = ok[ok.lr == cfg.map_lr]
        if len(fig7):
            out["attention-freezes"] = _freeze(fig7)
    deep = low[(low.n_layers == cfg.deep_layers) & (low.lr == cfg.map_lr) & (low.diverged_iter < 0)]
    if cfg.deep_layers and cfg.deep_layers != cfg.n_layers and len(deep):
        out["attention-sparsifies-deep"] = S.t_interval((deep.entropy_init - deep.entropy_final).to_numpy())
        out["attention-freezes-deep"] = _freeze(deep)
    return out


def preflight(cfg) -> None:
    """Fail before anything is written when the WikiText directory is missing or incomplete."""
    check_wikitext(cfg.data_dir or None)


EXPERIMENT = Experiment(
    name=NAME,
    summary="1- and 3-layer Transformers on WikiText-2: attention entropy over training, maps, entropy vs eta "
            "at convergence; co-occurrence ordering (exploratory)",
    reference="Tian et al. 2023, Fig. 7 and App. G Fig. 10",
    config=WikiAttnConfig,
    run_batch=run_batch,
    grid={"lr": (1.5, 2.0, 2.5, 3.0, 5.0)},
    batch_key=batch_key,
    quick={"seeds": 1, "iters": 150, "eval_every": 25, "map_every": 50, "d_model": 32, "max_vocab": 500,
           "eval_chunks": 4, "queries": 4},
    quick_grid={"lr": (1.5, 2.0, 3.0, 5.0)},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    preflight=preflight,
)
