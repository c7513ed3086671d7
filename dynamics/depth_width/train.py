"""Train the R replicas of one (depth, width) transformer on a task; report held-out losses.

Runs on :mod:`dynamics.engine`: the model's parameters are moved into one flat (R, P) buffer and
updated by the engine's fused AdamW (beta = (0.9, 0.95), eps 1e-8, weight decay 0.01 on matrices and
embeddings) with a peak learning rate per replica, so seeds x learning rates train as one tensor
program; linear warm-up then cosine decay to 10% of the peak; gradient clipping at 1 per replica; one
fresh batch per step (infinite data for SES, random windows for the LM).  ``steps`` counts optimizer
updates; losses are in nats.  Every ``eval_every`` steps each replica is evaluated on a validation set
and a test set (disjoint); learning rates are chosen on validation, results reported on test.  A
replica whose loss or gradient becomes non-finite is frozen alone at that step and recorded as
diverged there (its reported losses NaN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ..engine import FusedAdamW, ReplicaParams, Schedule, Trainer, lr_table
from ..runtime import torch_generator
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


def schedule(spec: TrainSpec) -> Schedule:
    """Linear warm-up to 1, cosine decay to 0.1 at the last step."""
    return Schedule(spec.steps, warmup=spec.warmup, floor=0.1)


def train(model: ReplicaTransformer, sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
          evaluate: Evaluate, spec: TrainSpec, bar=None) -> TrainResult:
    """Generic loop: ``sample(step)`` -> (inputs (R, B, ...), targets); ``evaluate(model)`` -> (val, test).

    The model's parameters are moved into the engine's flat buffer in place (the model keeps
    working, and holds the trained weights afterwards)."""
    R = model.tok.shape[0]
    lrs = list(spec.lr) if len(spec.lr) == R else list(spec.lr) * R
    decayed = lambda n, p: p.ndim >= 4 or n in ("tok", "head")
    params = ReplicaParams.adopt(model, decayed)
    dev = params.data.device
    trainer = Trainer(params, FusedAdamW(params, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01),
                      lr_table(lrs, schedule(spec), spec.steps, params.data.dtype, dev), clip=1.0)
    tail = max(1, spec.steps // 10)
    train_tail = torch.zeros(R, dtype=params.data.dtype, device=dev)
    vals, tests, eval_steps = [], [], []

    def loss_fn(step: int, rec) -> torch.Tensor:
        x, y = sample(step)
        logits = model(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                 reduction="none").reshape(R, -1).mean(1)  # (R,)

    for step in range(spec.steps):
        per = trainer.step(loss_fn)
        if step >= spec.steps - tail:
            train_tail += per
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps:
            v, t = evaluate(model)
            vals.append(v.cpu().numpy())
            tests.append(t.cpu().numpy())
            eval_steps.append(step + 1)
        if bar is not None:
            bar.update(1)
    diverged = trainer.diverged
    val, test = vals[-1].copy(), tests[-1].copy()
    val[diverged >= 0] = np.nan
    test[diverged >= 0] = np.nan
    return TrainResult(val, test, np.array(vals), np.array(tests), eval_steps,
                       (train_tail / tail).cpu().numpy(), diverged)


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
    xv, yv = ses_batch((test_size,), k, V, torch_generator(seed, 0, "ses-validation"))
    xt, yt = ses_batch((test_size,), k, V, torch_generator(seed, 0, "ses-test"))
    g = torch_generator(seed, 0, "ses-train")

    def sample(step):
        return ses_batch((replicas, batch), k, V, g)

    return sample, lambda model: (_eval_batches(model, xv, yv, 1024), _eval_batches(model, xt, yt, 1024))


def lm_task(train_ids: np.ndarray, eval_ids: np.ndarray, tokens: int, batch: int, replicas: int,
            eval_tokens: int, seed: int):
    """(sample, evaluate) for next-token prediction: random training windows; validation on the first
    ``eval_tokens`` of the evaluation split, test on the next ``eval_tokens`` (disjoint)."""
    xv, yv = lm_eval_windows(eval_ids, tokens, eval_tokens)
    xt, yt = lm_eval_windows(eval_ids[eval_tokens:], tokens, eval_tokens)
    g = torch_generator(seed, 0, "lm-train-windows")

    def sample(step):
        return lm_windows(train_ids, (replicas, batch), tokens, g)

    return sample, lambda model: (_eval_batches(model, xv, yv, 256), _eval_batches(model, xt, yt, 256))
