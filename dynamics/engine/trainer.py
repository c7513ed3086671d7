"""The training step of R replicas: per-replica losses -> one backward -> per-replica clipping ->
divergence freeze -> fused optimiser step; recording at chosen steps only; precision options.

A replica diverges at step t when its loss or its gradient norm at step t is not finite.  It is then
frozen alone: its learning rate is masked to 0 from step t on (its parameters and optimiser state stay
as they were before step t), its reported losses are NaN, and ``diverged[r] = t``.  Replicas share no
tensor entry, so a frozen replica cannot change the others: their losses enter one sum whose gradient
with respect to replica r's parameters is replica r's own gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import torch

from .. import memory
from ..runtime import torch_dtype
from .optim import clip_per_replica
from .params import ReplicaParams, backward


@dataclasses.dataclass(frozen=True)
class Precision:
    """Where and how the arithmetic runs.  ``autocast="bf16"`` runs the forward under bfloat16 autocast
    (CUDA; on CPU too, where it is rarely faster); ``tf32`` lets CUDA matmuls use TF32 (restored after
    each step).  Parameters and optimiser state stay in ``dtype``."""

    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    autocast: Literal["none", "bf16"] = "none"
    tf32: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @contextlib.contextmanager
    def context(self):
        dev = torch.device(self.device)
        with contextlib.ExitStack() as stack:
            if self.tf32 and dev.type == "cuda":
                old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
                stack.callback(lambda: _set_tf32(*old))
            if self.autocast == "bf16":
                stack.enter_context(torch.autocast(dev.type, dtype=torch.bfloat16))
            yield


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


class Record:
    """What a recording forward pass keeps: ``maps[(name, layer)]`` detached tensors (attention maps
    (R, B, H, T, T), sublayer states (R, B, T, d), ...), appended by the model's forward."""

    def __init__(self, step: int):
        self.step = step
        self.maps: dict[tuple[str, int], torch.Tensor] = {}

    def add(self, name: str, layer: int, tensor: torch.Tensor) -> None:
        self.maps[(name, layer)] = tensor.detach().clone()


LossFn = Callable[[int, "Record | None"], torch.Tensor]  # (step, record or None) -> per-replica loss (R,)


class Trainer:
    """Steps R replicas.  ``lr``: (steps, R) learning-rate table (:func:`optim.lr_table`);
    ``clip``: per-replica gradient-norm clipping (0 = none); ``record_steps``: steps at which the loss
    function receives a :class:`Record` to fill (None on every other step, so no overhead there)."""

    def __init__(self, params: ReplicaParams, optimizer, lr: torch.Tensor, clip: float = 0.0,
                 record_steps: Iterable[int] = (), precision: Precision = Precision()):
        self.params, self.opt, self.lr, self.clip, self.precision = params, optimizer, lr, clip, precision
        # A step's temporaries are R times one model's: above glibc's mmap threshold each would be mapped,
        # page-faulted and unmapped every step (measured: 40% of a wikitext-attention run in system time).
        memory.keep_freed_memory()
        dev = params.data.device
        self.active = torch.ones(params.R, dtype=torch.bool, device=dev)
        self._diverged = torch.full((params.R,), -1, dtype=torch.long, device=dev)
        self.record_steps = set(record_steps)
        self.records: dict[int, Record] = {}
        self.step_count = 0

    def step(self, loss_fn: LossFn) -> torch.Tensor:
        """One update of every active replica; returns the losses (R,) (detached, NaN when frozen)."""
        t = self.step_count
        rec = Record(t) if t in self.record_steps else None
        self.params.zero_grad()
        with self.precision.context():
            loss = loss_fn(t, rec)
        loss = loss.to(self.params.data.dtype)
        ok = torch.isfinite(loss) & self.active
        backward(torch.where(ok, loss, torch.zeros_like(loss)).sum())
        g = self.params.grad
        norm = torch.linalg.vector_norm(g, dim=1)
        ok &= torch.isfinite(norm)
        self._diverged.masked_fill_(self.active & ~ok, t)
        self.active &= ok
        g.masked_fill_(~self.active[:, None], 0.0)
        if self.clip > 0:
            clip_per_replica(g, self.clip, norm.masked_fill(~self.active, 0.0))
        self.opt.step(self.lr[t], self.active)
        if rec is not None:
            self.records[t] = rec
        self.step_count += 1
        return torch.where(self.active, loss.detach(), torch.full_like(loss, float("nan")))

    def keep(self, rows: torch.Tensor) -> None:
        """Train only the replicas ``rows`` (indices into the current ones, in that order) from now on:
        parameters, optimiser state, learning-rate columns and flags are narrowed to them, so stopped
        replicas no longer cost a forward or backward pass.  ``self.params`` is replaced; a caller that
        holds its views must take the new ones.  The kept replicas continue exactly as they would have."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.params.data.device)
        params = self.params.select(rows)
        self.opt = self.opt.select(params, rows)
        self.params, self.lr = params, self.lr[:, rows]
        self.active, self._diverged = self.active[rows], self._diverged[rows]

    @property
    def diverged(self) -> np.ndarray:
        """(R,) the step at which each replica froze, or -1."""
        return self._diverged.cpu().numpy()
