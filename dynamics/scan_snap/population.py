"""Population (T -> infinity, expected-gradient) dynamics of the Y/Z model, batched over learning rates.

Tian et al. 2023, Lemma 1 (Eqs. 3-4) with Lemma 2 (Eq. 6): for T -> infinity the attention output of
class n tends to c_n (Eq. 5), c_{l|n} = P(l|n) e^{z_ml} / sum_l' P(l'|n) e^{z_ml'}, and
X^T diag(b_T) X -> diag(c_n).  Averaging the per-sample dynamics over classes drawn uniformly gives

    dY/dt   = (eta_Y / K) sum_n f_n (e_n - alpha_n)^T                       f_n = c_n / ||c_n||  (Eq. 7)
    dz_m/dt = (eta_Z / K) sum_{n in psi^-1(m)} diag(c_n) (P_perp(f_n) / ||c_n||) Y (e_n - alpha_n)   (Eq. 4)

which is exactly gradient ascent on the population objective J = (1/K) sum_n log alpha_n[n].  Its
gradient is the finite-T simulator's (:func:`dynamics.scan_snap.model.loss_and_grads`) with the key
counts n_l replaced by P(l|n) and the batch replaced by the K classes, each once: the same tested code
computes both, so finite-T SGD and the population limit differ only in the data.

Two integrators, both batched along a leading run axis R (one learning-rate pair per run):

* :func:`integrate`: the gradient flow, with ``scipy.integrate.solve_ivp``; t is continuous and
  counts steps (one step of size eta moves the flow by time 1).
* :func:`descend`: discrete full-batch gradient descent, t = number of steps.

Both return a :class:`~dynamics.scan_snap.train.Trajectory` (Y on the input vocabulary, Z on the
query rows), so every metric of the finite-T simulator applies unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..runtime import record_within, threads
from . import model
from .data import SequenceClasses
from .train import Trajectory, input_vocab


class Population:
    """The expected-gradient field for R runs.  State: Y (R, V, M), Zq (R, Q, V); float64.

    ``normalize`` and ``residual`` switch the l2 normalisation and the residual connection, as in the
    finite-T model.  Initial state: Y(0) = Z(0) = 0 (the theory's initial condition).

    ``decoder="lemma3"`` replaces the decoder's gradient by the modified update of Lemma 3 (Eq. 26),
    dY/dt = (eta_Y/K) sum_n (F^T F)^{-1}-dual of f_n (e_n - alpha_n)^T = (eta_Y/K) sum_n F (F^T F)^{-1} e_n
    (e_n - alpha_n)^T, under which W = F^T Y evolves row by row exactly as Eq. 8 (with F frozen).
    The paper's Theorems 1-4 are proved for this update; the default ``"gradient"`` is the true one.
    """

    def __init__(self, classes: SequenceClasses, eta_y: Sequence[float], eta_z: Sequence[float],
                 normalize: bool = True, residual: bool = False, decoder: str = "gradient", device: str = "cpu"):
        if len(eta_y) != len(eta_z):
            raise ValueError("eta_y and eta_z need one entry per run")
        if decoder not in ("gradient", "lemma3"):
            raise ValueError(f"decoder must be 'gradient' or 'lemma3', got {decoder!r}")
        if decoder == "lemma3" and (residual or not normalize):
            raise ValueError("decoder='lemma3' is defined for the normalised model without residual (F = [f_n])")
        self.decoder = decoder
        self.classes = classes
        self.device = torch.device(device)
        self.dtype = torch.float64
        self.normalize, self.residual = normalize, residual
        self.R, self.M = len(eta_y), classes.M
        self.queries = classes.queries
        self.vocab = input_vocab(classes, residual)
        self.V, self.Q = len(self.vocab), len(self.queries)
        col = {int(v): i for i, v in enumerate(self.vocab)}
        row = {int(q): i for i, q in enumerate(self.queries)}
        K = classes.K
        kw = dict(device=self.device)
        # the "batch" is the K classes, each once: counts n_l -> P(l|n) (Lemma 2), mean over classes
        probs = torch.as_tensor(classes.probs[:, self.vocab], dtype=self.dtype, **kw)
        self.counts = probs.expand(self.R, K, self.V).contiguous()
        self.qrow = torch.tensor([row[int(q)] for q in classes.query], **kw).expand(self.R, K).contiguous()
        self.qcol = (torch.tensor([col[int(q)] for q in classes.query], **kw).expand(self.R, K).contiguous()
                     if residual else None)
        self.label = torch.as_tensor(classes.next, **kw).expand(self.R, K).contiguous()
        self.lr_y = torch.tensor(list(eta_y), dtype=self.dtype, **kw).view(-1, 1, 1)
        self.lr_z = torch.tensor(list(eta_z), dtype=self.dtype, **kw).view(-1, 1, 1)
        self.n_y = self.R * self.V * self.M

    def zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(self.R, self.V, self.M, dtype=self.dtype, device=self.device),
                torch.zeros(self.R, self.Q, self.V, dtype=self.dtype, device=self.device))

    def velocity(self, Y: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss (R,), dY/dt (R, V, M), dZ/dt (R, Q, V)): minus the learning rate times the gradient."""
        loss, gy, gz = model.loss_and_grads(Y, Z, self.qrow, self.counts, self.qcol, self.label, self.normalize)
        if self.decoder == "lemma3":
            gy = self._lemma3_grad(Y, Z)
        return loss, gy.mul_(-self.lr_y), gz.mul_(-self.lr_z)

    def _lemma3_grad(self, Y: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """Minus Eq. 26's update divided by eta_Y: (1/K) sum_n d_n (alpha_n - e_n)^T, d_n = F (F^T F)^{-1} e_n."""
        K = self.counts.shape[1]
        logits = torch.gather(Z, 1, self.qrow.unsqueeze(-1).expand(-1, -1, self.V))
        logits = logits.masked_fill(self.counts == 0, float("-inf"))
        c = torch.softmax(logits, -1) * self.counts  # P(l|n) e^{z_ml}, up to a factor per class
        f = c / torch.linalg.vector_norm(c, dim=-1, keepdim=True)  # (R, K, V): rows f_n
        dual = torch.linalg.solve(f @ f.transpose(1, 2), f)  # (F^T F)^{-1} F^T: rows d_n^T
        p = torch.softmax(torch.bmm(f, Y), -1)
        p.scatter_add_(2, self.label.unsqueeze(-1), -torch.ones_like(p[..., :1]))
        return torch.bmm(dual.transpose(1, 2), p) / K

    # -- flat state for solve_ivp -----------------------------------------------------------------
    def split(self, state: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.from_numpy(state)
        return (s[:self.n_y].view(self.R, self.V, self.M).to(self.device),
                s[self.n_y:].view(self.R, self.Q, self.V).to(self.device))

    def rhs(self, t: float, state: np.ndarray) -> np.ndarray:
        _, dy, dz = self.velocity(*self.split(state))
        return torch.cat([dy.reshape(-1), dz.reshape(-1)]).cpu().numpy()

    def trajectory(self, t: np.ndarray, Ys: list, Zs: list, losses: np.ndarray) -> Trajectory:
        return Trajectory(np.asarray(t, dtype=np.float64), self.queries, self.vocab, np.stack(Zs), np.stack(Ys),
                          losses, np.full(self.R, -1))


def integrate(pop: Population, t_eval: Sequence[float], method: str = "RK45", rtol: float = 1e-8,
              atol: float = 1e-10, bar: Callable | None = None) -> Trajectory:
    """Integrate the gradient flow from Y = Z = 0 with ``solve_ivp`` and record it at ``t_eval``.

    ``Trajectory.loss`` holds the population loss at each recorded time, shape (len(t_eval), R).
    """
    t_eval = np.asarray(sorted(set(float(t) for t in t_eval)))
    if t_eval[0] < 0:
        raise ValueError("t_eval must be >= 0")
    Y0, Z0 = pop.zeros()
    y0 = torch.cat([Y0.reshape(-1), Z0.reshape(-1)]).cpu().numpy()
    progress = bar(len(t_eval), "population ODE", unit="record") if bar else None
    Ys, Zs, losses = [], [], []
    state, t_prev = y0, 0.0
    with threads(1 if pop.device.type == "cpu" else torch.get_num_threads()):
        for t in t_eval:  # piecewise, so the progress bar moves and every record is exact at t
            if t > t_prev:
                sol = solve_ivp(pop.rhs, (t_prev, t), state, method=method, rtol=rtol, atol=atol)
                if not sol.success:
                    raise RuntimeError(f"solve_ivp failed at t={sol.t[-1]}: {sol.message}")
                state, t_prev = sol.y[:, -1], t
            Y, Z = pop.split(state)
            losses.append(pop.velocity(Y.clone(), Z.clone())[0].cpu().numpy())
            Ys.append(Y.cpu().numpy().copy())
            Zs.append(Z.cpu().numpy().copy())
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return pop.trajectory(t_eval, Ys, Zs, np.stack(losses))


def descend(pop: Population, steps: int, record: Sequence[int], bar: Callable | None = None) -> Trajectory:
    """Full-batch gradient descent on the population loss: Y <- Y - eta_Y grad_Y, Z <- Z - eta_Z grad_Z.

    ``Trajectory.loss`` is the loss before each step, shape (steps, R).
    """
    record = record_within(record, steps)
    wanted = set(record)
    Y, Z = pop.zeros()
    Ys, Zs = [], []
    losses = np.empty((steps, pop.R))
    progress = bar(steps, "population GD", unit="step") if bar else None
    with threads(1 if pop.device.type == "cpu" else torch.get_num_threads()):
        for step in range(steps + 1):
            if step in wanted:
                Ys.append(Y.cpu().numpy().copy())
                Zs.append(Z.cpu().numpy().copy())
            if step == steps:
                break
            loss, dy, dz = pop.velocity(Y, Z)
            Y.add_(dy)
            Z.add_(dz)
            losses[step] = loss.cpu().numpy()
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return pop.trajectory(np.asarray(record, dtype=np.float64), Ys, Zs, losses)


# ---------------------------------------------------------------------------------------------
# measurements on a trajectory (numpy, float64)
# ---------------------------------------------------------------------------------------------
def decoder_logits(traj: Trajectory, classes: SequenceClasses) -> np.ndarray:
    """W = F^T Y (Lemma 3): w_n = Y^T f_n, the decoder logits of class n.  (S, R, K, M).

    Uses the recorded Z for f_n (the attention of the same step) and Y's rows on the input vocabulary.
    """
    from .metrics import attention

    c = attention(traj.full_Z(classes.M), classes)[..., traj.vocab]  # (S, R, K, V) on the input vocabulary
    f = c / np.linalg.norm(c, axis=-1, keepdims=True)
    return np.einsum("srkv,srvo->srko", f, traj.Y)


def margin_h(traj: Trajectory, classes: SequenceClasses) -> np.ndarray:
    """The measured h of Eq. 31: w_n = (M-1) h zeta_n gives w_nn = (M-1) h; since rows of Y sum to
    zero (Lemma 1), the least-squares fit of w_n onto zeta_n is exactly h = w_nn/(M-1).  (S, R, K)."""
    W = decoder_logits(traj, classes)
    K = classes.K
    return W[..., np.arange(K), classes.next] / (classes.M - 1)
