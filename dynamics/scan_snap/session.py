"""One call for one Y/Z experiment in Python: ``simulate(spec, eta_y=..., eta_z=..., seeds=..., steps=...)``.

Tian et al. 2023, Sec. 3: a 1-layer transformer whose attention logits on contextual token l for the
query of class n are Z[x_T, l], trained with separate learning rates eta_Y (decoder) and eta_Z
(attention).  The returned :class:`Simulation` holds the batched trajectory (every seed advanced as one
tensor program by :func:`dynamics.scan_snap.train.train`) and turns it into tidy DataFrames:

* :meth:`Simulation.to_frame`: one row per run x recorded step x class x contextual token, with the
  attention ``c`` (Eq. 5, c_{l|n} = P(l|n) e^{z_{ml}} / sum_l' P(l'|n) e^{z_{ml'}}), P(l|n), and
  whether l is distinct to n;
* :meth:`Simulation.loss_frame`: the training loss per run and step (nats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import metrics
from .data import SequenceClasses, SyntheticSpec, build_classes
from .train import TrainOptions, Trajectory, train


@dataclasses.dataclass
class Simulation:
    classes: SequenceClasses
    trajectory: Trajectory
    eta_y: float
    eta_z: float
    seeds: int

    def attention(self) -> np.ndarray:
        """c at each recorded step: (steps recorded, seeds, K classes, M tokens)."""
        return metrics.attention(self.trajectory.full_Z(self.classes.M), self.classes)

    def to_frame(self) -> pd.DataFrame:
        """Tidy attention: columns seed, step, cls, token, p_l_given_n, distinct, c, diverged_step.

        Only each class's contextual tokens (P(l|n) > 0) appear.  Rows of a run after it diverged hold NaN.
        """
        c = self.attention()
        steps = self.trajectory.steps
        k, tok = np.nonzero(self.classes.probs > 0)
        S, R = len(steps), c.shape[1]
        vals = c[:, :, k, tok]  # (S, R, pairs)
        st, run, pair = np.meshgrid(np.arange(S), np.arange(R), np.arange(len(k)), indexing="ij")
        return pd.DataFrame({
            "seed": run.ravel(), "step": steps[st.ravel()], "cls": k[pair.ravel()], "token": tok[pair.ravel()],
            "p_l_given_n": self.classes.probs[k, tok][pair.ravel()],
            "distinct": self.classes.distinct[k, tok][pair.ravel()],
            "c": vals.ravel(), "diverged_step": self.trajectory.diverged[run.ravel()],
        })

    def loss_frame(self) -> pd.DataFrame:
        """Training loss (nats) per seed and SGD step (1-based)."""
        loss = self.trajectory.loss  # (steps, R)
        step, run = np.meshgrid(np.arange(1, loss.shape[0] + 1), np.arange(loss.shape[1]), indexing="ij")
        return pd.DataFrame({"seed": run.ravel(), "step": step.ravel(), "loss": loss.ravel()})


def simulate(spec: SyntheticSpec | None = None, *, eta_y: float = 1.0, eta_z: float = 1.0, seeds: int = 1,
             steps: int = 100, record: Sequence[int] | None = None, root_seed: int = 0, **options) -> Simulation:
    """Train ``seeds`` independent Y/Z runs on the synthetic classes of ``spec`` (default: Syn-Small of
    Fig. 4) and record Z at ``record`` (default: every step, 0 = init).

    ``options`` are :class:`~dynamics.scan_snap.train.TrainOptions` fields: batch, T, optimizer
    ('sgd' or 'adam'), momentum, init, normalize, residual, dtype, device.
    """
    from ..errors import UserError

    spec = spec or SyntheticSpec()
    unknown = set(options) - {f.name for f in dataclasses.fields(TrainOptions)}
    if unknown:
        raise UserError(f"unknown simulate() options: {sorted(unknown)}")
    if not (eta_y > 0 and eta_z > 0 and np.isfinite(eta_y) and np.isfinite(eta_z)):
        raise UserError(f"learning rates must be finite and positive, got eta_y={eta_y}, eta_z={eta_z}")
    if seeds < 1 or steps < 1:
        raise UserError(f"seeds and steps must be at least 1, got {seeds} and {steps}")
    opts = TrainOptions(steps=steps, root_seed=root_seed, **options)
    classes = build_classes(spec)
    record = range(steps + 1) if record is None else record
    traj = train(classes, [eta_y] * seeds, [eta_z] * seeds, list(range(seeds)), opts, record)
    return Simulation(classes, traj, eta_y, eta_z, seeds)
