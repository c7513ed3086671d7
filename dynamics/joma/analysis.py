"""Trajectories of the JoMA block -> tidy DataFrames (one row per run x recorded step)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import invariant as inv
from . import theory
from .model import Trajectory


def invariant_frame(tr: Trajectory, kind: str, eta_z: float, eta_v: float) -> pd.DataFrame:
    """Thm. 1 along a trajectory: relative error of the predicted logits and NC(z_hat, z) (Fig. 2).

    Columns: seed_index, step, time (= eta_v * step, the gradient-flow time), rel_error, nc, entropy,
    loss.  rel_error is NaN at step 0 (z has not moved)."""
    ratio = np.full(tr.z.shape[1], eta_z / eta_v)
    z_hat = inv.predicted_logits(kind, tr.z[0], tr.V[0], tr.V, tr.b_bar, ratio)
    err = inv.relative_error(tr.z, z_hat, tr.z[0], centre=(kind == "softmax"))
    nc = inv.normalized_correlation(z_hat, tr.z)
    S, R = tr.z.shape[:2]
    seed, k = np.meshgrid(np.arange(R), np.arange(S), indexing="ij")
    return pd.DataFrame({"seed_index": seed.ravel(), "step": tr.steps[k].ravel(),
                         "time": eta_v * tr.steps[k].ravel(), "rel_error": err.T.ravel(), "nc": nc.T.ravel(),
                         "entropy": tr.entropy.T.ravel(), "loss": tr.loss.T.ravel()})


def entropy_frame(tr: Trajectory) -> pd.DataFrame:
    """Attention entropy (nats, mean over classes) and loss per run and recorded step."""
    S, R = tr.entropy.shape
    seed, k = np.meshgrid(np.arange(R), np.arange(S), indexing="ij")
    return pd.DataFrame({"seed_index": seed.ravel(), "step": tr.steps[k].ravel(),
                         "entropy": tr.entropy.T.ravel(), "loss": tr.loss.T.ravel()})


def turning_frame(steps: np.ndarray, H: np.ndarray, delta: float) -> pd.DataFrame:
    """Per run: entropy drop, rebound, the sparse-to-dense turning step (where the running minimum stood)
    and the rise step (where the rise is detected); NaN: never turns."""
    return pd.DataFrame({"seed_index": np.arange(H.shape[1]), "entropy_drop": theory.drop(H),
                         "entropy_rebound": theory.rebound(H), "turning_step": theory.turning_step(steps, H, delta),
                         "rise_step": theory.rise_step(steps, H, delta),
                         "entropy_init": H[0], "entropy_min": H.min(0), "entropy_final": H[-1]})
