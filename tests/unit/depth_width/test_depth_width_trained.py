"""depth-width-trained: teacher-student widths, the rank floor, k-hop data, linear attention, Newcombe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dynamics import stats as S
from dynamics.depth_width import khop as K
from dynamics.depth_width import teacher as T
from dynamics.depth_width.modular import P1
from dynamics.depth_width.rank_sweep import sweep_family
from dynamics.engine import models as M
from dynamics.engine.ops import BlockSpec, self_attention


def test_predicted_width_is_the_rank_experiments_width_equivalence():
    """The prediction is the depth-width-rank table: its width_equivalence on exact Z_p ranks (d_x 1..2,
    L 1..3, N = 2) gives the same partner widths, and the documented ratios (docs/depth_width.md)."""
    from dynamics.experiments.depth_width_rank import RankConfig, width_equivalence

    cfg = RankConfig(widths=(1, 2), depths=(1, 2, 3), positions=2, primes=(P1,), seeds=1, max_side=400,
                     equiv_max_width=16)
    rows = pd.DataFrame(sweep_family(cfg.widths, cfg.depths, 1, 2, False, cfg.pairs(), cfg.max_side))
    eq = width_equivalence(rows, cfg)
    assert len(eq) == 4
    for r in eq.itertuples():
        assert T.predicted_width(r.d_x, r.L) == r.width_needed, (r.d_x, r.L)
    table = {(1, 2): 4, (2, 2): 14, (3, 2): 34, (4, 2): 69, (1, 3): 2, (2, 3): 5, (3, 3): 9, (4, 3): 13, (1, 4): 2,
             (2, 4): 4, (1, 5): 2}
    assert {k: T.predicted_width(*k) for k in table} == table
    assert T.predicted_width(12, 2) == 1819 and T.predicted_width(12, 2, vocab=32) == 31
    assert T.predicted_width(2, 3, vocab=32) == 3  # C(3 + 4, 3) = 35 >= 32 > C(6, 2) = 15


def test_teacher_table_rank_is_the_n2_theorem_and_the_floor_bounds_smaller_ranks():
    """A linear teacher's V x V table has rank min(V, C(d_x + m_L, d_x)) (float64 SVD at these small
    degrees); the Eckart-Young floor is 0 from the predicted width on and positive below it."""
    t = T.TeacherSpec("linear", 2, 1, 16)
    tab = T.teacher_tables(t, range(2), 0, dtype=torch.float64)
    assert tab.shape == (2, 16, 16)
    assert torch.allclose(tab.reshape(2, -1).mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    sv = T.singular_values(tab)
    ranks = (sv > sv[:, :1] * 1e-9).sum(1)
    assert ranks.tolist() == [5, 5]  # C(1 + 4, 1)
    w = T.predicted_width(1, 2)  # 4: depth 1 has rank w + 1 (+1 for the output constant)
    assert T.rank_floor(sv[0], w, 1) < 1e-20
    sv2 = T.singular_values(T.teacher_tables(T.TeacherSpec("linear", 2, 2, 16), range(1), 0, torch.float64))[0]
    assert T.rank_floor(sv2, 1, 1) > 1e-4 and T.rank_floor(sv2, T.predicted_width(2, 2), 1) < 1e-20
    softmax = T.singular_values(T.teacher_tables(T.TeacherSpec("softmax", 2, 1, 16), range(1), 0, torch.float64))
    assert (softmax[0] > softmax[0, 0] * 1e-9).sum() > 5  # softmax is not a polynomial: no such bound


def test_trained_linear_students_stay_above_their_rank_floor():
    """depth-width-trained/ts-linear-above-rank-floor: a trained shallower linear student never beats the
    Eckart-Young floor of its proven rank bound."""
    t = T.TeacherSpec("linear", 2, 2, 16)
    tab = T.teacher_tables(t, range(2), 0)
    sv = T.singular_values(tab)
    df = T.train_students(t, T.StudentRun(1, 1, 2, (3e-2, 1e-1), 150, 64, 10), tab)
    floors = np.array([T.rank_floor(sv[s], 1, 1) for s in df.seed])
    assert floors.max() > 1e-3  # the bound binds for at least one teacher
    assert (df.grid_loss.to_numpy() >= floors - 1e-4).all()


def test_needed_widths_reads_the_smallest_matching_width():
    rows = []
    for seed, losses in ((0, {1: 0.5, 2: 0.05, 4: 0.01}), (1, {1: 0.5, 2: 0.4, 4: 0.3})):
        rows.append(dict(score="linear", teacher_depth=2, d_x=2, vocab=32, depth=2, width=2, seed=seed,
                         grid_loss=0.03))
        rows += [dict(score="linear", teacher_depth=2, d_x=2, vocab=32, depth=1, width=w, seed=seed, grid_loss=v)
                 for w, v in losses.items()]
    need = T.needed_widths(pd.DataFrame(rows), factor=2.0)
    assert need.needed_width.tolist() == [2.0, np.inf]
    assert need.predicted_width.tolist() == [14, 14]
    assert need.shallow_loss_same_width.tolist() == [0.05, 0.4]


def test_khop_targets_are_k_further_hops():
    g = torch.Generator().manual_seed(0)
    n, k = 5, 3
    ids, y = K.khop_batch((4,), n, k, g)
    for seq, tgt in zip(ids.tolist(), y.tolist()):
        f = {i // n: i % n for i in seq}
        assert sorted(f) == list(range(n)) and sorted(f.values()) == list(range(n))  # a permutation
        for i, t in zip(seq, tgt):
            b = i % n
            for _ in range(k):
                b = f[b]
            assert t == b
    assert [K.depth_needed(k) for k in (1, 2, 3, 4, 7, 8)] == [1, 2, 2, 3, 3, 4]


def test_khop_one_layer_learns_one_hop():
    spec = K.KhopSpec(k=1, n=4, depth=1, width=16, seeds=2, lrs=(1e-2,), steps=150, batch=32, warmup=10,
                      eval_size=128)
    df = K.train_cell(spec)
    assert len(df) == 2 and (df.test_acc > 0.9).all()
    s = K.solve_table(df, 0.9)
    assert s.solved.tolist() == [2] and s.rate_low.iloc[0] > 0.15


def test_linear_score_is_the_bilinear_form_without_softmax():
    torch.manual_seed(0)
    spec = BlockSpec(width=4, heads=1, hidden=0, norm="none", score="linear")
    h = torch.randn(1, 2, 3, 4)
    w = {"qkv_w": torch.randn(1, 4, 12), "qkv_b": torch.zeros(1, 12), "proj_w": torch.randn(1, 4, 4),
         "proj_b": torch.zeros(1, 4)}
    out = self_attention(w, h, spec)
    q, k, v = (h[0] @ w["qkv_w"][0]).split(4, -1)
    ref = ((q @ k.transpose(-1, -2)) / 2.0) @ v @ w["proj_w"][0]
    assert torch.allclose(out[0], ref, atol=1e-5)
    assert M.EncoderSpec(spec, 1, tokens=3, vocab=5, pos="none", head="cls", classes=1, final_norm=False)


def test_newcombe_matches_the_published_example():
    """Newcombe (1998), Table II example: 56/70 vs 48/80 -> 0.2000 (0.0524, 0.3339)."""
    e = S.newcombe(56, 70, 48, 80)
    assert e.value == pytest.approx(0.2) and e.low == pytest.approx(0.0524, abs=1e-4)
    assert e.high == pytest.approx(0.3339, abs=1e-4)
    assert not S.newcombe(0, 0, 1, 3).has_interval  # an empty arm decides nothing
