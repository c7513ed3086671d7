"""Train the R replicas of one (depth, width) transformer on a task; report held-out losses.

AdamW (beta = (0.9, 0.95), eps 1e-8, weight decay 0.01 on matrices and embeddings) with a peak
learning rate per replica, so seeds x learning rates train as one tensor program; linear warm-up
then cosine decay to 10% of the peak; gradient clipping at 1 per replica; one fresh batch per step
(infinite data for SES, random windows for the LM).  ``steps`` counts optimizer updates; losses are
in nats.  Every ``eval_every`` steps each replica is evaluated on a validation set and a test set
(disjoint); learning rates are chosen on validation, results reported on test.  A replica whose
loss becomes non-finite is recorded as diverged at that step (its losses NaN).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from .tasks import lm_eval_windows, lm_windows, ses_batch
from .transformer import ReplicaTransformer

Evaluate = Callable[[ReplicaTransformer], tuple[torch.Tensor, torch.Tensor]]  # -> (val (R,), test (R,))


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    steps: int
    batch: int
    lr: tuple[float, ...]  # peak learning rate of each replica (length R), or one value for all
    warmup: int
    eval_every: int


@dataclasses.dataclass
class TrainResult:
    """val_loss, test_loss (R,): held-out losses at the last step; curve_val, curve_test:
    (n_evals, R) at ``eval_steps``; train_loss (R,): mean over the last 10% of steps;
    diverged (R,): first non-finite step or -1."""

    val_loss: np.ndarray
    test_loss: np.ndarray
    curve_val: np.ndarray
    curve_test: np.ndarray
    eval_steps: list[int]
    train_loss: np.ndarray
    diverged: np.ndarray


def lr_factor(step: int, spec: TrainSpec) -> float:
    """Schedule multiplier: linear warm-up to 1, cosine decay to 0.1 at the last step."""
    if step < spec.warmup:
        return (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


class ReplicaAdamW:
    """AdamW whose learning rate is a vector over the leading replica axis of every parameter."""

    def __init__(self, params: list[tuple[torch.nn.Parameter, float]], lr: torch.Tensor,
                 betas=(0.9, 0.95), eps: float = 1e-8):
        self.params = params  # (parameter, weight decay)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p, _ in params]
        self.v = [torch.zeros_like(p) for p, _ in params]
        self.t = 0

    @torch.no_grad()
    def step(self, factor: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for (p, wd), m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            lr = (self.lr * factor).reshape((-1,) + (1,) * (p.ndim - 1))
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            if wd:
                p.mul_(1 - lr * wd)
            p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))


def train(model: ReplicaTransformer, sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
          evaluate: Evaluate, spec: TrainSpec, bar=None) -> TrainResult:
    """Generic loop: ``sample(step)`` -> (inputs (R, B, ...), targets); ``evaluate(model)`` -> (val, test)."""
    R = model.tok.shape[0]
    lrs = torch.tensor(spec.lr if len(spec.lr) == R else spec.lr * R, dtype=model.tok.dtype)
    decayed = lambda n, p: p.ndim >= 4 or n in ("tok", "head")  # noqa: E731 -- matrices and embeddings
    opt = ReplicaAdamW([(p, 0.01 if decayed(n, p) else 0.0) for n, p in model.named_parameters()], lrs)
    diverged = np.full(R, -1)
    tail = max(1, spec.steps // 10)
    train_tail = torch.zeros(R)
    vals, tests, eval_steps = [], [], []
    for step in range(spec.steps):
        x, y = sample(step)
        logits = model(x)
        per = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                reduction="none").reshape(R, -1).mean(1)  # (R,)
        bad = ~torch.isfinite(per)
        for r in torch.nonzero(bad).flatten().tolist():
            if diverged[r] < 0:
                diverged[r] = step
        for p in model.parameters():
            p.grad = None
        per.masked_fill(bad, 0.0).sum().backward()
        _clip_per_replica(model, 1.0)
        opt.step(lr_factor(step, spec))
        if step >= spec.steps - tail:
            train_tail += per.detach()
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps:
            v, t = evaluate(model)
            vals.append(v.numpy())
            tests.append(t.numpy())
            eval_steps.append(step + 1)
        if bar is not None:
            bar.update(1)
    val, test = vals[-1].copy(), tests[-1].copy()
    val[diverged >= 0] = np.nan
    test[diverged >= 0] = np.nan
    return TrainResult(val, test, np.array(vals), np.array(tests), eval_steps, (train_tail / tail).numpy(), diverged)


def _clip_per_replica(model: ReplicaTransformer, max_norm: float) -> None:
    """Clip each replica's gradient norm separately (replicas are independent networks)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    R = grads[0].shape[0]
    norms = torch.sqrt(sum(g.reshape(R, -1).pow(2).sum(1) for g in grads))
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape((R,) + (1,) * (g.ndim - 1)))


@torch.no_grad()
def _eval_batches(model, xs: torch.Tensor, ys: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean cross-entropy (R,) of the replicas on shared inputs xs (n, ...) and targets ys."""
    R = model.tok.shape[0]
    total, count = torch.zeros(R), 0
    for s in range(0, xs.shape[0], chunk):
        x = xs[s:s + chunk].expand(R, *xs[s:s + chunk].shape)
        y = ys[s:s + chunk]
        logits = model(x)
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.expand(R, *y.shape).reshape(-1), reduction="none")
        total += ce.reshape(R, -1).sum(1)
        count += y.numel()
    return total / count


def ses_task(k: int, V: int, batch: int, replicas: int, test_size: int, seed: int):
    """(sample, evaluate) for SES: fixed validation and test sets of ``test_size`` sequences each
    (independent draws), fresh training batches for every replica."""
    xv, yv = ses_batch((test_size,), k, V, torch.Generator().manual_seed(seed * 7919 + 4))
    xt, yt = ses_batch((test_size,), k, V, torch.Generator().manual_seed(seed * 7919 + 1))
    g = torch.Generator().manual_seed(seed * 7919 + 2)

    def sample(step):
        return ses_batch((replicas, batch), k, V, g)

    return sample, lambda model: (_eval_batches(model, xv, yv, 1024), _eval_batches(model, xt, yt, 1024))


def lm_task(train_ids: np.ndarray, eval_ids: np.ndarray, tokens: int, batch: int, replicas: int,
            eval_tokens: int, seed: int):
    """(sample, evaluate) for next-token prediction: random training windows; validation on the first
    ``eval_tokens`` of the evaluation split, test on the next ``eval_tokens`` (disjoint)."""
    xv, yv = lm_eval_windows(eval_ids, tokens, eval_tokens)
    xt, yt = lm_eval_windows(eval_ids[eval_tokens:], tokens, eval_tokens)
    g = torch.Generator().manual_seed(seed * 7919 + 3)

    def sample(step):
        return lm_windows(train_ids, (replicas, batch), tokens, g)

    return sample, lambda model: (_eval_batches(model, xv, yv, 256), _eval_batches(model, xt, yt, 256))
