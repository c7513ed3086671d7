"""Model selection on a validation split: one learning rate per cell, chosen from a bracket.

Every experiment that trains a learning-rate bracket as replicas (depth-width-trained, deepvit-collapse,
dacdetr-gather) chooses with this rule, so that "tuned fairly" means the same thing everywhere:

* per cell (the ``keys``), the learning rate whose **seed-mean** validation score is best is chosen, and
  every seed of the cell reports that rate; a seed's result is never the best of several restarts;
* a replica with no score (NaN: diverged, or frozen before its first evaluation) counts as the worst
  possible score, so a rate at which some seed diverges loses to any rate at which none does;
* ties go to the smaller learning rate.

The test split plays no part: callers pass validation scores only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def chosen_lr(trials: pd.DataFrame, keys: Sequence[str], score: str, higher_is_better: bool,
              lr: str = "lr") -> pd.Series:
    """The chosen learning rate per cell: a Series indexed by ``keys``; with no keys (one cell), a
    one-element Series.

    ``trials``: one row per (cell, lr, seed) replica with columns ``keys``, ``lr`` and ``score``.
    """
    keys = list(keys)
    if trials.empty:
        raise ValueError("no trials to choose a learning rate from")
    sign = 1.0 if higher_is_better else -1.0
    worst = trials[score].astype(float).fillna(-np.inf if higher_is_better else np.inf) * sign
    frame = trials[keys + [lr]].assign(_s=worst.to_numpy())
    mean = frame.groupby(keys + [lr], sort=True)["_s"].mean().reset_index()
    # rows sorted by lr within each cell, so the first maximum is the smallest rate among ties
    if not keys:
        return pd.Series([float(mean[lr].iloc[int(np.argmax(mean["_s"].to_numpy()))])], name=lr)
    best = mean.loc[mean.groupby(keys, sort=True)["_s"].idxmax()]
    return best.set_index(keys)[lr].astype(float)


def choose_lr(trials: pd.DataFrame, keys: Sequence[str], score: str, higher_is_better: bool,
              lr: str = "lr") -> pd.DataFrame:
    """The rows of each cell's chosen learning rate (:func:`chosen_lr`), one per seed, in the input order."""
    keys = list(keys)
    pick = chosen_lr(trials, keys, score, higher_is_better, lr)
    if not keys:
        mask = trials[lr].to_numpy() == pick.iloc[0]
    else:
        cells = pd.MultiIndex.from_frame(trials[keys]) if len(keys) > 1 else pd.Index(trials[keys[0]])
        mask = trials[lr].to_numpy() == pick.reindex(cells).to_numpy()
    return trials[mask].reset_index(drop=True)
