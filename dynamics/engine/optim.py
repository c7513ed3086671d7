"""Fused optimisers over the flat (R, P) buffers of :class:`ReplicaParams`, with per-replica learning
rates and schedules, and frozen replicas.

AdamW (Loshchilov & Hutter 2019, Alg. 2; PyTorch's ``torch.optim.AdamW`` arithmetic), per replica r
with learning rate lr_r(t) and t_r counting that replica's own updates::

    theta <- theta (1 - lr_r wd)                         (decayed parameters only)
    m <- m + (1 - b1)(g - m);   v <- b2 v + (1 - b2) g^2
    theta <- theta - lr_r / (1 - b1^t_r) * m / (sqrt(v) / sqrt(1 - b2^t_r) + eps)

SGD with momentum (PyTorch's ``torch.optim.SGD``, dampening 0): g <- g + wd theta; b <- mu b + g;
theta <- theta - lr_r b.  A frozen replica (``active[r]`` False) is left exactly as it is: parameters,
moments and its step count t_r.  Every step is a fixed handful of (R, P) operations, whatever the
number of parameter tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .params import ReplicaParams


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning-rate multiplier over ``steps`` updates: linear warm-up (step+1)/warmup over ``warmup``
    steps, then cosine decay from 1 to ``floor`` at the last step ("cosine"), or 1 throughout
    ("constant", warm-up still applies)."""

    steps: int
    warmup: int = 0
    kind: Literal["cosine", "constant"] = "cosine"
    floor: float = 0.0

    def factor(self, step: int) -> float:
        return self.lr(1.0, step)

    def lr(self, peak: float, step: int) -> float:
        """peak x factor, multiplied in the order the experiments' own schedules did (bit-identical)."""
        if step < self.warmup:
            return peak * (step + 1) / self.warmup
        if self.kind == "constant":
            return peak
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.floor == 0:
            return peak * 0.5 * (1 + math.cos(math.pi * frac))
        return peak * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def lr_table(peaks: Sequence[float], schedules: Schedule | Sequence[Schedule], steps: int, dtype=torch.float64,
             device: str | torch.device = "cpu") -> torch.Tensor:
    """(steps, R) learning rates: replica r's peak times its schedule's factor (precomputed once, so a
    step reads one row and never copies from the host)."""
    R = len(peaks)
    scheds = [schedules] * R if isinstance(schedules, Schedule) else list(schedules)
    if len(scheds) != R:
        raise ValueError(f"{len(scheds)} schedules for {R} replicas")
    table = np.array([[s.lr(p, t) for p, s in zip(peaks, scheds)] for t in range(steps)], dtype=float)
    return torch.as_tensor(table.reshape(steps, R), dtype=dtype, device=device)


class FusedAdamW:
    def __init__(self, params: ReplicaParams, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.p, self.betas, self.eps, self.wd = params, betas, eps, weight_decay
        self.m = torch.zeros_like(params.data)
        self.v = torch.zeros_like(params.data)
        self.t = torch.zeros(params.R, 1, dtype=params.data.dtype, device=params.data.device)

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """lr (R,) this step's learning rates; active (R,) bool.  Gradients of frozen replicas must be
        finite (the trainer zeroes them)."""
        b1, b2 = self.betas
        p, g, dt = self.p.data, self.p.grad, self.p.data.dtype
        a = active.to(dt)[:, None]
        lr = lr.to(dt)[:, None] * a
        if self.wd and self.p.P_decay:
            p[:, :self.p.P_decay].mul_(1 - lr * self.wd)
        self.t.add_(a)
        t = self.t.clamp(min=1)
        self.m.lerp_(g, _pick(a, 1 - b1, 0.0))
        self.v.mul_(_pick(a, b2, 1.0)).addcmul_(g, g, value=1 - b2)  # frozen rows: g = 0, factor 1
        step = lr / (1 - b1 ** t)
        denom = (self.v.sqrt() / (1 - b2 ** t).sqrt()).add_(self.eps)
        p.sub_(torch.div(self.m, denom).mul_(step))

    def select(self, params: ReplicaParams, rows: torch.Tensor) -> FusedAdamW:
        """The optimiser of ``params`` (= this one's ``params.select(rows)``): moments and step counts of
        those rows carried over, so the subset continues exactly where it was."""
        out = FusedAdamW(params, self.betas, self.eps, self.wd)
        out.m.copy_(self.m[rows])
        out.v.copy_(self.v[rows])
        out.t.copy_(self.t[rows])
        return out


class FusedSGD:
    def __init__(self, params: ReplicaParams, momentum: float = 0.0, weight_decay: float = 0.0):
        self.p, self.mu, self.wd = params, momentum, weight_decay
        self.buf = torch.zeros_like(params.data) if momentum else None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        p, g, dt = self.p.data, self.p.grad, self.p.data.dtype
        a = active.to(dt)[:, None]
        lr = lr.to(dt)[:, None] * a
        if self.wd and self.p.P_decay:
            g[:, :self.p.P_decay].add_(p[:, :self.p.P_decay] * a, alpha=self.wd)
        if self.buf is not None:
            # first step: b = 0 * mu + g = g, PyTorch's initial buffer
            self.buf.mul_(_pick(a, self.mu, 1.0)).add_(g)
            g = self.buf
        p.sub_(g * lr)

    def select(self, params: ReplicaParams, rows: torch.Tensor) -> FusedSGD:
        """As :meth:`FusedAdamW.select`: the momentum buffers of ``rows`` carried over."""
        out = FusedSGD(params, self.mu, self.wd)
        if self.buf is not None:
            out.buf.copy_(self.buf[rows])
        return out


def _pick(a: torch.Tensor, on: float, off: float) -> torch.Tensor:
    """(R, 1): ``on`` for active replicas (a = 1), ``off`` for frozen ones (exact constants, no rounding)."""
    return torch.where(a > 0, a.new_full((), on), a.new_full((), off))


def clip_per_replica(grad: torch.Tensor, max_norm: float, norm: torch.Tensor) -> None:
    """Scale each replica's gradient row to norm <= max_norm (``clip_grad_norm_`` per replica)."""
    grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0)[:, None])
