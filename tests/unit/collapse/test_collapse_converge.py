"""Issue 17's pieces: the arrow-chasing and distinct-glyph tasks decode to their labels, and the
learning-rate bracket trains to a plateau with early stopping and restores its best checkpoint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dynamics.collapse import converge as cv
from dynamics.collapse import data, vit
from dynamics.errors import UserError


def _decode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free images -> (glyph type per cell (n, 16), inverted (start) flag per cell (n, 16))."""
    cells = data.patchify(x, 4)  # (n, 16 cells, 16 pixels)
    ink = cells > 0
    patterns = data.GLYPHS.reshape(len(data.GLYPHS), 16).astype(bool)
    plain = (ink[:, :, None, :] == patterns[None, None]).all(-1)  # (n, cells, types)
    inverted = (ink[:, :, None, :] == ~patterns[None, None]).all(-1)
    types = np.where(plain.any(-1), plain.argmax(-1), np.where(inverted.any(-1), inverted.argmax(-1), -1))
    return types, inverted[..., :4].any(-1) & ~plain[..., :4].any(-1)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_arrow_labels_follow_the_moves(hops):
    s = data.arrows(60, 20, hops=hops, noise=0.0, seed=5)
    x = np.concatenate([s.x_train, s.x_val, s.x_test])
    y = np.concatenate([s.y_train, s.y_val, s.y_test])
    types, start = _decode(x)
    assert (types >= 0).all() and (types < 4).all() and (start.sum(1) == 1).all()
    pos = start.argmax(1)
    moves = {0: (0, 1), 1: (1, 0), 2: (0, -1), 3: (-1, 0)}  # right, down, left, up on a wrapping 4x4 grid
    for _ in range(hops):
        d = types[np.arange(len(y)), pos]
        dr = np.array([moves[int(k)][0] for k in d])
        dc = np.array([moves[int(k)][1] for k in d])
        pos = ((pos // 4 + dr) % 4) * 4 + (pos % 4 + dc) % 4
    np.testing.assert_array_equal(types[np.arange(len(y)), pos], y)
    assert s.n_classes == 4 and s.x_val.shape == (20, 1, 16, 16)


def test_relations_label_is_the_number_of_distinct_types():
    s = data.relations(80, 20, n_placed=6, min_distinct=2, max_distinct=5, noise=0.0, seed=1)
    x = np.concatenate([s.x_train, s.x_val, s.x_test])
    y = np.concatenate([s.y_train, s.y_val, s.y_test])
    cells = data.patchify(x, 4)
    occupied = (cells > 0).any(-1)
    assert (occupied.sum(1) == 6).all()
    types, _ = _decode(x)
    distinct = np.array([len(set(t[o])) for t, o in zip(types, occupied)])
    np.testing.assert_array_equal(distinct - 2, y)
    assert s.n_classes == 4 and set(np.unique(y)) == {0, 1, 2, 3}
    with pytest.raises(UserError):
        data.relations(10, 10, n_placed=3, max_distinct=5)
    with pytest.raises(UserError):
        data.arrows(10, 10, hops=0)


def test_bracket_early_stopping_and_selection():
    split = data.arrows(256, 64, hops=1, seed=0)
    spec = vit.ViTSpec(depth=1, width=8, heads=2, n_patches=16, patch_dim=16, n_classes=4)
    opts = cv.BracketOptions(lrs=(1e-3, 3e-2), max_steps=60, batch=16, eval_every=5, patience=2)
    b = cv.train_bracket(spec, split, [0, 1], opts)
    runs = b.runs
    assert len(runs) == 4 and list(runs.lr) == [1e-3, 1e-3, 3e-2, 3e-2] and list(runs.seed) == [0, 1, 0, 1]
    assert (runs.best_step <= runs.stop_step).all() and (runs.stop_step <= 60).all()
    assert (runs.stopped_early == (runs.stop_step < 60)).all()
    # a replica stops exactly `patience` evaluations after its best one, unless the run ended first
    stopped = runs[runs.stopped_early]
    assert ((stopped.stop_step - stopped.best_step) == 2 * 5).all()
    # the restored checkpoint is the best one: its validation loss is the minimum of the replica's curve
    for _, row in runs.iterrows():
        cur = b.curves[(b.curves.lr == row.lr) & (b.curves.seed == row.seed)]
        assert row.val_loss == pytest.approx(cur.val_loss.min(), rel=1e-5)
    # the chosen learning rate maximises mean validation accuracy over seeds; its replicas are selected
    means = runs.groupby("lr").val_acc.mean()
    assert b.chosen_lr == means.idxmax() and set(runs[runs.selected].lr) == {b.chosen_lr}
    assert list(b.selected()) == list(np.flatnonzero(runs.lr == b.chosen_lr))
    # the restored parameters reproduce the reported validation accuracy
    xv = torch.as_tensor(data.patchify(split.x_val, 4))
    _, acc = cv.evaluate(b.params, b.buffers, spec, xv, torch.as_tensor(split.y_val))
    np.testing.assert_allclose(acc, runs.val_acc.to_numpy())


def test_no_replica_stops_for_patience_before_min_steps():
    split = data.arrows(256, 64, hops=1, seed=0)
    spec = vit.ViTSpec(depth=1, width=8, heads=2, n_patches=16, patch_dim=16, n_classes=4)
    free = cv.train_bracket(spec, split, [0, 1], cv.BracketOptions(lrs=(1e-3, 3e-2), max_steps=60, batch=16,
                                                                 eval_every=5, patience=2)).runs
    assert (free.stop_step < 30).any()  # without a floor some replica stops in the first half
    held = cv.train_bracket(spec, split, [0, 1], cv.BracketOptions(lrs=(1e-3, 3e-2), max_steps=60, batch=16,
                                                                 eval_every=5, patience=2, min_steps=30)).runs
    assert (held.stop_step >= 30).all()
    # before the floor both runs are the same program: a replica whose best step precedes the floor in both
    # runs keeps it
    early = (free.best_step < 30) & (held.best_step < 30)
    assert (free.best_step[early] == held.best_step[early]).all()


def test_bracket_replicas_share_init_across_learning_rates():
    split = data.arrows(64, 16, hops=1, seed=0)
    spec = vit.ViTSpec(depth=1, width=8, heads=2, n_patches=16, patch_dim=16, n_classes=4)
    opts = cv.BracketOptions(lrs=(1e-3, 1e-2), max_steps=1, batch=4, eval_every=1, patience=5, warmup=0.0,
                             weight_decay=0.0)
    b = cv.train_bracket(spec, split, [3], opts)
    init, _ = vit.init_params(spec, [3], 0)
    # one AdamW step (no decay) moves every weight by at most lr: both replicas start from the same init
    d0 = (b.params["qkv_w"][0] - init["qkv_w"][0]).abs().max().item()
    d1 = (b.params["qkv_w"][1] - init["qkv_w"][0]).abs().max().item()
    assert 0 < d0 <= 1.01e-3 and 1e-3 < d1 <= 1.01e-2


@pytest.mark.parametrize("attention", ["vanilla", "reattn"])
def test_compaction_changes_nothing_but_the_work(attention):
    """Stopped replicas leaving the engine program (``compact``) give bit-identical records, checkpoints
    and BN statistics: replicas share no tensor entry, so the live ones cannot tell."""
    split = data.arrows(256, 64, hops=1, seed=0)
    spec = vit.ViTSpec(depth=2, width=8, heads=2, n_patches=16, patch_dim=16, n_classes=4, attention=attention)
    kw = dict(lrs=(1e-3, 3e-2), max_steps=60, batch=16, eval_every=5, patience=2)
    full = cv.train_bracket(spec, split, [0, 1, 2], cv.BracketOptions(**kw, compact=False))
    comp = cv.train_bracket(spec, split, [0, 1, 2], cv.BracketOptions(**kw, compact=True))
    stops = full.runs.stop_step
    assert stops.nunique() > 1 and (stops < 60).any()  # replicas left at different times: compaction happened
    pd.testing.assert_frame_equal(full.runs, comp.runs, check_exact=True)
    pd.testing.assert_frame_equal(full.curves, comp.curves, check_exact=True)
    for name in full.params:
        assert torch.equal(full.params[name], comp.params[name]), name
    for name in full.buffers:
        assert torch.equal(full.buffers[name], comp.buffers[name]), name
