"""One fixed-budget cell: seeds x a learning-rate bracket trained as replicas, one rate chosen on validation.

Shared by the fixed-budget sweeps (``depth-width-budget``: SES and word-level WikiText;
``depth-width-bytes``: byte-level WikiText).  Replica r trains seed r // len(lrs) at peak rate
lrs[r % len(lrs)] (:func:`dynamics.engine.params.seed_lr_grid`); per cell the rate with the lowest
seed-mean **validation** loss is kept for every seed (:func:`dynamics.engine.select.chosen_lr`), so no
seed's result is the best of several restarts, and its **test** loss is reported.  Losses in nats.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from ..engine.params import seed_lr_grid
from ..engine.select import chosen_lr
from .train import TrainSpec, train
from .transformer import ReplicaTransformer


def cell_generator(*key: int) -> torch.Generator:
    """The initialisation stream of one cell, from ``SeedSequence(key)`` (e.g. (seed, budget, depth))."""
    state = np.random.SeedSequence(list(key)).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def train_cell(keys: dict, seeds: int, lrs: tuple[float, ...], steps: int, batch: int, warmup: int,
               eval_every: int, model: Callable[[int], ReplicaTransformer], task: Callable[[int], tuple],
               bar=None) -> dict[str, pd.DataFrame]:
    """Train ``seeds * len(lrs)`` replicas of ``model(R)`` on ``task(R)`` -> (sample, evaluate).

    Returns {"runs": one row per seed at the chosen rate, "trials": every replica (``selected`` marks
    the chosen rate), "curves": validation and test loss per replica at every evaluation}; every row
    starts with the columns of ``keys`` (the cell's grid values).
    """
    seed_of, lr_of = seed_lr_grid(seeds, lrs)
    R = len(lr_of)
    sample, evaluate = task(R)
    net = model(R)
    res = train(net, sample, evaluate, TrainSpec(steps, batch, tuple(lr_of), warmup, eval_every), bar=bar)
    trials = pd.DataFrame(dict(**keys, seed=seed_of, lr=lr_of, width=net.width, params=net.nonembedding(),
                               val_loss=res.val_loss, test_loss=res.test_loss, train_loss=res.train_loss,
                               diverged_step=res.diverged))
    trials["selected"] = trials.lr == chosen_lr(trials, [], "val_loss", higher_is_better=False).iloc[0]
    runs = trials[trials.selected].drop(columns="selected").reset_index(drop=True)
    curves = pd.DataFrame([dict(**keys, seed=int(seed_of[r]), lr=float(lr_of[r]), step=s,
                                val_loss=float(res.curve_val[i, r]), test_loss=float(res.curve_test[i, r]))
                           for i, s in enumerate(res.eval_steps) for r in range(R)])
    return {"runs": runs, "trials": trials, "curves": curves}


def loss_cube(runs: pd.DataFrame, value: str = "test_loss"):
    """(seeds, budgets, depths) array of ``value`` (NaN where missing), the widths (budgets, depths),
    the depths (float) and the budgets, from rows with columns budget, depth, seed, width."""
    budgets, depths = sorted(runs.budget.unique()), sorted(runs.depth.unique())
    idx = pd.MultiIndex.from_product([budgets, depths])
    loss = runs.pivot_table(index=["budget", "depth"], columns="seed", values=value).reindex(idx).to_numpy()
    width = runs.groupby(["budget", "depth"]).width.first().reindex(idx).to_numpy().reshape(len(budgets), len(depths))
    return loss.T.reshape(-1, len(budgets), len(depths)), width, np.asarray(depths, float), budgets
