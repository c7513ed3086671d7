"""The one learning-rate selection rule (dynamics.engine.select) that every bracketed experiment uses."""

import numpy as np
import pandas as pd
import pytest

from dynamics.engine.select import choose_lr, chosen_lr


def test_choose_lr_picks_one_rate_per_cell_on_validation():
    trials = pd.DataFrame(dict(cell=[0, 0, 0, 0, 1, 1, 1, 1], seed=[0, 0, 1, 1] * 2, lr=[1e-3, 1e-2] * 4,
                               val=[0.9, 0.5, 0.4, np.nan, 0.1, 0.2, 0.1, 0.3]))
    out = choose_lr(trials, ["cell"], "val", higher_is_better=True)
    assert out.groupby("cell").lr.unique().map(list).tolist() == [[1e-3], [1e-2]]  # a diverged replica is worst
    assert len(out) == 4 and out.seed.tolist() == [0, 1, 0, 1]


def test_lower_is_better_ties_to_the_smaller_rate_and_several_keys():
    trials = pd.DataFrame(dict(a=["x"] * 4 + ["y"] * 4, b=[1] * 8, lr=[3e-2, 1e-2] * 4, seed=[0, 0, 1, 1] * 2,
                               loss=[1.0, 1.0, 2.0, 2.0, 5.0, 1.0, np.nan, 1.0]))
    pick = chosen_lr(trials, ["a", "b"], "loss", higher_is_better=False)
    assert pick.to_dict() == {("x", 1): 1e-2, ("y", 1): 1e-2}  # x: a tie, so the smaller rate
    rows = choose_lr(trials, ["a", "b"], "loss", higher_is_better=False)
    assert set(rows.lr) == {1e-2} and len(rows) == 4


def test_one_cell_without_keys():
    trials = pd.DataFrame(dict(lr=[1e-3, 1e-3, 1e-2, 1e-2], acc=[0.2, 0.4, 0.5, np.nan]))
    assert chosen_lr(trials, [], "acc", higher_is_better=True).iloc[0] == 1e-3  # 1e-2 had a diverged seed
    assert len(choose_lr(trials, [], "acc", higher_is_better=True)) == 2
    with pytest.raises(ValueError):
        chosen_lr(trials.iloc[:0], [], "acc", higher_is_better=True)
