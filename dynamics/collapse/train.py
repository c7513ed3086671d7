"""Batched training and probing of the ViT: R runs (seeds) of one architecture advance together.

Training runs on :mod:`dynamics.engine`: the R runs' parameters live in one flat (R, P) buffer, the
optimiser is the engine's fused AdamW (PyTorch's ``torch.optim.AdamW`` arithmetic, betas (0.9, 0.999),
eps 1e-8, applied per run), linear warm-up then cosine decay to 0, weight decay on weight matrices only,
cross-entropy loss summed over runs (each run's gradient is its own).  Each run draws its own minibatch
order from (root seed, seed index), so runs are independent seeds.  A run whose loss or gradient turns
NaN/inf is frozen alone at that step and recorded as diverged there (its later losses are NaN; its
parameters, optimiser state and BN running statistics stay as they were before that step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import memory
from ..engine import FusedAdamW, Precision, ReplicaParams, Schedule, Trainer, lr_table
from ..runtime import torch_dtype
from .data import Split, patchify
from .vit import Record, ViTSpec, decayed, forward, init_params


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    steps: int = 600  # AdamW steps
    batch: int = 128  # images per step per run
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05
    warmup: float = 0.1  # fraction of steps with linear warm-up
    patch: int = 2
    root_seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"


@dataclasses.dataclass
class Trained:
    """Trained parameters of R runs and their learning curves."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    loss: np.ndarray  # (steps, R) training loss per step
    diverged: np.ndarray  # (R,) first step with a non-finite loss, or -1


def schedule(opts: TrainOptions) -> Schedule:
    """Linear warm-up over ``warmup * steps`` steps, then cosine decay to 0 (t counts AdamW steps)."""
    return Schedule(opts.steps, warmup=max(1, round(opts.warmup * opts.steps)))


def tokens(split: Split, patch: int, train: bool, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (split.x_train, split.y_train) if train else (split.x_test, split.y_test)
    return (torch.as_tensor(patchify(x, patch), dtype=dtype, device=device),
            torch.as_tensor(y, device=device))


def train(spec: ViTSpec, split: Split, seeds: list[int], opts: TrainOptions,
          bar: Callable | None = None) -> Trained:
    """Train one run per entry of ``seeds`` (seed indices) for ``opts.steps`` AdamW steps."""
    memory.keep_freed_memory()
    dtype, device = torch_dtype(opts.dtype), torch.device(opts.device)
    init, buffers = init_params(spec, seeds, opts.root_seed, dtype, device)
    params = ReplicaParams.from_tensors({n: t.detach() for n, t in init.items()}, lambda n, t: decayed(n))
    del init
    x, y = tokens(split, opts.patch, True, dtype, device)
    R, N = len(seeds), len(y)
    trainer = Trainer(params, FusedAdamW(params, weight_decay=opts.weight_decay),
                      lr_table([opts.lr] * R, schedule(opts), opts.steps, dtype, device),
                      precision=Precision(opts.device, opts.dtype))
    # Minibatch order: each run walks through its own permutations of the training set.
    order = np.stack([_order(opts.root_seed, s, N, opts.steps * opts.batch) for s in seeds])  # (R, steps*B)
    order = torch.as_tensor(order.reshape(R, opts.steps, opts.batch), device=device)
    drop_gen = torch.Generator(device=device).manual_seed(opts.root_seed * 1_000_003 + 17)
    losses = torch.full((opts.steps, R), float("nan"), dtype=torch.float64, device=device)
    progress = bar(opts.steps, f"train L={spec.depth} d={spec.width} {spec.attention}") if bar else None

    def loss_fn(step: int, rec) -> torch.Tensor:
        idx = order[:, step]  # (R, B)
        logits, _ = forward(params.views, buffers, spec, x[idx], train=True, generator=drop_gen)
        return F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none").view(R, -1).mean(1)

    try:
        for step in range(opts.steps):
            saved = {k: v.clone() for k, v in buffers.items()}
            losses[step] = trainer.step(loss_fn)
            frozen = ~trainer.active
            for k, v in buffers.items():  # a frozen run's BN running statistics stay as they were
                v.copy_(torch.where(frozen.view(-1, *([1] * (v.dim() - 1))), saved[k], v))
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    return Trained(params.views, buffers, losses.cpu().numpy(), trainer.diverged)


def _order(root_seed: int, seed: int, n: int, total: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([root_seed, seed, 0xDA7A]))
    reps = -(-total // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total]


@torch.no_grad()
def accuracy(params: dict, buffers: dict, spec: ViTSpec, split: Split, opts: TrainOptions,
             train_set: bool = False, chunk: int = 512) -> np.ndarray:
    """Eval-mode accuracy per run (R,) on the test (or training) images."""
    dtype, device = torch_dtype(opts.dtype), torch.device(opts.device)
    x, y = tokens(split, opts.patch, train_set, dtype, device)
    R = next(iter(params.values())).shape[0]
    correct = torch.zeros(R, device=device)
    for start in range(0, len(y), chunk):
        xb = x[start:start + chunk].unsqueeze(0).expand(R, -1, -1, -1)
        logits, _ = forward(params, buffers, spec, xb, train=False)
        correct += (logits.argmax(-1) == y[start:start + chunk]).sum(-1)
    return (correct / len(y)).cpu().numpy()


@torch.no_grad()
def probe(params: dict, buffers: dict, spec: ViTSpec, x: torch.Tensor, train: bool,
          generator: torch.Generator | None = None) -> Record:
    """A recording forward pass on the same images x (B, n_patches, patch_dim) for every run.

    ``train=True`` uses BN batch statistics and attention dropping (the random-init analysis: an
    untrained BN's running statistics are the identity); ``train=False`` is the deployed model.
    BN running statistics are restored afterwards, so probing never changes the model.
    """
    saved = {k: v.clone() for k, v in buffers.items()}
    R = next(iter(params.values())).shape[0]
    _, rec = forward(params, buffers, spec, x.unsqueeze(0).expand(R, -1, -1, -1), train=train,
                     generator=generator, record=True)
    for k, v in saved.items():
        buffers[k].copy_(v)
    return rec
