"""Teacher and student: the width a network one layer shallower needs to match a random deeper one.

Network (Levine et al. 2020's self-attention network, Sec. 2, on the engine): N = 2 positions holding
tokens from a vocabulary of V symbols, a learned embedding to width d (row x^(a) for token a), then L
residual attention layers without LayerNorm, MLP or biases,

    y^{l+1,i} = y^{l,i} + W^{O,l} sum_j a^l_{ij} W^{V,l} y^{l,j},
    a_ij = <W^Q y^i, W^K y^j> / sqrt(d)            ("linear": f is a polynomial of degree 3^L)
    a_ij = softmax_j(<W^Q y^i, W^K y^j> / sqrt(d))  ("softmax"),

one head, output f(a, b) = <w, y^{L,0}> + c (:func:`encoder`; engine ``BlockSpec(norm="none", hidden=0,
score=...)``; the block biases are held at 0, the scalar c is kept).

Why tokens and not Gaussian vectors: with inputs in a fixed R^{d_x}, a student wider than d_x sees them
through a rank-d_x embedding and, by Wies et al. (2021) (measured exactly in depth-width-theory), its
separation rank is that of a width-d_x network whatever its width, so no width could make up a layer.
With V tokens and learned embeddings (Levine et al.'s own setting) the V embedding rows are the grid
tensor's templates: the function is the V x V matrix F[a, b] = f(a, b), and its rank is the grid
separation rank of the depth-width-rank experiment.

Teacher: depth L_T, width d_x, LeCun-normal weights N(0, 1/fan_in), embeddings N(0, 1), one per seed;
its table F is standardised over the grid (mean 0, variance 1), so a student's mean squared error over
the grid is a *relative* MSE (1 = predicting the mean).  Students learn F from all V^2 pairs (minibatches
of random pairs); their error is measured on the whole grid (the input space is finite, so the grid is
both the training set and the population).

Students: depth L_T at the teacher's width d_x (the reference; the teacher is in its class) and depth
L_T - 1 at widths d'.  A seed's *needed width* is the smallest d' on the grid whose shallower student
reaches grid MSE <= ``factor`` x the reference's (pre-registered factor 2), +inf when none does.

Prediction (the width-equivalence table of depth-width-rank, N = 2): the grid matrix of a width-d',
depth-L network has rank at most sep(d', L) = C(d' + (3^L - 1)/2, d') (:func:`theory.n2_rank`, proven
for any weights and embeddings, linear attention), and a generic teacher's has rank min(V, sep(d_x, L_T)).
So a linear shallower student needs sep(d', L_T - 1) >= min(V, sep(d_x, L_T)) (:func:`predicted_width`),
and below that width its MSE is at least the Eckart-Young tail of the teacher's singular values,
sum_{i > sep(d', L_T - 1) + 1} s_i^2 / V^2 (+1: the output constant c) (:func:`rank_floor`).  Softmax
networks are not polynomials and have no such bound: for them the table is a conjecture to test.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..engine import FusedAdamW, Schedule, Trainer, lr_table
from ..engine import models as M
from ..engine.ops import BlockSpec
from ..engine.params import seed_lr_grid
from ..runtime import seed_sequence, torch_generator
from . import theory

Score = Literal["linear", "softmax"]
POSITIONS = 2  # the N = 2 partition {0} | {1}, where the rank table is a proven closed form
RESIDUAL = True  # the N = 2 rank table is the same with or without (docs/depth_width.md); trains better
ZERO = ("qkv_b", "proj_b")  # Levine et al.'s network has no biases inside the blocks


def predicted_width(d_x: int, depth: int, vocab: int | None = None, limit: int = 1 << 20) -> int:
    """The smallest width d' whose depth-(L - 1) N = 2 separation rank reaches the depth-L rank at d_x
    (:func:`theory.n2_rank`), i.e. the width-equivalence table of depth-width-rank; with ``vocab`` V
    templates the teacher's grid rank is capped at V.  depth >= 2."""
    if depth < 2:
        raise ValueError("a one-layer-shallower partner needs depth >= 2")
    target = theory.n2_rank(d_x, depth)
    if vocab is not None:
        target = min(target, vocab)
    lo, hi = 1, 1
    while theory.n2_rank(hi, depth - 1) < target:  # the rank grows with width: doubling, then bisection
        lo, hi = hi + 1, hi * 2
        if hi > limit:
            raise ValueError(f"predicted width above {limit}")
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if theory.n2_rank(mid, depth - 1) < target else (lo, mid)
    return lo


def rank_floor(singular_values: np.ndarray, width: int, depth: int) -> float:
    """Eckart-Young: the least relative MSE over the grid of any (linear-attention) width-d', depth-L
    network, sum_{i >= sep(d', L) + 1} s_i^2 / sum_i s_i^2 (+1 for the output constant), for a teacher
    table with singular values ``singular_values`` (descending)."""
    s2 = np.asarray(singular_values, float) ** 2
    r = theory.n2_rank(width, depth) + 1
    return float(s2[r:].sum() / s2.sum())


def encoder(vocab: int, width: int, depth: int, score: Score) -> M.EncoderSpec:
    block = BlockSpec(width=width, heads=1, hidden=0, norm="none", residual=RESIDUAL, score=score)
    return M.EncoderSpec(block, depth, tokens=POSITIONS, vocab=vocab, pos="none", head="cls", classes=1,
                         final_norm=False, init="lecun")


def _bias_free(params) -> dict[str, torch.Tensor]:
    """The parameter mapping with the block biases replaced by zeros (their gradient is then 0, and with
    no weight decay Adam leaves them at their initial 0)."""
    views = dict(params.items())
    for n in ZERO:
        views[n] = torch.zeros_like(views[n])
    return views


def grid_ids(vocab: int, device="cpu") -> torch.Tensor:
    """All V^2 token pairs (V^2, 2), row a V + b = (a, b)."""
    a = torch.arange(vocab, device=device)
    return torch.stack([a.repeat_interleave(vocab), a.repeat(vocab)], 1)


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    score: Score
    teacher_depth: int
    d_x: int
    vocab: int


@dataclasses.dataclass(frozen=True)
class StudentRun:
    """Training of seeds x lrs students of one (depth, width) against their seeds' teachers."""

    depth: int
    width: int
    seeds: int
    lrs: tuple[float, ...]
    steps: int
    batch: int
    warmup: int
    root: int = 0


def _tag(t: TeacherSpec) -> str:
    return f"teacher-{t.score}-{t.teacher_depth}-{t.d_x}-{t.vocab}"


@torch.no_grad()
def teacher_tables(t: TeacherSpec, seeds, root: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The standardised tables F (len(seeds), V, V) of the seeds' teachers (mean 0, variance 1 over the grid)."""
    enc = encoder(t.vocab, t.d_x, t.teacher_depth, t.score)
    params = M.init(enc, [seed_sequence(root, int(s), _tag(t)) for s in seeds], torch.float64, device)
    ids = grid_ids(t.vocab, device)
    f = M.forward(_bias_free(params), enc, ids.expand(len(seeds), *ids.shape), train=False)[..., 0]
    f = (f - f.mean(1, keepdim=True)) / f.std(1, unbiased=False, keepdim=True)
    return f.view(len(seeds), t.vocab, t.vocab).to(dtype)


def singular_values(tables: torch.Tensor) -> np.ndarray:
    """(S, V) singular values of each teacher table, float64."""
    return torch.linalg.svdvals(tables.detach().to(torch.float64)).cpu().numpy()


def train_students(t: TeacherSpec, run: StudentRun, tables: torch.Tensor | None = None, dtype=torch.float32,
                   device="cpu", bar=None) -> pd.DataFrame:
    """One row per (seed, lr) replica: the relative MSE over the whole grid after training.

    ``tables``: the seeds' teacher tables (:func:`teacher_tables`), computed here when not given."""
    nl = len(run.lrs)
    R = run.seeds * nl
    seed_of, lr_of = seed_lr_grid(run.seeds, run.lrs)
    if tables is None:
        tables = teacher_tables(t, range(run.seeds), run.root, dtype, device)
    target = tables.reshape(run.seeds, -1).to(dtype).repeat_interleave(nl, 0)  # (R, V^2)
    enc = encoder(t.vocab, run.width, run.depth, t.score)
    tag = f"student-{_tag(t)}-{run.depth}-{run.width}"
    params = M.init(enc, [seed_sequence(run.root, int(s), tag) for s in seed_of], dtype, device)
    trainer = Trainer(params, FusedAdamW(params, weight_decay=0.0),
                      lr_table(lr_of, Schedule(run.steps, warmup=run.warmup, floor=0.01), run.steps, dtype, device),
                      clip=1.0)
    gens = [torch_generator(run.root, s, tag + "-data", device) for s in range(run.seeds)]
    ids = grid_ids(t.vocab, device)
    V2 = t.vocab * t.vocab

    def mse(idx: torch.Tensor) -> torch.Tensor:  # idx (R, B) grid rows
        out = M.forward(_bias_free(params), enc, ids[idx])[..., 0]
        return (out - torch.gather(target, 1, idx)).square().mean(1)

    def loss_fn(step: int, rec) -> torch.Tensor:
        idx = torch.stack([torch.randint(V2, (run.batch,), generator=g, device=device) for g in gens])
        return mse(idx.repeat_interleave(nl, 0))  # the lrs of a seed see the same pairs

    for _ in range(run.steps):
        trainer.step(loss_fn)
        if bar is not None:
            bar.update(1)
    with torch.no_grad():
        grid = mse(torch.arange(V2, device=device).expand(R, V2)).cpu().numpy()
    df = pd.DataFrame(dict(score=t.score, teacher_depth=t.teacher_depth, d_x=t.d_x, vocab=t.vocab,
                           depth=run.depth, width=run.width, seed=seed_of, lr=lr_of, grid_loss=grid,
                           diverged_step=trainer.diverged))
    df.loc[df.diverged_step >= 0, "grid_loss"] = np.nan
    return df


def needed_widths(runs: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Per (score, teacher_depth, d_x, seed): the same-depth reference loss (student of depth L_T at
    width d_x), the matching threshold ``factor`` x that loss, and the smallest shallower width whose
    grid loss is at or below it (+inf when none on the grid; ``widest`` holds the widest tried)."""
    rows = []
    for (score, LT, dx, V, seed), g in runs.groupby(["score", "teacher_depth", "d_x", "vocab", "seed"], sort=True):
        ref = g[(g.depth == LT) & (g.width == dx)].grid_loss
        shallow = g[g.depth == LT - 1].sort_values("width")
        if not len(ref) or not len(shallow):
            continue
        tau = factor * float(ref.iloc[0])
        ok = shallow[shallow.grid_loss <= tau]
        same_w = shallow[shallow.width == dx].grid_loss
        rows.append(dict(score=score, teacher_depth=LT, d_x=dx, vocab=V, seed=seed, ref_loss=float(ref.iloc[0]),
                         threshold=tau, needed_width=float(ok.width.iloc[0]) if len(ok) else math.inf,
                         widest=float(shallow.width.max()),
                         shallow_loss_same_width=float(same_w.iloc[0]) if len(same_w) else math.nan,
                         shallow_loss_widest=float(shallow.grid_loss.iloc[-1]),
                         predicted_width=predicted_width(int(dx), int(LT), int(V))))
    return pd.DataFrame(rows)
