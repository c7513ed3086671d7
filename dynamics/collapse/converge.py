"""Converged training of a learning-rate bracket: every (learning rate, seed) pair is one replica of the
batched engine, trained to a validation plateau with early stopping, the best checkpoint kept.

Replica ``r = i_lr * n_seeds + i_seed`` trains seed ``seeds[i_seed]`` (its init, drawn per (root seed,
seed index, parameter name) by :func:`dynamics.collapse.vit.init_params`, is shared by every learning
rate and by every attention variant, so variant comparisons are paired by seed) at peak learning rate
``lrs[i_lr]`` (linear warm-up over ``warmup`` of ``max_steps``, cosine decay to 0 at ``max_steps``).

Early stopping (Prechelt 1998, "Early stopping -- but when?", the patience rule): every ``eval_every``
steps each active replica's validation cross-entropy is measured in eval mode; a replica whose best
validation loss has not improved for ``patience`` evaluations is stopped and the checkpoint with the lowest
validation loss is restored.  A stopped replica leaves the engine program (``compact``,
:meth:`dynamics.engine.Trainer.keep`), so the rest train on without carrying it; with ``compact=False``
it stays, frozen by the engine's per-replica mask (learning rate 0), and the records are bit-identical
either way (tested).  No replica stops for patience before ``min_steps``: some seeds sit on the
chance-level loss plateau for several hundred steps before they escape it, and a patience rule alone
stopped them there (docs/deepvit.md); a diverged replica stops at once.  Training ends when every
replica has stopped or at ``max_steps``.

Model selection (per variant, depth and width; :mod:`dynamics.engine.select`): the learning rate with the
highest mean validation accuracy over seeds at the restored checkpoints, a diverged replica the worst; test accuracy is reported for that learning rate only,
so the test split plays no part in any choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import memory
from ..engine import FusedAdamW, Precision, ReplicaParams, Schedule, Trainer, lr_table, select
from ..runtime import numpy_rng, torch_dtype
from .data import Split, patchify
from .vit import ViTSpec, decayed, forward, init_params


@dataclasses.dataclass(frozen=True)
class BracketOptions:
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # peak learning rates of the bracket
    max_steps: int = 1500  # AdamW steps at most (the cosine schedule ends here)
    batch: int = 32  # images per step per replica
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of max_steps with linear warm-up
    eval_every: int = 50  # steps between validation evaluations
    patience: int = 6  # evaluations without a new best validation loss before a replica stops
    min_steps: int = 0  # no replica stops for patience before this step
    patch: int = 4
    root_seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    compact: bool = True  # stopped replicas leave the engine program (same results, fewer FLOPs)


@dataclasses.dataclass
class Bracket:
    """The restored best checkpoints of R = n_lr * n_seeds replicas and their training record.

    ``runs``: one row per replica (lr, seed, best_step, stop_step, stopped_early, diverged_step,
    val_loss, val_acc, train_acc, test_acc, selected); ``curves``: (lr, seed, step, train_loss, val_loss,
    val_acc) at every evaluation.
    """

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    runs: object  # pandas DataFrame
    curves: object  # pandas DataFrame
    chosen_lr: float

    def selected(self) -> np.ndarray:
        """Replica indices of the chosen learning rate, in seed order."""
        return np.flatnonzero(self.runs["selected"].to_numpy())


def tokens(x: np.ndarray, patch: int, dtype, device) -> torch.Tensor:
    """Images (n, C, H, W) -> patch tokens (n, H*W/patch^2, C*patch^2) as a torch tensor."""
    return torch.as_tensor(patchify(x, patch), dtype=dtype, device=device)


@torch.no_grad()
def evaluate(params: dict, buffers: dict, spec: ViTSpec, x: torch.Tensor, y: torch.Tensor,
             chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode (BN running statistics) mean cross-entropy and accuracy per replica, each (R,), on the
    same images x (N, n_patches, patch_dim) for every replica."""
    R = next(iter(params.values())).shape[0]
    loss = torch.zeros(R, dtype=torch.float64, device=x.device)
    correct = torch.zeros(R, dtype=torch.float64, device=x.device)
    for a in range(0, len(y), chunk):
        xb, yb = x[a:a + chunk], y[a:a + chunk]
        logits, _ = forward(params, buffers, spec, xb.unsqueeze(0).expand(R, -1, -1, -1), train=False)
        loss += F.cross_entropy(logits.flatten(0, 1), yb.repeat(R), reduction="none").view(R, -1).sum(1).double()
        correct += (logits.argmax(-1) == yb).sum(-1).double()
    return (loss / len(y)).cpu().numpy(), (correct / len(y)).cpu().numpy()


def train_bracket(spec: ViTSpec, split: Split, seeds: Sequence[int], opts: BracketOptions,
                  bar: Callable | None = None) -> Bracket:
    """Train every (lr, seed) replica to its validation plateau (module docstring); the split must have
    a validation part."""
    import pandas as pd

    if split.x_val is None:
        raise ValueError("converged training needs a validation split")
    memory.keep_freed_memory()
    dtype, device = torch_dtype(opts.dtype), torch.device(opts.device)
    S, n_lr = len(seeds), len(opts.lrs)
    rep_seeds = [s for _ in opts.lrs for s in seeds]
    R = len(rep_seeds)
    init, buffers = init_params(spec, rep_seeds, opts.root_seed, dtype, device)
    params = ReplicaParams.from_tensors({n: t.detach() for n, t in init.items()}, lambda n, t: decayed(n))
    del init
    x, y = tokens(split.x_train, opts.patch, dtype, device), torch.as_tensor(split.y_train, device=device)
    xv, yv = tokens(split.x_val, opts.patch, dtype, device), torch.as_tensor(split.y_val, device=device)
    peaks = [lr for lr in opts.lrs for _ in seeds]
    sched = Schedule(opts.max_steps, warmup=max(1, round(opts.warmup * opts.max_steps)))
    trainer = Trainer(params, FusedAdamW(params, weight_decay=opts.weight_decay),
                      lr_table(peaks, sched, opts.max_steps, dtype, device), precision=Precision(opts.device, opts.dtype))
    # each replica walks through its own permutations of the training set, from (root seed, seed, "order")
    N = len(y)
    reps = -(-opts.max_steps * opts.batch // N)
    rngs = [numpy_rng(opts.root_seed, s, "bracket-order") for s in rep_seeds]
    order = np.stack([np.concatenate([g.permutation(N) for _ in range(reps)])[: opts.max_steps * opts.batch]
                      for g in rngs])
    order = torch.as_tensor(order.reshape(R, opts.max_steps, opts.batch), device=device)

    best_data = params.data.detach().clone()
    best_buf = {k: v.clone() for k, v in buffers.items()}
    best_loss = np.full(R, np.inf)
    best_step = np.zeros(R, dtype=np.int64)
    stop_step = np.full(R, opts.max_steps, dtype=np.int64)
    diverged = np.full(R, -1, dtype=np.int64)
    since = np.zeros(R, dtype=np.int64)
    stopped = np.zeros(R, dtype=bool)
    curves = []
    # The trainer holds the live replicas only (original indices ``live``); with ``compact`` a stopped
    # replica leaves it at the evaluation that stops it, instead of being carried, frozen, to the end.
    live = np.arange(R)
    live_t = torch.as_tensor(live, device=device)
    bufs = buffers  # the live replicas' BN running statistics
    run_loss = torch.zeros(R, dtype=torch.float64, device=device)
    va = np.full(R, np.nan)
    progress = bar(opts.max_steps, f"bracket L={spec.depth} d={spec.width} {spec.attention}") if bar else None

    def loss_fn(step: int, rec) -> torch.Tensor:
        idx = order[live_t, step]
        logits, _ = forward(trainer.params.views, bufs, spec, x[idx], train=True)
        return F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(len(live), -1).mean(1)

    step = 0
    try:
        while step < opts.max_steps and not stopped.all():
            saved = {k: v.clone() for k, v in bufs.items()}
            run_loss[live_t] += torch.nan_to_num(trainer.step(loss_fn).double(), nan=0.0)
            frozen = ~trainer.active
            for k, v in bufs.items():  # a frozen replica's BN running statistics stay as they were
                v.copy_(torch.where(frozen.view(-1, *([1] * (v.dim() - 1))), saved[k], v))
            step += 1
            if progress is not None:
                progress.update(1)
            if step % opts.eval_every and step < opts.max_steps:
                continue
            vl_live, va_live = evaluate(trainer.params.views, bufs, spec, xv, yv)
            alive = np.zeros(R, dtype=bool)
            alive[live] = trainer.active.cpu().numpy()
            vl = np.full(R, np.inf)
            vl[live], va[live] = vl_live, va_live
            vl = np.where(alive & np.isfinite(vl), vl, np.inf)
            # every replica has a row at every evaluation, as without compaction: a stopped one's is
            # (train loss 0, validation loss inf, the validation accuracy of its frozen state)
            curves.append(pd.DataFrame({"replica": np.arange(R), "step": step,
                                        "train_loss": (run_loss / opts.eval_every).cpu().numpy(),
                                        "val_loss": vl, "val_acc": va.copy()}))
            run_loss.zero_()
            better = ~stopped & (vl < best_loss)
            if better.any():
                local = better[live]
                rows, local_t = torch.as_tensor(live[local], device=device), torch.as_tensor(local, device=device)
                best_data[rows] = trainer.params.data.detach()[local_t]
                for k, v in bufs.items():
                    best_buf[k][rows] = v[local_t]
                best_loss[better], best_step[better], since[better] = vl[better], step, 0
            since[~stopped & ~better] += 1
            newly = ~stopped & (((since >= opts.patience) & (step >= opts.min_steps)) | ~alive)
            stop_step[newly] = step
            stopped |= newly
            trainer.active &= ~torch.as_tensor(stopped[live], device=device)
            diverged[live] = trainer.diverged
            if opts.compact and newly[live].any() and not stopped.all():
                keep = np.flatnonzero(~stopped[live])
                keep_t = torch.as_tensor(keep, device=device)
                trainer.keep(keep_t)
                bufs = {k: v[keep_t] for k, v in bufs.items()}
                live = live[keep]
                live_t = torch.as_tensor(live, device=device)
    finally:
        if progress is not None:
            progress.close()

    with torch.no_grad():
        params.data.copy_(best_data)
        for k, v in buffers.items():
            v.copy_(best_buf[k])
    views = {n: v.detach() for n, v in params.views.items()}
    val_loss, val_acc = evaluate(views, buffers, spec, xv, yv)
    _, test_acc = evaluate(views, buffers, spec, tokens(split.x_test, opts.patch, dtype, device),
                           torch.as_tensor(split.y_test, device=device))
    n_tr = min(len(y), 2000)  # training accuracy on a fixed subset: the fit, not a selection signal
    _, train_acc = evaluate(views, buffers, spec, x[:n_tr], y[:n_tr])
    lr_col = np.repeat(np.asarray(opts.lrs, dtype=np.float64), S)
    # a replica whose validation loss is not finite (diverged) has no score: the worst, by the package's rule
    trials = pd.DataFrame({"lr": lr_col, "val_acc": np.where(np.isfinite(val_loss), val_acc, np.nan)})
    best = select.chosen_lr(trials, [], "val_acc", higher_is_better=True).iloc[0]
    chosen = int(np.flatnonzero(np.asarray(opts.lrs, dtype=np.float64) == best)[0])
    runs = pd.DataFrame({"lr": lr_col, "seed": rep_seeds, "best_step": best_step, "stop_step": stop_step,
                         "stopped_early": stop_step < opts.max_steps, "diverged_step": diverged,
                         "val_loss": val_loss, "val_acc": val_acc, "train_acc": train_acc, "test_acc": test_acc,
                         "selected": np.repeat(np.arange(n_lr) == chosen, S)})
    cur = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if len(cur):
        cur.insert(0, "seed", np.asarray(rep_seeds)[cur.replica.to_numpy()])
        cur.insert(0, "lr", lr_col[cur.replica.to_numpy()])
        cur = cur.drop(columns="replica")
    return Bracket(views, buffers, runs, cur, float(opts.lrs[chosen]))
