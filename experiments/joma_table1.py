"""JoMA Table 1: the hidden units of a multilayer model trained on the latent hierarchy align with its latents.

The paper's Table 1 (official scripts: ``decoder_only_hier.py`` computes, ``joma/draw_table_1.py`` tabulates
``score0``, ``score1``) trains a two-layer Transformer on sequences from a latent hierarchy and, after
training, correlates every MLP hidden unit (max-pooled over the positions of a sequence) with every latent
variable over a test batch; per latent the best unit's correlation is kept, and the score of a layer is the
mean over the latents of one level: layer 0 against the lowest latents (those that emit tokens), layer 1
against the next level.  Reported: high at layer 0, lower at layer 1.

Here (one home per concept) the model and data are ``joma-hier``'s: the binary latent tree ``deep16``
(16 leaf tokens; latents at levels 1-3, level 3 emitting the tokens; flip 0.1 per edge) and the two-block
JoMA model trained by SGD on masked-leaf prediction, with the same defaults and seed streams, so the trained
runs are the ones whose attention ``joma-hier`` reads.  Measured (``dynamics.joma.hier.alignment_frame``):
NCorr(layer, level) = mean over the latents of that level of max over hidden units of Pearson(latent, unit),
for the lower MLP (layer 1) and the upper MLP (layer 2), at every recorded step.  Baselines: the same
measure at initialisation (step 0, paired by seed), and the chance level (latents of permuted samples).
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
from dynamics.runtime import even_record_steps

from .joma_hier import TREES, HierConfig

NAME = "joma-table1"
REF = "Tian et al. 2024 (JoMA)"
LAYERS = ("lower", "upper")


@dataclasses.dataclass(frozen=True)
class Table1Config(HierConfig):
    """joma-hier's configuration (same model, data and seed streams), run longer and with more seeds."""

    steps: int = field(4000, "SGD steps (joma-hier stops at 1000, before the loss has converged)")
    records: int = field(9, "recorded steps (evenly spaced) at which the alignment is measured")
    seeds: int = field(16, "independent runs")
    eval_batch: int = field(1024, "test sequences (with their latents) per run")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.eval_batch >= 16, f"eval_batch must be >= 16, got {self.eval_batch}")


def token_level(tree: str) -> int:
    """The level of the latents that emit the tokens (the parents of the leaves)."""
    return len(TREES[tree]) - 1


def run_batch(cfgs, ctx):
    out = []
    for cfg in cfgs:
        tree = hier.balanced(TREES[cfg.tree])
        seeds = list(range(cfg.seeds))
        tr = hier.train(tree, cfg.flip, seeds, cfg.steps, even_record_steps(cfg.steps, cfg.records),
                        hidden=cfg.hidden, lr=cfg.lr, batch=cfg.batch, root_seed=cfg.root_seed, dtype=cfg.dtype,
                        device=cfg.device, keep_mlp=True, bar=ctx.bar)
        align = hier.alignment_frame(tree, cfg.flip, tr, seeds, eval_batch=cfg.eval_batch, root_seed=cfg.root_seed,
                                     dtype=cfg.dtype, device=cfg.device)
        loss = pd.DataFrame({"seed_index": np.tile(np.arange(cfg.seeds), len(tr.steps)),
                             "step": np.repeat(tr.steps, cfg.seeds), "loss": tr.loss.ravel()})
        out.append({"alignment": align, "loss": loss})
    return out


def summarize(tables, cfg):
    """per_seed: NCorr per seed, layer, level and step (mean over the latents of the level); table: the
    Table 1 layout at the end of the run, with the initialisation and chance baselines."""
    a = tables["alignment"]
    per_seed = (a.groupby(["tree", "seed_index", "step", "layer", "level"], sort=True)
                [["ncorr", "ncorr_shuffled"]].mean().reset_index())
    end = per_seed[per_seed.step == per_seed.step.max()].drop(columns="step")
    init = per_seed[per_seed.step == 0][["tree", "seed_index", "layer", "level", "ncorr"]]
    m = end.merge(init.rename(columns={"ncorr": "ncorr_init"}), on=["tree", "seed_index", "layer", "level"])
    table = (m.groupby(["tree", "layer", "level"], sort=True)
             .agg(ncorr_trained=("ncorr", "mean"), ncorr_trained_sd=("ncorr", "std"),
                  ncorr_init=("ncorr_init", "mean"), ncorr_chance=("ncorr_shuffled", "mean"),
                  n_seeds=("seed_index", "count")).reset_index())
    return {"table": table, "per_seed": per_seed, "loss": tables["loss"]}


def plot(tables, cfg) -> dict:
    return {"table1_alignment": hier.alignment_figure(tables["per_seed"])}


_INPUTS = ("tree", "steps", "seeds", "flip", "lr", "hidden", "eval_batch")
CLAIMS = (
    ClaimSpec("lower-layer-aligns", "reproduction",
              "deep16: after training, the lower MLP's hidden units align with the latents that emit the tokens "
              "(level 3) more than at initialisation: NCorr(lower, level 3) trained - init > 0, paired by seed.",
              f"{REF}, Table 1 (layer 0), Sec. 5", S.Band.above(0.0), _INPUTS),
    ClaimSpec("upper-layer-aligns", "reproduction",
              "deep16: after training, the upper MLP's hidden units align with the next latent level (level 2) "
              "more than at initialisation: NCorr(upper, level 2) trained - init > 0, paired by seed.",
              f"{REF}, Table 1 (layer 1), Sec. 5", S.Band.above(0.0), _INPUTS),
    ClaimSpec("lower-layer-aligns-better", "reproduction",
              "deep16: as in Table 1 (layer 0 above layer 1), the trained lower layer's alignment with its level "
              "exceeds the trained upper layer's with its level: NCorr(lower, level 3) - NCorr(upper, level 2) > 0, "
              "paired by seed.",
              f"{REF}, Table 1", S.Band.above(0.0), _INPUTS),
    ClaimSpec("upper-layer-carries-higher-latents", "reproduction",
              "deep16: the hierarchy is split across layers: training raises the upper layer's alignment with the "
              "level-2 latents more than the lower layer's: gain(upper, level 2) - gain(lower, level 2) > 0, "
              "gain = trained - init NCorr, paired by seed.",
              f"{REF}, Table 1, Sec. 5 (layer l composes level-l latents)", S.Band.above(0.0), _INPUTS),
)


def _by_seed(ps, tree, step, layer, level) -> np.ndarray:
    g = ps[(ps.tree == tree) & (ps.step == step) & (ps.layer == layer) & (ps.level == level)]
    return g.sort_values("seed_index").ncorr.to_numpy()


def claims(tables, cfg):
    ps = tables["per_seed"]
    if not (ps.tree == "deep16").any():
        return {}
    end, lv = int(ps.step.max()), token_level("deep16")

    def gain(layer, level):
        return _by_seed(ps, "deep16", end, layer, level) - _by_seed(ps, "deep16", 0, layer, level)

    lower_end = _by_seed(ps, "deep16", end, "lower", lv)
    upper_end = _by_seed(ps, "deep16", end, "upper", lv - 1)
    return {
        "lower-layer-aligns": S.t_interval(gain("lower", lv)),
        "upper-layer-aligns": S.t_interval(gain("upper", lv - 1)),
        "lower-layer-aligns-better": S.paired(lower_end, upper_end),
        "upper-layer-carries-higher-latents": S.paired(gain("upper", lv - 1), gain("lower", lv - 1)),
    }


EXPERIMENT = Experiment(
    name=NAME,
    summary="JoMA Table 1: hidden units of the two-layer model on the latent tree align with the latents, per layer",
    reference="Tian et al. 2024 (JoMA), Table 1, Sec. 5",
    config=Table1Config,
    run_batch=run_batch,
    grid={"tree": ("deep16",)},
    quick={"steps": 120, "seeds": 3, "batch": 16, "records": 5, "eval_batch": 256},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    local_workers=1,
)
