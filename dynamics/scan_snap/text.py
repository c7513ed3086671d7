"""The Y/Z model of Scan and Snap driven by real WikiText windows instead of synthetic classes.

Attention and entropy are those of :mod:`dynamics.scan_snap.metrics` (one definition of Eq. 5).

Tian et al. 2023, Sec. 3 (model, Lemma 1) with the data of :mod:`dynamics.corpus.cooccurrence`:
each run trains one query m on its K classes (m, n), so the query's next tokens are the whole label
set (the paper's "next token in [K]", psi^{-1}(m) = N(m)) and the per-query token roles are the
paper's global roles for that run.  Two data modes:

* ``windows``: each SGD sample is a real window of the class (its T-1 context tokens as keys, the
  query last, n as the label); the class is drawn uniformly (as Thm. 1 assumes), then one of its N
  windows uniformly.  Finite T, contexts that are not i.i.d. draws: real text.
* ``population``: every step uses each class once with its mean context counts (T-1) P(l|m,n), the
  expected-count (T -> infinity) input of Lemma 2, so the attention is exactly
  c_{l|m,n} = P(l|m,n) e^{z_ml} / sum_l' P(l'|m,n) e^{z_ml'} (Eq. 5).  Deterministic.

The loss is the model of :func:`dynamics.scan_snap.model.forward` (checked against the exact
gradients of :func:`dynamics.scan_snap.model.loss_and_grads` in the tests), differentiated by
autograd: from counts in population mode (:func:`count_loss`) and from positions in windows mode
(:func:`window_loss`), since a real context touches at most T-1 of the V local columns and
(R, B, T-1) is ~V/T times less work than dense (R, B, V) counts.  The decoder may output over the
whole vocabulary as in the paper (Y is M x M there): the M - K outputs that are never a target stay
identical from Y(0) = 0 and are simulated as one column with multiplicity M - K.
Columns are local to each query (the tokens that occur in its contexts), padded to the largest query:
Y is (R, V, K + 1), Z's query row (R, 1, V).  Runs are (query, seed, eta_Y, eta_Z) along a leading axis R;
runs with the same (query, seed) share the sample stream whatever their learning rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..corpus.cooccurrence import Cooccurrence, contexts
from ..runtime import RunLog, record_within, torch_dtype, torch_generator
from . import optim
from .metrics import attention_rows as attention
from .metrics import entropy


@dataclasses.dataclass(frozen=True)
class LocalData:
    """A query-local view of the co-occurrence data.

    tokens:   (Q, V) token id of each local column (-1 for padding)
    cols:     (Q, K, N, T-1) local column of every context token of every window
    first:    (Q, K, N, T-1) position of the first occurrence of the same token in the window (pools
              repeated tokens in O(T) instead of an O(T^2) equality matrix)
    probs:    (Q, K, V) P(l | m, n) on local columns
    distinct: (Q, K, V), common: (Q, V) the roles of :class:`Cooccurrence` on local columns
    """

    tokens: np.ndarray
    cols: np.ndarray
    first: np.ndarray
    probs: np.ndarray
    distinct: np.ndarray
    common: np.ndarray

    @property
    def V(self) -> int:
        return self.tokens.shape[1]


def local_data(co: Cooccurrence, ids: np.ndarray) -> LocalData:
    ctx = contexts(co, ids)
    local = [np.unique(ctx[q]) for q in range(co.Q)]
    V = max(len(t) for t in local)
    tokens = np.full((co.Q, V), -1, dtype=np.int64)
    cols = np.empty(ctx.shape, dtype=np.int64)
    for q, t in enumerate(local):
        tokens[q, :len(t)] = t
        cols[q] = np.searchsorted(t, ctx[q])
    safe = np.where(tokens >= 0, tokens, 0)
    q_idx = np.arange(co.Q)[:, None]
    pick = lambda a: np.where(tokens[:, None, :] >= 0, a[q_idx[:, :, None], np.arange(co.K)[None, :, None], safe[:, None, :]], 0)
    first = np.argmax(ctx[..., :, None] == ctx[..., None, :], axis=-1)
    return LocalData(tokens=tokens, cols=cols, first=first, probs=pick(co.probs), distinct=pick(co.distinct).astype(bool),
                     common=np.where(tokens >= 0, co.common[q_idx, safe], False))


@dataclasses.dataclass
class TextTrajectory:
    """Z's query row at the recorded steps: Z (S_rec, R, V) on local columns; loss (steps, R);
    diverged (R,) first non-finite step or -1 (NaN from then on)."""

    steps: np.ndarray
    Z: np.ndarray
    loss: np.ndarray
    diverged: np.ndarray


def _cross_entropy(u: torch.Tensor, label: torch.Tensor, n_rest: int) -> torch.Tensor:
    """Mean cross-entropy (R,) over K label logits plus ``n_rest`` identical never-target outputs.

    u: (R, B, K + 1) with the last column the shared logit of the never-target outputs.  From
    Y(0) = 0 every never-target output column receives the same gradient, so one representative
    column with multiplicity n_rest (a log n_rest bias on its logit) is exact; its gradient is the
    sum over the copies, so :func:`train` divides it by n_rest to move one copy.
    """
    R, B, K1 = u.shape
    if n_rest == 0:
        u = u[..., :-1]
    else:
        u = u + torch.cat([u.new_zeros(K1 - 1), u.new_full((1,), float(np.log(n_rest)))])
    return torch.nn.functional.cross_entropy(u.reshape(R * B, -1), label.reshape(R * B),
                                             reduction="none").view(R, B).mean(1)


def window_loss(Y: torch.Tensor, Z: torch.Tensor, keys: torch.Tensor, first: torch.Tensor, label: torch.Tensor,
                n_rest: int = 0) -> torch.Tensor:
    """Per-run mean cross-entropy (R,) of the normalised Y/Z model on explicit key positions.

    Same model as :func:`dynamics.scan_snap.model.forward` (no residual, l2-normalised):
    b_t = softmax_t(z_{m, x_t}); c = sum_t b_t e_{x_t}; logits = Y^T c / ||c||, with
    Y^T c = sum_t b_t Y[x_t] and ||c||^2 = sum_l c_l^2, c_l pooling the b_t of repeated tokens.
    Y: (R, V, K + 1); Z: (R, 1, V) the query's row; keys: (R, B, L) local columns; first: (R, B, L) the
    first position of each key's token in its window; label: (R, B) in [0, K).
    """
    R, B, L = keys.shape
    K1 = Y.shape[-1]
    flat = keys.reshape(R, B * L)
    b = torch.softmax(torch.gather(Z[:, 0], 1, flat).view(R, B, L), -1)
    rows = torch.gather(Y, 1, flat.unsqueeze(-1).expand(R, B * L, K1)).view(R, B, L, K1)
    norm = torch.zeros_like(b).scatter_add(2, first, b).norm(dim=-1)  # ||c||: pooled per token
    u = torch.einsum("rbt,rbtk->rbk", b, rows) / norm.unsqueeze(-1)
    return _cross_entropy(u, label, n_rest)


def count_loss(Y: torch.Tensor, Z: torch.Tensor, counts: torch.Tensor, label: torch.Tensor,
               n_rest: int = 0) -> torch.Tensor:
    """The same loss from key counts (R, B, V): c_l = n_l e^{z_ml} / sum_l' n_l' e^{z_ml'} (Eq. 5 with
    the counts in place of P), logits = Y^T c / ||c||.  Used with mean counts in population mode."""
    logits = Z[:, 0].unsqueeze(1).expand_as(counts).masked_fill(counts == 0, float("-inf"))
    c = torch.softmax(logits, -1) * counts
    c = c / c.sum(-1, keepdim=True)
    u = torch.bmm(c, Y) / torch.linalg.vector_norm(c, dim=-1, keepdim=True)
    return _cross_entropy(u, label, n_rest)


def train(data: LocalData, query_of_run: Sequence[int], seed_of_run: Sequence[int], eta_y: Sequence[float],
          eta_z: Sequence[float], steps: int, batch: int = 64, mode: str = "windows", momentum: float = 0.0,
          outputs: int | None = None, dtype: str = "float64", device: str = "cpu", root_seed: int = 0,
          record: Sequence[int] = (), bar: Callable | None = None) -> TextTrajectory:
    """SGD on R = len(eta_y) runs from Y(0) = Z(0) = 0 (the paper's init), l2-normalised, no residual.

    query_of_run/seed_of_run: (R,) which query of ``data`` and which seed index each run uses.
    mode: "windows" or "population" (module docstring).  outputs: size M of the decoder's output
    vocabulary (the paper's Y is M x M: every token is a possible output); None or K: only the K next
    tokens.  record: steps at which Z is kept.
    """
    dt, dev = torch_dtype(dtype), torch.device(device)
    R, (Q, K, N, L) = len(eta_y), data.cols.shape
    V = data.V
    q_run = torch.as_tensor(np.asarray(query_of_run), device=dev)
    seeds = sorted(set(int(s) for s in seed_of_run))
    s_run = torch.as_tensor([seeds.index(int(s)) for s in seed_of_run], device=dev)
    gens = [torch_generator(root_seed, s, "wikitext-windows") for s in seeds]
    n_rest = 0 if outputs is None else int(outputs) - K
    if n_rest < 0:
        raise ValueError(f"outputs={outputs} is smaller than the K={K} next tokens")
    Y = torch.zeros(R, V, K + 1, dtype=dt, device=dev)
    Z = torch.zeros(R, 1, V, dtype=dt, device=dev)
    lr_y = torch.tensor(list(eta_y), dtype=dt, device=dev)
    lr_z = torch.tensor(list(eta_z), dtype=dt, device=dev)
    opt = optim.SGD([lr_y, lr_z], momentum)
    cols = torch.as_tensor(data.cols, device=dev)
    firsts = torch.as_tensor(data.first, device=dev)
    if mode == "population":
        # mean counts (T-1) P(l|m,n) of each class, all K classes in every step
        pop = torch.as_tensor(data.probs * L, dtype=dt, device=dev)[q_run]  # (R, K, V)
        pop_label = torch.arange(K, device=dev).expand(R, K)
    record = record_within(record, steps)
    rec = []
    log = RunLog(R, steps, dev, bar, f"Y/Z on {mode}")
    for step in range(steps + 1):
        if step in record:
            z = Z[:, 0].double().cpu().numpy().copy()  # a copy: for float64 on CPU .numpy() aliases Z
            z[~log.alive.cpu().numpy()] = np.nan
            rec.append(z)
        if step == steps:
            break
        if mode == "population":
            counts, label = pop, pop_label
        else:
            draws = [(torch.randint(K, (Q, batch), generator=g), torch.randint(N, (Q, batch), generator=g))
                     for g in gens]
            cls = torch.stack([d[0] for d in draws]).to(dev)  # (S, Q, B)
            win = torch.stack([d[1] for d in draws]).to(dev)
            qq = torch.arange(Q, device=dev).view(1, Q, 1).expand_as(cls)
            keys = cols[qq, cls, win][s_run, q_run]  # (R, B, T-1)
            first = firsts[qq, cls, win][s_run, q_run]
            label = cls[s_run, q_run]
        Y.requires_grad_(True)
        Z.requires_grad_(True)
        if mode == "population":
            loss = count_loss(Y, Z, counts, label, n_rest)
        else:
            loss = window_loss(Y, Z, keys, first, label, n_rest)
        gy, gz = torch.autograd.grad(loss.sum(), [Y, Z])  # sum over runs: each run's gradient is its own
        Y.requires_grad_(False)
        Z.requires_grad_(False)
        loss = loss.detach()
        if n_rest:
            gy[..., -1] /= n_rest  # move one copy of the never-target columns (see _cross_entropy)
        log.step(step, loss, [Y, Z], [gy, gz], [lr_y, lr_z], opt)
    log.close()
    return TextTrajectory(np.array(record), np.stack(rec) if rec else np.zeros((0, R, V)), log.losses,
                          log.diverged)


def role_metrics(z: np.ndarray, z0: np.ndarray, probs: np.ndarray, distinct: np.ndarray,
                 common: np.ndarray) -> dict[str, np.ndarray]:
    """The Scan and Snap measurements for each run and class, from one query row per run.

    z, z0: (R, V) the query row now and at init; probs (R, K, V), distinct (R, K, V), common (R, V):
    each run's data.  Returns arrays over (R, K) unless noted:

    * ``distinct_up``   fraction of the class's distinct tokens with z_ml > z_ml(0)  (Thm. 2(a))
    * ``common_down``   (R,) fraction of the query's common tokens with z_ml < z_ml(0)  (Thm. 2(b))
    * ``rho``           Spearman correlation of z_ml and P(l|m,n) over the class's distinct tokens
                        (Thm. 3 ordering; NaN with fewer than 3 distinct tokens or constant values)
    * ``entropy``       entropy of c_{.|m,n} on the class's distinct tokens (the Fig. 6 metric)
    * ``entropy_all``   entropy of c_{.|m,n} on all its context tokens
    * ``common_mass``   attention mass of c_{.|m,n} on common tokens
    """
    from scipy import stats

    dz = z - z0
    c = attention(z, probs)
    n_d = distinct.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = np.where(distinct, dz[:, None, :] > 0, False).sum(-1) / n_d
        down = np.where(common, dz < 0, False).sum(-1) / common.sum(-1)
    rho = np.full(n_d.shape, np.nan)
    for r, k in zip(*np.nonzero(n_d >= 3)):
        a, b = z[r][distinct[r, k]], probs[r, k][distinct[r, k]]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            rho[r, k] = stats.spearmanr(a, b).statistic
    return {"distinct_up": up, "common_down": down, "rho": rho,
            "entropy": entropy(c, distinct), "entropy_all": entropy(c, probs > 0),
            "common_mass": np.where(common[:, None, :], c, 0.0).sum(-1)}
