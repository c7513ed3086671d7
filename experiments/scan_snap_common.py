"""Pieces shared by the Scan & Snap synthetic experiments: the config (the library's data model
:class:`~dynamics.scan_snap.data.SyntheticSpec` plus training) and turning a batch of cells into one
batched simulation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from dynamics.config import field, require
from dynamics.scan_snap import data, metrics
from dynamics.scan_snap.data import SyntheticSpec
from dynamics.scan_snap.train import TrainOptions, Trajectory, train


@dataclasses.dataclass(frozen=True)
class SynConfig:
    """Data model (Tian et al. 2023 Sec. 3.2, official ``Dataset2``) and training (``Model2``)."""

    data: SyntheticSpec = field(SyntheticSpec(), "the sequence classes (Tian et al. 2023 Sec. 3.2)")
    eta_z: float = field(1.0, "learning rate of the attention logits Z")
    ratio: float = field(1.0, "eta_Y / eta_Z: the decoder learning rate is ratio * eta_z")
    optimizer: Literal["sgd", "adam"] = field("sgd", "sgd (with momentum) or adam, for Y and Z alike")
    momentum: float = field(0.9, "SGD momentum (0.9 in the paper's runs; 0 for plain SGD)")
    init: Literal["zero", "uniform"] = field("zero", "Y(0) = Z(0) = 0, or U(-1/sqrt(M), 1/sqrt(M))")
    normalize: bool = field(True, "l2-normalise the attention output before the decoder")
    residual: bool = field(False, "add the query's one-hot vector to the attention output")
    batch: int = field(128, "sequences per SGD step")
    T: int = field(128, "sequence length including the query (T-1 contextual tokens)")
    steps: int = field(100, "SGD steps")
    seeds: int = field(10, "seeds per cell (each seed fixes init and data stream)")
    seed: int = field(0, "root seed; seed indices 0..seeds-1 are drawn from it")
    dtype: Literal["float32", "float64"] = field("float32", "simulation precision")
    device: str = field("cpu", "torch device, e.g. cpu or cuda")

    def __post_init__(self) -> None:
        require(self.optimizer in ("sgd", "adam"), f"optimizer must be sgd or adam, got {self.optimizer!r}")
        require(self.init in ("zero", "uniform"), f"init must be zero or uniform, got {self.init!r}")
        require(self.dtype in ("float32", "float64"), f"dtype must be float32 or float64, got {self.dtype!r}")
        require(self.eta_z > 0, f"eta_z must be positive, got {self.eta_z}")
        require(self.ratio > 0, f"ratio (eta_Y/eta_Z) must be positive, got {self.ratio}")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(self.T >= 2, f"T must be at least 2 (one key and the query), got {self.T}")
        require(self.batch >= 1, f"batch must be at least 1, got {self.batch}")
        require(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        require(self.seeds >= 1, f"seeds must be at least 1, got {self.seeds}")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"unknown device {self.device!r}")

    @property
    def eta_y(self) -> float:
        return self.ratio * self.eta_z


def simulation_key(cfg: SynConfig):
    """Cells that differ only in learning rates share data and init, so they run as one program."""
    return dataclasses.replace(cfg, eta_z=1.0, ratio=1.0)


def options(cfg: SynConfig) -> TrainOptions:
    return TrainOptions(steps=cfg.steps, batch=cfg.batch, T=cfg.T, optimizer=cfg.optimizer,
                        momentum=cfg.momentum, init=cfg.init, normalize=cfg.normalize,
                        residual=cfg.residual, dtype=cfg.dtype, device=cfg.device, root_seed=cfg.seed)


def simulate(cfgs: Sequence[SynConfig], record: Sequence[int], bar=None) -> tuple[data.SequenceClasses, Trajectory]:
    """One batched simulation of every (cell, seed) run; runs are cell-major: r = cell * seeds + seed."""
    first = cfgs[0]
    classes = data.build_classes(first.data)
    S = first.seeds
    eta_y = np.repeat([c.eta_y for c in cfgs], S)
    eta_z = np.repeat([c.eta_z for c in cfgs], S)
    run_seed = np.tile(np.arange(S), len(cfgs))
    return classes, train(classes, eta_y.tolist(), eta_z.tolist(), run_seed.tolist(), options(first), record, bar)


def attention_at(traj: Trajectory, classes: data.SequenceClasses) -> np.ndarray:
    """c_n at each recorded step: (S_rec, R, K, M)."""
    return metrics.attention(traj.full_Z(classes.M), classes)


def memory_bytes(cfgs: Sequence[SynConfig], records: int) -> float:
    """Rough peak bytes of one batched simulation recording ``records`` steps: the recorded logits, the
    full attention rows and the per-step metrics derived from them (float64, R x K x M each), the loss
    log (steps x R) and one step's sampled batch per seed."""
    c, d = cfgs[0], cfgs[0].data
    K = d.num_last * d.num_next_per_last
    M = d.num_common + d.num_last * (d.num_common_per_last + 1) + K * (d.num_unique_per_next + 1)
    R = len(cfgs) * c.seeds
    return 8.0 * (4 * records * R * K * M + c.steps * R + 3 * c.seeds * c.batch * c.T)


NOTES = {"common_random_numbers": "runs with the same seed index share init and sample stream across "
                                  "learning rates (as one seed does in the official sweep)"}
