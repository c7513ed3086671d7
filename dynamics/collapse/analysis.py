"""Turn a recording forward pass into collapse measurements (numpy float64 arrays).

Input: a :class:`~dynamics.collapse.vit.Record` of R runs, L blocks, B probe images.  Output arrays
carry the run axis first; the experiment module turns them into tidy tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from . import metrics
from .attention import reattention_closed_form
from .vit import Record


@dataclasses.dataclass
class Collapse:
    """Per-run, per-block measurements.

    pair_frac: (R, L, max_lag, n_tau, 2) frac_{p,p-j}(tau) for centred = (False, True); NaN for p - j < 1
    pair_mean: (R, L, max_lag, 2) mean M^{p,p-j} over (images, heads, tokens)
    entropy:   (R, L) mean normalised entropy of the softmax maps
    row_identity_softmax, row_identity_effective: (R, L)
    token_residual: (R, L + 1) mean over images of Dong et al.'s residual ratio of the residual stream
                    (index 0 = embedding, l = after block l)
    dc_abs:    (R, L) mean |DC component| of the effective maps (per image and head)
    """

    pair_frac: np.ndarray
    pair_mean: np.ndarray
    entropy: np.ndarray
    row_identity_softmax: np.ndarray
    row_identity_effective: np.ndarray
    token_residual: np.ndarray
    dc_abs: np.ndarray


def stack(maps: Sequence[torch.Tensor]) -> np.ndarray:
    """L tensors (R, B, H, T, T) -> numpy (R, L, B, H, T, T) float64."""
    return torch.stack(list(maps), dim=1).to(torch.float64).cpu().numpy()


def pair_stats(maps: np.ndarray, taus: Sequence[float], max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """(frac, mean) for a stack (R, L, B, H, T, T): frac (R, L, max_lag, n_tau, 2) and mean (R, L, max_lag, 2)
    over centred = (False, True); NaN where block p - j does not exist."""
    R, L = maps.shape[:2]
    frac = np.full((R, L, max_lag, len(taus), 2), np.nan)
    mean = np.full((R, L, max_lag, 2), np.nan)
    for c, centred in enumerate((False, True)):
        for j in range(1, min(max_lag, L - 1) + 1):
            M = metrics.lagged_similarity(maps, j, centred)  # (R, L - j, B, H, T)
            frac[:, j:, j - 1, :, c] = metrics.similarity_fraction(M, taus)
            mean[:, j:, j - 1, c] = M.mean((-3, -2, -1))
    return frac, mean


def measure(rec: Record, taus: Sequence[float], max_lag: int) -> Collapse:
    """Similarity of the effective maps (those that multiply V) and the per-block quantities."""
    eff = stack(rec.effective)
    soft = stack(rec.softmax)
    frac, mean = pair_stats(eff, taus, max_lag)
    hidden = torch.stack(rec.hidden, 1).to(torch.float64).cpu().numpy()  # (R, L+1, B, T, d)
    return Collapse(
        pair_frac=frac,
        pair_mean=mean,
        entropy=metrics.attention_entropy(soft).mean((-3, -2, -1)),
        row_identity_softmax=metrics.row_identity(soft).mean((-2, -1)),
        row_identity_effective=metrics.row_identity(eff).mean((-2, -1)),
        token_residual=metrics.residual_ratio(hidden).mean(-1),
        dc_abs=np.abs(metrics.dc_component(eff)).mean((-2, -1)),
    )


def bn_identity_errors(rec: Record, params: dict, scale: float = 1.0) -> dict[str, np.ndarray]:
    """How exactly re-attention's BN removed the uniform component, per run (R,).

    ``rec`` must come from a training-mode (batch-statistics) pass of a "reattn" model, ideally in
    float64; ``scale`` is the official ``reatten_scale`` (1, or d_h^{-1/2} with ``transform_scale``),
    which multiplies the whole BN output.  Returns

    dc_dev:      max over (blocks, images, heads) |DC(effective map) - s beta_g| / rms(effective - s beta),
                 0 when the identity holds (every image's map has mean exactly s beta_g);
    closed_form: max over blocks of ||BN output - closed form|| / ||BN output|| (the identity itself).
    """
    soft = torch.stack(list(rec.softmax), 1).to(torch.float64)  # (R, L, B, H, T, T)
    eff = torch.stack(list(rec.effective), 1).to(torch.float64)
    R, L, _, H = eff.shape[:4]
    beta = params["bn_b"].detach().to(torch.float64).view(R, L, 1, H) * scale
    gamma = params["bn_g"].detach().to(torch.float64)
    theta = params["theta"].detach().to(torch.float64)
    centred = eff - beta[..., None, None]
    rms = centred.pow(2).mean((2, 3, 4, 5)).sqrt().clamp_min(1e-300)  # (R, L)
    dc = (eff.mean((-2, -1)) - beta).abs().amax(dim=(2, 3))  # (R, L)
    dc_dev = (dc / rms).amax(1)
    errs = []
    for l in range(L):
        pred = reattention_closed_form(soft[:, l], theta[:, l], gamma[:, l] * scale, beta[:, l, 0])
        diff = (eff[:, l] - pred).flatten(1).norm(dim=1) / eff[:, l].flatten(1).norm(dim=1).clamp_min(1e-300)
        errs.append(diff)
    return {"dc_dev": dc_dev.cpu().numpy(), "closed_form": torch.stack(errs, 1).amax(1).cpu().numpy()}


def trained_accuracy(per_run, variant: str, depth: int, width: int, column: str = "acc_test"):
    """One trained cell's accuracy per seed (a pandas Series indexed by seed, sorted) from a
    ``per_run.csv`` table of ``deepvit-collapse``: the chosen learning rate's test accuracy by default
    (``acc_val``, ``acc_train`` for the others).  Compare cells of two runs with
    :func:`dynamics.stats.welch`, or of one run (shared seeds) with :func:`dynamics.stats.paired`."""
    g = per_run[(per_run.study == "trained") & (per_run.variant == variant) & (per_run.depth == depth)
                & (per_run.width == width)]
    return g.set_index("seed")[column].sort_index()
