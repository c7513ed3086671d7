"""k-hop pointer chasing: a compositional task whose depth requirement is known, trained on the engine.

Task (the induction-free form of Sanford, Hsu & Telgarsky 2024, "Transformers, parallel computation,
and logarithmic depth", arXiv 2402.09268, hop_k).  A sequence of n tokens lists the pairs (a, f(a)) of a
uniformly random permutation f of {0..n-1}, each key a once, in random order; token id a n + f(a).
At every position, holding (a, b = f(a)), the target is k further hops from the value, f^k(b) =
f^{k+1}(a) (n classes; chance 1/n).  No positional information is needed (the pairs are a set), so the
model has no position embedding.

Depth.  Pointer doubling: after layer l every token (a, f(a)) can hold f^{2^l}(a) -- in layer l + 1 it
attends to the token whose key is the value it holds, f^{2^l}(a), and reads that token's value,
f^{2^{l+1}}(a) -- with O(log n) width per pointer.  Depth L thus reaches any hop count up to 2^L, and
the target f^{k+1}(a) needs k + 1 <= 2^L, i.e. L >= floor(log2 k) + 1 (:func:`depth_needed`).  This is
Sanford, Hsu & Telgarsky's O(log k) construction for hop_k (their depth is floor(log2 k) + 2: an extra
layer first copies the previous token into place, which is given here in the token itself).  Their
lower bounds for shallower transformers (width x heads x precision polynomial in n when the depth is
below about log k) are conditional on a conjecture about Massively Parallel Computation, so the
shallower-fails comparison here tests the construction's depth, not a proven lower bound.

Model: pre-LN softmax transformer of :mod:`dynamics.engine.models` (one head, MLP 4 d, GPT-2
initialisation, no position embedding), read out by a linear head over the n classes at every position.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch

from ..engine import FusedAdamW, Schedule, Trainer, lr_table
from ..engine import models as M
from ..engine.ops import BlockSpec
from ..engine.params import seed_lr_grid
from ..runtime import torch_generator


def depth_needed(k: int) -> int:
    """floor(log2 k) + 1: the least depth whose pointer doubling reaches k + 1 hops (2^L >= k + 1)."""
    return int(math.floor(math.log2(k))) + 1


def khop_batch(shape: tuple[int, ...], n: int, k: int, generator: torch.Generator, device="cpu"):
    """Token ids (*shape, n) in [0, n^2) and targets (*shape, n) in [0, n): position i holds the pair
    (a_i, f(a_i)) of a random permutation f (keys a in random order); its target is f^k(f(a_i))."""
    m = int(np.prod(shape))
    f = torch.rand(m, n, generator=generator).argsort(1)  # (m, n): f[a] for a = 0..n-1
    keys = torch.rand(m, n, generator=generator).argsort(1)  # the order in which the pairs are listed
    vals = torch.gather(f, 1, keys)
    target = vals
    for _ in range(k):
        target = torch.gather(f, 1, target)
    ids = keys * n + vals
    return ids.reshape(*shape, n).to(device), target.reshape(*shape, n).to(device)


@dataclasses.dataclass(frozen=True)
class KhopSpec:
    """One (k, n, depth, width) cell; ``lrs`` are the peak learning rates tried (every seed at each)."""

    k: int
    n: int
    depth: int
    width: int
    seeds: int
    lrs: tuple[float, ...]
    steps: int
    batch: int
    warmup: int
    eval_size: int
    root: int = 0

    def encoder(self) -> M.EncoderSpec:
        block = BlockSpec(width=self.width, heads=1, hidden=4 * self.width, norm="pre")
        return M.EncoderSpec(block, self.depth, tokens=self.n, vocab=self.n * self.n, pos="none", head="lm",
                             init="gpt2")


def _loss_acc(logits: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-replica cross-entropy and accuracy over the first n logits (the n classes)."""
    z = logits[..., :n]
    R = z.shape[0]
    ce = torch.nn.functional.cross_entropy(z.reshape(-1, n), y.reshape(-1), reduction="none").view(R, -1).mean(1)
    acc = (z.argmax(-1) == y).to(z.dtype).reshape(R, -1).mean(1)
    return ce, acc


def train_cell(spec: KhopSpec, dtype=torch.float32, device="cpu", bar=None) -> pd.DataFrame:
    """Train seeds x lrs replicas of one cell; one row per replica with validation and test accuracy
    (per-token, on fixed held-out sets of ``eval_size`` sequences drawn independently of training).

    Replica r = (seed r // len(lrs), lr lrs[r % len(lrs)]); its initialisation and its training batches
    come from its seed only (``runtime`` streams of (root, seed)), so the lrs of one seed share data
    and initial weights and differ only in the rate."""
    enc = spec.encoder()
    nl = len(spec.lrs)
    R = spec.seeds * nl
    seed_of, lr_of = seed_lr_grid(spec.seeds, spec.lrs)
    root = np.random.SeedSequence([spec.root, spec.k, spec.n, spec.depth, spec.width])
    init_seeds = [np.random.SeedSequence(root.entropy, spawn_key=(int(s),)) for s in seed_of]
    params = M.init(enc, init_seeds, dtype, device)
    trainer = Trainer(params, FusedAdamW(params, betas=(0.9, 0.98), weight_decay=0.0),
                      lr_table(lr_of, Schedule(spec.steps, warmup=spec.warmup, floor=0.1), spec.steps, dtype, device),
                      clip=1.0)
    gens = [torch_generator(spec.root, s, f"khop-data-{spec.k}-{spec.n}") for s in range(spec.seeds)]
    xv, yv = khop_batch((spec.eval_size,), spec.n, spec.k, torch_generator(spec.root, 0, "khop-val"), device)
    xt, yt = khop_batch((spec.eval_size,), spec.n, spec.k, torch_generator(spec.root, 0, "khop-test"), device)

    def loss_fn(step: int, rec) -> torch.Tensor:
        xs, ys = zip(*(khop_batch((spec.batch,), spec.n, spec.k, g, device) for g in gens))
        x = torch.stack(xs).repeat_interleave(nl, 0)  # (R, B, n): the lrs of a seed see the same batch
        y = torch.stack(ys).repeat_interleave(nl, 0)
        return _loss_acc(M.forward(params.views, enc, x), y, spec.n)[0]

    for _ in range(spec.steps):
        trainer.step(loss_fn)
        if bar is not None:
            bar.update(1)
    out = dict(k=spec.k, n=spec.n, depth=spec.depth, width=spec.width, seed=seed_of, lr=lr_of,
               diverged_step=trainer.diverged)
    with torch.no_grad():
        for name, (x, y) in (("val", (xv, yv)), ("test", (xt, yt))):
            ce, acc = _loss_acc(M.forward(params.views, enc, x.expand(R, *x.shape), train=False),
                                y.expand(R, *y.shape), spec.n)
            out[f"{name}_loss"] = ce.cpu().numpy()
            out[f"{name}_acc"] = acc.cpu().numpy()
    df = pd.DataFrame(out)
    df.loc[df.diverged_step >= 0, ["val_loss", "test_loss", "val_acc", "test_acc"]] = np.nan
    return df


def solve_table(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (k, n, depth, width): solved seeds (test accuracy >= threshold; diverged = not solved), the
    rate and its Wilson 95% interval."""
    from .. import stats as S

    rows = []
    for key, g in runs.groupby(["k", "n", "depth", "width"], sort=True):
        solved = int((g.test_acc.fillna(0) >= threshold).sum())
        est = S.wilson(solved, len(g))
        rows.append(dict(zip(["k", "n", "depth", "width"], key), lr=float(g.lr.iloc[0]), solved=solved,
                         seeds=len(g), rate=est.value, rate_low=est.low, rate_high=est.high,
                         test_acc_median=float(g.test_acc.median()), depth_needed=depth_needed(int(key[0]))))
    return pd.DataFrame(rows)
