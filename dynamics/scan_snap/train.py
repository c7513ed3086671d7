"""Batched SGD/Adam training of the Y/Z model: many runs advance together as one tensor program.

Runs are (cell, seed) pairs along a leading axis R, each with its own eta_Y and eta_Z.  The data and
the random init depend only on (root seed, seed index): every run with the same seed sees the same
sample stream and the same init, whatever its learning rates and whichever batch it ran in (common
random numbers, as one seed does in the official sweep).  A run whose loss or parameters become
NaN/inf is frozen and reported as diverged at that step; the other runs go on.

Only the parameters that can move are stored (see :func:`model.loss_and_grads`): Y's rows for the
input vocabulary V and Z's query rows restricted to V.  :class:`Trajectory` maps them back to token ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .. import memory
from ..runtime import RunLog, record_within, torch_dtype, torch_generator
from . import grouped, model, optim
from .data import Sampler, SequenceClasses


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    steps: int = 100
    batch: int = 128
    T: int = 128  # sequence length including the query: T-1 contextual tokens
    optimizer: str = "sgd"
    momentum: float = 0.9
    init: str = "zero"
    normalize: bool = True
    residual: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    root_seed: int = 0
    kernel: str = "auto"  # dense, grouped (samples grouped by class: grouped.py), or auto (grouped when it saves work)


@dataclasses.dataclass
class Trajectory:
    """Recorded quantities at the SGD steps ``steps`` (0 = init).

    queries (Q,) and vocab (V,) are token ids; Z: (S, R, Q, V) the query rows of Z on V;
    Y: (S, R, V, M) or None; loss: (steps, R) training loss per step; diverged: (R,) first step with a
    non-finite value, or -1.  Diverged runs are NaN from then on.
    """

    steps: np.ndarray
    queries: np.ndarray
    vocab: np.ndarray
    Z: np.ndarray
    Y: np.ndarray | None
    loss: np.ndarray
    diverged: np.ndarray

    def full_Z(self, M: int) -> np.ndarray:
        """(S, R, M, M) with the stored entries in place and zeros elsewhere (entries that are never
        read by the model; attention metrics only use keys with P(l|n) > 0, all inside V)."""
        out = np.zeros(self.Z.shape[:2] + (M, M))
        out[:, :, self.queries[:, None], self.vocab[None, :]] = self.Z
        return out


def input_vocab(classes: SequenceClasses, residual: bool) -> np.ndarray:
    """Token ids that can reach the decoder: possible keys, plus the queries with the residual."""
    vocab = np.flatnonzero(classes.probs.sum(0) > 0)
    return np.union1d(vocab, classes.queries) if residual else vocab


def train(classes: SequenceClasses, eta_y: Sequence[float], eta_z: Sequence[float], run_seed: Sequence[int],
          opts: TrainOptions, record: Sequence[int], bar: Callable | None = None,
          record_y: bool = False) -> Trajectory:
    """Train R = len(eta_y) runs; ``run_seed[r]`` is the seed index of run r."""
    memory.keep_freed_memory()
    dtype, device = torch_dtype(opts.dtype), torch.device(opts.device)
    R, M = len(eta_y), classes.M
    seeds = sorted(set(int(s) for s in run_seed))
    index = torch.tensor([seeds.index(int(s)) for s in run_seed], device=device)
    data_gens = [torch_generator(opts.root_seed, s, "data") for s in seeds]
    init_gens = [torch_generator(opts.root_seed, s, "init") for s in seeds]
    sampler = Sampler(classes, device)
    queries, vocab = classes.queries, input_vocab(classes, opts.residual)
    V = len(vocab)
    col_of = torch.full((M,), V, dtype=torch.long, device=device)  # token id -> column in V
    col_of[torch.as_tensor(vocab, device=device)] = torch.arange(V, device=device)
    row_of = torch.full((M,), -1, dtype=torch.long, device=device)  # query token id -> row of Zq
    row_of[torch.as_tensor(queries, device=device)] = torch.arange(len(queries), device=device)

    Y, Z = model.init_params(R, M, opts.init, init_gens, index, dtype, device)
    vq, vv = torch.as_tensor(queries, device=device), torch.as_tensor(vocab, device=device)
    Y = Y[:, vv, :].contiguous()
    Z = Z[:, vq[:, None], vv[None, :]].contiguous()
    lr_y = torch.tensor(eta_y, dtype=dtype, device=device)
    lr_z = torch.tensor(eta_z, dtype=dtype, device=device)
    opt = optim.make(opts.optimizer, [lr_y, lr_z], opts.momentum)
    layout = grouped.ClassLayout(classes, vocab, queries, opts.residual, device) if opts.kernel != "dense" else None
    if opts.kernel == "auto" and not layout.worthwhile(opts.batch):
        layout = None

    record = record_within(record, opts.steps)
    rec_Z, rec_Y = [], []
    log = RunLog(R, opts.steps, device, bar, "train")
    for step in range(opts.steps + 1):
        if step in record:
            dead = ~log.alive.cpu().numpy()
            # copy=True: for float64 parameters .double() would alias the live tensor, which the
            # optimiser keeps updating in place
            rec_Z.append(Z.to(torch.float64, copy=True).cpu().numpy())
            rec_Z[-1][dead] = np.nan
            if record_y:
                rec_Y.append(Y.to(torch.float64, copy=True).cpu().numpy())
                rec_Y[-1][dead] = np.nan
        if step == opts.steps:
            break
        # one sample stream per seed; counts are computed once per seed and shared by its runs
        draws = [sampler.draw(opts.batch, opts.T, g) for g in data_gens]
        cls = torch.stack([d[0] for d in draws])
        counts = model.context_counts(col_of[torch.stack([d[1] for d in draws])], V + 1, dtype)
        if layout is not None:
            grouped_counts, weight = layout.arrange(cls, counts, dtype)
            loss, gy, gz = layout.loss_and_grads(Y, Z, grouped_counts[index], weight[index], opts.batch, opts.normalize)
        else:
            query, label = sampler.query[cls][index], sampler.next[cls][index]
            qcol = col_of[query] if opts.residual else None
            loss, gy, gz = model.loss_and_grads(Y, Z, row_of[query], counts[..., :V][index], qcol, label,
                                                opts.normalize)
        log.step(step, loss, [Y, Z], [gy, gz], [lr_y, lr_z], opt)
    log.close()
    Zs = np.stack(rec_Z) if rec_Z else np.empty((0, R, len(queries), V))
    Ys = (np.stack(rec_Y) if rec_Y else np.empty((0, R, V, M))) if record_y else None
    return Trajectory(np.array(record, dtype=int), queries, vocab, Zs, Ys, log.losses, log.diverged)
