"""The JoMA block and its batched training (Tian et al. 2024, Sec. 3; official ``joma/draw_figure_2_3.py``).

Setting (single query token m, T -> infinity, orthonormal embeddings so every vector is written in the
token basis)::

    x_c   in R^{M_c}    P(l | class c): the contextual-token distribution of class c  (T -> inf limit)
    z     in R^{M_c}    attention logits of the query m over contextual tokens
    b_c                 attention of class c:
                          softmax  b_c = x_c o e^z / sum_l x_cl e^{z_l}       (standard attention)
                          exp      b_c = x_c o e^z                            (unnormalised, Thm. 1 case 2)
                          linear   b_c = x_c o z                              (Thm. 1 case 1)
    f_c = U_C b_c + u_m                 residual connection: the query's own embedding is added
    pre_ck = w_k^T f_c = v_k^T b_c + r_k    v_k := U_C^T w_k (Thm. 1), r_k := u_m^T w_k
    h_ck = phi(pre_ck)                  phi: linear, relu or silu
    logits_c = A^T h_c                  readout "trained" or "fixed" (A random, not trained);
                                        readout "none": H = C and logits_c = h_c (the official Fig. 2 model)
    J = mean_c CE(logits_c, c)          classes uniform; the population (expected) loss

Training is full-batch gradient descent on J (or Adam, to break Thm. 1's assumptions on purpose), with
learning rate eta_z on z and eta_v on (V, r, A).  Runs are stacked along a leading axis R: every tensor
below carries it.  t counts gradient steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ..config import field, require
from ..runtime import record_within, torch_dtype, torch_generator
from ..scan_snap.metrics import entropy

ACTIVATIONS = ("linear", "relu", "silu")
ATTENTIONS = ("softmax", "exp", "linear")
READOUTS = ("trained", "fixed", "none")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """The data and model of one JoMA block (defaults: the official Fig. 2 data, a ReLU MLP)."""

    num_distinct: int = field(10, "contextual tokens with a class-dependent Gaussian bump in P(l|c)")
    num_common: int = field(10, "contextual tokens with P(l|c) drawn U(0, 1/2) per class and seed")
    num_classes: int = field(20, "classes C (labels of the readout)")
    bump_width: float = field(30.0, "P(l|c) ~ exp(-(l - c/C * num_distinct)^2 / bump_width) on distinct tokens")
    hidden: int = field(20, "hidden units H of the MLP (readout=none needs H = num_classes)")
    activation: str = field("relu", "MLP activation phi: linear, relu or silu")
    attention: str = field("softmax", "softmax (standard), exp (unnormalised) or linear attention")
    readout: str = field("trained", "trained: logits = A^T phi(.), A trained; fixed: A random, frozen; "
                                    "none: logits = phi(.) (H = C)")
    init_scale: float = field(0.01, "z, V, r drawn N(0, init_scale^2); A drawn N(0, 1/H)")

    def __post_init__(self) -> None:
        check_block(self)


def check_block(s) -> None:
    require(s.num_distinct >= 1 and s.num_common >= 0, "num_distinct must be >= 1 and num_common >= 0")
    require(s.num_classes >= 2, f"num_classes must be >= 2, got {s.num_classes}")
    require(s.bump_width > 0, f"bump_width must be > 0, got {s.bump_width}")
    require(s.hidden >= 1, f"hidden must be >= 1, got {s.hidden}")
    require(s.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}, got {s.activation!r}")
    require(s.attention in ATTENTIONS, f"attention must be one of {', '.join(ATTENTIONS)}, got {s.attention!r}")
    require(s.readout in READOUTS, f"readout must be one of {', '.join(READOUTS)}, got {s.readout!r}")
    require(s.readout != "none" or s.hidden == s.num_classes, "readout=none needs hidden == num_classes")
    require(s.init_scale > 0, f"init_scale must be > 0, got {s.init_scale}")


def class_distributions(spec, seed: int, root_seed: int = 0) -> np.ndarray:
    """P(l | c) as a (C, M_c) float64 array, rows summing to 1.

    Distinct tokens l < num_distinct carry a Gaussian bump centred at c/C * num_distinct (neighbouring
    classes share tokens to a graded degree); common tokens carry U(0, 1/2) weights drawn per seed.
    This is the data of the official JoMA Fig. 2 script (``use_gaussian_prob``), re-implemented.
    """
    g = torch_generator(root_seed, seed, "joma-data")
    C, D = spec.num_classes, spec.num_distinct
    x = torch.rand(C, D + spec.num_common, generator=g, dtype=torch.float64).numpy() / 2
    l = np.arange(D)[None, :]
    centre = np.arange(C)[:, None] / C * D
    x[:, :D] = np.exp(-((l - centre) ** 2) / spec.bump_width)
    return x / x.sum(1, keepdims=True)


def attention(z: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """b: (R, C, M_c) from logits z (R, M_c) and P(l|c) x (R, C, M_c); see the module docstring."""
    if kind == "softmax":
        return torch.softmax(z[:, None, :] + torch.log(x), dim=-1)
    if kind == "exp":
        return x * torch.exp(z)[:, None, :]
    return x * z[:, None, :]


def phi(pre: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return torch.relu(pre)
    if kind == "silu":
        return torch.nn.functional.silu(pre)
    return pre


def forward(params: dict, x: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run population loss (R,) and attention b (R, C, M_c)."""
    b = attention(params["z"], x, spec.attention)
    pre = torch.einsum("rcl,rlk->rck", b, params["V"]) + params["r"][:, None, :]
    h = phi(pre, spec.activation)
    logits = h if spec.readout == "none" else torch.einsum("rck,rkj->rcj", h, params["A"])
    logp = torch.log_softmax(logits, dim=-1)
    loss = -logp.diagonal(dim1=1, dim2=2).mean(-1)  # class c's label is c; classes uniform
    return loss, b


@dataclasses.dataclass
class Trajectory:
    """Recorded at ``steps`` (0 = init).  z: (S, R, M_c); V: (S, R, M_c, H); loss, entropy: (S, R);
    b_bar: (R, M_c), the class-averaged attention at t = 0 (Thm. 1, softmax case); x: (R, C, M_c);
    diverged: (R,) first step with a non-finite loss, or -1."""

    steps: np.ndarray
    z: np.ndarray
    V: np.ndarray
    loss: np.ndarray
    entropy: np.ndarray
    b_bar: np.ndarray
    x: np.ndarray
    diverged: np.ndarray


def train(spec, eta_z: Sequence[float], eta_v: Sequence[float], seeds: Sequence[int], steps: int,
          record: Sequence[int], optimizer: str = "sgd", integrate_attention: bool = False,
          root_seed: int = 0, dtype: str = "float64", device: str = "cpu", bar=None) -> Trajectory:
    """Train R = len(seeds) runs of the block as one tensor program.

    Run r has learning rates (eta_z[r], eta_v[r]); its data P(l|c) and initial weights depend only on
    (root_seed, seeds[r]), so runs sharing a seed share data and init (paired comparisons).

    ``integrate_attention``: JoMA's MLP-only dynamics.  z is no longer trained; at every step it is set
    from the MLP weights by Thm. 1's invariant (:func:`dynamics.joma.invariant.predicted_logits`), so
    the model's trajectory is the paper's prediction for the joint one.
    """
    from .invariant import predicted_logits

    R = len(seeds)
    if not (len(eta_z) == len(eta_v) == R):
        raise ValueError("eta_z, eta_v and seeds need one entry per run")
    dt = torch_dtype(dtype)
    dev = torch.device(device)
    H, M = spec.hidden, spec.num_distinct + spec.num_common
    xs, inits = [], {"z": [], "V": [], "r": [], "A": []}
    for s in seeds:
        xs.append(class_distributions(spec, s, root_seed))
        g = torch_generator(root_seed, s, "joma-init")
        inits["z"].append(torch.randn(M, generator=g, dtype=torch.float64) * spec.init_scale)
        inits["V"].append(torch.randn(M, H, generator=g, dtype=torch.float64) * spec.init_scale)
        inits["r"].append(torch.randn(H, generator=g, dtype=torch.float64) * spec.init_scale)
        inits["A"].append(torch.randn(H, spec.num_classes, generator=g, dtype=torch.float64) / np.sqrt(H))
    x = torch.as_tensor(np.stack(xs), dtype=dt, device=dev)
    params = {k: torch.stack(v).to(dt).to(dev).requires_grad_() for k, v in inits.items()}
    trained = ["V", "r"] + (["A"] if spec.readout == "trained" else []) + ([] if integrate_attention else ["z"])
    lz = torch.as_tensor(eta_z, dtype=dt, device=dev)
    lv = torch.as_tensor(eta_v, dtype=dt, device=dev)
    lrs = {k: (lz if k == "z" else lv) for k in trained}
    with torch.no_grad():
        b_bar = attention(params["z"], x, spec.attention).mean(1)  # (R, M)
        z0, V0 = params["z"].clone(), params["V"].clone()
    adam = {k: (torch.zeros_like(params[k]), torch.zeros_like(params[k])) for k in trained}
    record = record_within(record, steps)
    rec = {k: [] for k in ("z", "V", "loss", "entropy")}
    diverged = np.full(R, -1)
    alive = torch.ones(R, dtype=torch.bool, device=dev)
    progress = bar(steps, "joma") if bar else None
    for t in range(steps + 1):
        if integrate_attention:
            with torch.no_grad():
                params["z"].copy_(predicted_logits(spec.attention, z0, V0, params["V"], b_bar, lz / lv))
        loss, b = forward(params, x, spec)
        if t in record:
            with torch.no_grad():
                rec["z"].append(params["z"].detach().cpu().numpy().copy())
                rec["V"].append(params["V"].detach().cpu().numpy().copy())
                rec["loss"].append(loss.detach().cpu().numpy().copy())
                bn = b.detach().clamp_min(0)
                bn = bn / bn.sum(-1, keepdim=True)
                H_c = entropy(bn.cpu().numpy(), np.ones(bn.shape[-1], dtype=bool))  # (R, C)
                rec["entropy"].append(H_c.mean(-1))
        if t == steps:
            break
        grads = torch.autograd.grad(loss.sum(), [params[k] for k in trained])  # runs are independent
        with torch.no_grad():
            ok = torch.isfinite(loss) & alive
            newly = alive & ~ok
            if newly.any():
                diverged[newly.cpu().numpy()] = t
                alive &= ok
            for k, gk in zip(trained, grads):
                gk = torch.nan_to_num(gk) * alive.view(-1, *([1] * (gk.dim() - 1)))
                lr = lrs[k].view(-1, *([1] * (gk.dim() - 1)))
                if optimizer == "adam":
                    m, v = adam[k]
                    m.mul_(0.9).add_(gk, alpha=0.1)
                    v.mul_(0.999).addcmul_(gk, gk, value=0.001)
                    step = (m / (1 - 0.9 ** (t + 1))) / ((v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
                    params[k].sub_(lr * step)
                else:
                    params[k].sub_(lr * gk)
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    return Trajectory(np.array(record), np.stack(rec["z"]), np.stack(rec["V"]), np.stack(rec["loss"]),
                      np.stack(rec["entropy"]), b_bar.cpu().numpy(), x.cpu().numpy(), diverged)
