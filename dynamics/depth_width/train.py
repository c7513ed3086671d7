"""Train the R replicas of one (depth, width) transformer on a task; report held-out loss.

AdamW (beta = (0.9, 0.95), weight decay 0.01 on matrices), linear warm-up then cosine decay to
10% of the peak rate, gradient clipping at 1 per replica; one fresh batch per step (infinite data
for SES, random windows for the LM).  ``steps`` counts optimizer updates; losses are in nats.
A replica whose loss becomes non-finite is recorded as diverged at that step (its loss NaN).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from .tasks import lm_eval_windows, lm_windows, ses_batch
from .transformer import ReplicaTransformer


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    steps: int
    batch: int
    lr: float
    warmup: int
    eval_every: int


@dataclasses.dataclass
class TrainResult:
    """test_loss (R,): final held-out loss; curve: (n_evals, R) held-out loss at ``eval_steps``;
    train_loss (R,): mean training loss over the last 10% of steps; diverged (R,): step or -1."""

    test_loss: np.ndarray
    curve: np.ndarray
    eval_steps: list[int]
    train_loss: np.ndarray
    diverged: np.ndarray


def lr_at(step: int, spec: TrainSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model: ReplicaTransformer, sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
          evaluate: Callable[[ReplicaTransformer], torch.Tensor], spec: TrainSpec, bar=None) -> TrainResult:
    """Generic loop: ``sample(step)`` -> (inputs (R, B, ...), targets); ``evaluate(model)`` -> (R,) loss."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 4 or n in ("tok", "head")]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 4 or n in ("tok", "head"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.95))
    R = model.tok.shape[0]
    diverged = np.full(R, -1)
    tail = max(1, spec.steps // 10)
    train_tail = torch.zeros(R)
    curve, eval_steps = [], []
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, spec)
        x, y = sample(step)
        logits = model(x)
        per = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                reduction="none").reshape(R, -1).mean(1)  # (R,)
        bad = ~torch.isfinite(per)
        for r in torch.nonzero(bad).flatten().tolist():
            if diverged[r] < 0:
                diverged[r] = step
        opt.zero_grad(set_to_none=True)
        per.masked_fill(bad, 0.0).sum().backward()
        _clip_per_replica(model, 1.0)
        opt.step()
        if step >= spec.steps - tail:
            train_tail += per.detach()
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps:
            curve.append(evaluate(model).numpy())
            eval_steps.append(step + 1)
        if bar is not None:
            bar.update(1)
    test = curve[-1].copy()
    test[diverged >= 0] = np.nan
    return TrainResult(test, np.array(curve), eval_steps, (train_tail / tail).numpy(), diverged)


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
    """(sample, evaluate) for SES: a fixed held-out set of ``test_size`` sequences, fresh training batches."""
    g_test = torch.Generator().manual_seed(seed * 7919 + 1)
    xt, yt = ses_batch((test_size,), k, V, g_test)
    g = torch.Generator().manual_seed(seed * 7919 + 2)

    def sample(step):
        return ses_batch((replicas, batch), k, V, g)

    return sample, lambda model: _eval_batches(model, xt, yt, 1024)


def lm_task(train_ids: np.ndarray, eval_ids: np.ndarray, tokens: int, batch: int, replicas: int,
            eval_tokens: int, seed: int):
    """(sample, evaluate) for next-token prediction on random training windows and fixed eval windows."""
    xt, yt = lm_eval_windows(eval_ids, tokens, eval_tokens)
    g = torch.Generator().manual_seed(seed * 7919 + 3)

    def sample(step):
        return lm_windows(train_ids, (replicas, batch), tokens, g)

    return sample, lambda model: _eval_batches(model, xt, yt, 256)
