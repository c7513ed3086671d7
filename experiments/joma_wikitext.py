"""JoMA Figs. 6/8 (reduced): attention entropy per layer of a multilayer Transformer trained on WikiText-2.

The paper (official ``joma/draw_figure_6.py``, ``draw_figure_8.py``) trains 1-10 layer Transformers on
WikiText-2/103 with Adam (lr 1e-4 in Fig. 6; Fig. 8 varies lr) for ~100k minibatches and reports that the
attention entropy first drops and then bounces back.  On two CPU cores we train a small model
(:mod:`dynamics.scan_snap.lm`: ``layers`` pre-LN blocks with a ReLU MLP, no positional encoding, d = 64) with Adam at
a larger lr (1e-3, which compresses the time axis, as Fig. 8's lr sweep does) for ``iters`` minibatches,
and measure the mean causal-attention entropy per layer on fixed evaluation chunks.  Without the
training split (this project's copy has valid/test only) the model trains on ``valid`` and is evaluated
on ``test``.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.corpus import check_wikitext, load_wikitext
from dynamics.experiment import Experiment
from dynamics.joma import analysis
from dynamics.joma.wikitext import train_lm
from dynamics.runtime import threads
from dynamics.scan_snap.lm import batchify

NAME = "joma-wikitext"
REF = "Tian et al. 2024 (JoMA)"


@dataclasses.dataclass(frozen=True)
class WikiConfig:
    data_dir: str = field("", "WikiText directory ('' = $DYNAMICS_WIKITEXT)")
    max_vocab: int = field(2000, "vocabulary cap incl. <unk>")
    layers: int = field(2, "Transformer blocks")
    d_model: int = field(64, "width (single head)")
    d_ff: int = field(256, "MLP width (ReLU)")
    lr: float = field(1e-3, "Adam learning rate")
    batch: int = field(16, "training columns")
    bptt: int = field(32, "tokens per chunk")
    iters: int = field(1500, "Adam steps")
    eval_every: int = field(50, "steps between entropy measurements")
    delta: float = field(0.05, "nats: entropy rise above its running minimum that marks a turn")
    seeds: int = field(5, "independent runs (init and data order from SeedSequence)")
    root_seed: int = field(0, "root of the SeedSequence")
    device: str = field("cpu", "torch device")

    def __post_init__(self) -> None:
        require(self.layers >= 1 and self.d_model >= 1 and self.d_ff >= 1, "layers, d_model, d_ff >= 1")
        require(self.lr > 0 and self.batch >= 1 and self.bptt >= 2, "lr > 0, batch >= 1, bptt >= 2")
        require(self.iters >= 2 * self.eval_every >= 2, "need iters >= 2 eval_every >= 2")
        require(self.seeds >= 1 and self.max_vocab >= 2, "seeds >= 1, max_vocab >= 2")


def run_batch(cfgs, ctx):
    with threads(1):  # small tensors: one thread is fastest, and the caller's setting is restored
        return [run_cell(cfg, ctx) for cfg in cfgs]


def run_cell(cfg, ctx):
    wt = load_wikitext(cfg.data_dir or None, max_vocab=cfg.max_vocab)
    ctx.notes["data"] = getattr(wt, "note", "")
    src = batchify(torch.as_tensor(wt.train, device=cfg.device), cfg.batch)
    ex = batchify(torch.as_tensor(wt.eval, device=cfg.device), 10)[: 2 * cfg.bptt].t()  # (10, 2 bptt)
    with ctx.bar(cfg.iters * cfg.seeds, NAME) as bar:
        traj = pd.concat([train_lm(cfg, s, src, ex, wt.V, bar) for s in range(cfg.seeds)], ignore_index=True)
    turning = []
    for layer, g in traj.groupby("layer"):
        H = g.pivot(index="iter", columns="seed_index", values="entropy")
        turning.append(analysis.turning_frame(H.index.to_numpy(), H.to_numpy(), cfg.delta).assign(layer=layer))
    return {"trajectory": traj, "turning": pd.concat(turning, ignore_index=True)}


def summarize(tables, base):
    t = tables["turning"]
    table = t.groupby("layer").agg(n_seeds=("seed_index", "count"), entropy_init=("entropy_init", "mean"),
                                   entropy_min=("entropy_min", "mean"), entropy_final=("entropy_final", "mean"),
                                   drop=("entropy_drop", "mean"), rebound=("entropy_rebound", "mean"),
                                   runs_turning=("turning_step", "count"),
                                   turning_iter_median=("turning_step", "median")).reset_index()
    return {"table": table, "turning": t, "trajectory": tables["trajectory"]}


def figure(traj: pd.DataFrame):
    from dynamics.report.figures import subplots

    fig, ax = subplots(figsize=(5, 3.2))
    for layer, g in traj.groupby("layer"):
        m = g.groupby("iter").entropy.mean()
        ax.plot(m.index, m.values, label=f"layer {layer}")
    ax.set(xlabel="Adam step", ylabel="attention entropy (nats)", title="WikiText-2: mean over seeds")
    ax.legend()
    return fig


def plot(tables, cfg) -> dict:
    return {"wikitext_entropy": figure(tables["trajectory"])}


CLAIMS = (
    ClaimSpec("lowest-layer-drops", "reproduction",
              "WikiText-2, lowest layer: attention entropy first drops: H(0) - min H > 0.05 nats.",
              f"{REF}, Figs. 6, 8", S.Band.above(0.05), ("layers", "lr", "iters", "seeds", "bptt", "batch")),
    ClaimSpec("lowest-layer-bounces-back", "reproduction",
              "WikiText-2, lowest layer: after its minimum the entropy bounces back: H(end) - min H > 0.05 nats.",
              f"{REF}, Figs. 6, 8", S.Band.above(0.05), ("layers", "lr", "iters", "seeds", "bptt", "batch")),
)


def claims(tables, cfg):
    t = tables["turning"]
    low = t[t.layer == 0].sort_values("seed_index")
    if not len(low):
        return {}
    return {"lowest-layer-drops": S.t_interval(low.entropy_drop),
            "lowest-layer-bounces-back": S.t_interval(low.entropy_rebound)}


def preflight(cfg) -> None:
    check_wikitext(cfg.data_dir or None)


EXPERIMENT = Experiment(
    name=NAME,
    summary="JoMA Figs. 6/8 (reduced): per-layer attention entropy of a 2-layer Transformer on WikiText-2",
    reference="Tian et al. 2024 (JoMA), Figs. 6, 8",
    config=WikiConfig,
    run_batch=run_batch,
    quick={"iters": 120, "seeds": 2, "eval_every": 20},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    preflight=preflight,
    local_workers=1,
)
