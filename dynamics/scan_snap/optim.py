"""SGD with momentum and Adam, batched along a leading run axis with a learning rate per run.

``torch.optim`` takes one learning rate per parameter tensor; here each of R runs lives in a slice of
one tensor and has its own eta_Y and eta_Z, so the update is written out.  The formulas are
PyTorch's (``torch.optim.SGD`` with dampening 0 and ``torch.optim.Adam``), so a single run matches the
official code's optimiser step for step.
"""

from __future__ import annotations

import torch


class SGD:
    """p <- p - lr * buf, buf <- momentum * buf + grad (buf = grad on the first step)."""

    def __init__(self, lrs: list[torch.Tensor], momentum: float = 0.9):
        self.lrs = [lr.view(-1, 1, 1) for lr in lrs]
        self.momentum = momentum
        self.bufs: list[torch.Tensor | None] = [None] * len(lrs)

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.momentum:
                if self.bufs[i] is None:
                    self.bufs[i] = g.clone()
                else:
                    self.bufs[i].mul_(self.momentum).add_(g)
                g = self.bufs[i]
            p.addcmul_(self.lrs[i], g, value=-1.0)

    @torch.no_grad()
    def forget(self, runs: torch.Tensor) -> None:
        """Clear the state of the masked runs (after divergence, so NaN does not stay in momentum)."""
        for buf in self.bufs:
            if buf is not None:
                buf[runs] = 0.0


class Adam:
    """Adam (Kingma & Ba) with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, bias correction."""

    def __init__(self, lrs: list[torch.Tensor], betas=(0.9, 0.999), eps: float = 1e-8):
        self.lrs = [lr.view(-1, 1, 1) for lr in lrs]
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.m: list[torch.Tensor | None] = [None] * len(lrs)
        self.v: list[torch.Tensor | None] = [None] * len(lrs)

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.m[i] is None:
                self.m[i], self.v[i] = torch.zeros_like(p), torch.zeros_like(p)
            self.m[i].mul_(self.b1).add_(g, alpha=1 - self.b1)
            self.v[i].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (self.v[i] / c2).sqrt_().add_(self.eps)
            p.addcmul_(self.lrs[i], self.m[i] / denom, value=-1.0 / c1)

    @torch.no_grad()
    def forget(self, runs: torch.Tensor) -> None:
        for state in (*self.m, *self.v):
            if state is not None:
                state[runs] = 0.0


def make(name: str, lrs: list[torch.Tensor], momentum: float):
    return SGD(lrs, momentum) if name == "sgd" else Adam(lrs)
