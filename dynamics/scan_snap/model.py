"""The Y/Z model of Scan and Snap, batched over independent runs.

Tian et al. 2023, Sec. 3 and Eq. (2), as in the official ``Model2``: the last token x_T = m is the
only query and is masked from the keys; attention logits are Z[m, x_t]; the attention output
sum_t b_t e_{x_t} (plus e_m with the residual) is l2-normalised (switchable); decoder logits are
Y^T of it over all M tokens; the loss is cross-entropy against the next token.

Shapes: ``R`` independent runs, batch ``B``, sequence length ``T`` (T-1 keys), vocabulary ``M``.
Y[r, i, o] maps input token i to output logit o (the official ``K1.weight`` is Y^T); Z[r, m, l] is
the logit of key l for query m (the official ``K2.weight``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def init_params(R: int, M: int, kind: str, gens: list[torch.Generator], run_seed: torch.Tensor,
                dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Y, Z of shape (R, M, M): zeros, or U(-1/sqrt(M), 1/sqrt(M)) (PyTorch's nn.Linear default).

    Random init is drawn per seed (``gens[s]``) and shared by every run with that seed, as in the
    official sweep where one seed fixes init and data for all learning rates.
    """
    if kind == "zero":
        z = torch.zeros(R, M, M, dtype=dtype, device=device)
        return z, z.clone()
    bound = 1.0 / math.sqrt(M)
    per_seed = [(torch.rand(2, M, M, generator=g, dtype=torch.float64) * 2 - 1) * bound for g in gens]
    stack = torch.stack(per_seed).to(device=device, dtype=dtype)[run_seed.cpu()]
    return stack[:, 0].contiguous(), stack[:, 1].contiguous()


def forward(Y: torch.Tensor, Z: torch.Tensor, x: torch.Tensor, label: torch.Tensor,
            normalize: bool = True, residual: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean cross-entropy (R,) and attention weights (R, B, T-1).

    x: (R, B, T) tokens with the query last; label: (R, B).
    """
    R, B, T = x.shape
    M = Y.shape[-1]
    query, keys = x[..., -1], x[..., :-1]
    zq = torch.gather(Z, 1, query.unsqueeze(-1).expand(R, B, M))  # (R, B, M): Z[m, :]
    attn = torch.softmax(torch.gather(zq, 2, keys), dim=-1)  # (R, B, T-1)
    combined = torch.zeros(R, B, M, dtype=Y.dtype, device=Y.device).scatter_add(2, keys, attn)
    if residual:
        combined = combined + F.one_hot(query, M).to(Y.dtype)
    if normalize:
        combined = combined / combined.norm(dim=-1, keepdim=True)
    logits = torch.bmm(combined, Y)  # (R, B, M)
    loss = F.cross_entropy(logits.reshape(R * B, M), label.reshape(R * B), reduction="none")
    return loss.view(R, B).mean(1), attn


def context_counts(keys: torch.Tensor, V: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n_l: how often each of V token ids occurs in each row of ``keys``.  (..., T-1) -> (..., V)"""
    return torch.zeros(keys.shape[:-1] + (V,), dtype=dtype, device=keys.device).scatter_add_(
        -1, keys, torch.ones(keys.shape, dtype=dtype, device=keys.device))


def loss_and_grads(Y: torch.Tensor, Zq: torch.Tensor, qrow: torch.Tensor, counts: torch.Tensor,
                   qcol: torch.Tensor | None, label: torch.Tensor, normalize: bool = True):
    """Per-run mean loss (R,) and its exact gradients dY (R, V, M) and dZq (R, Q, V), by hand.

    The same model as :func:`forward` (checked against autograd in the tests), in a compact form:

    * **counts instead of positions.**  With no positional encoding the attention output depends on
      the keys only through their counts n_l: sum_t b_t e_{x_t} = c with
      c_l = n_l e^{z_{ml}} / sum_l' n_l' e^{z_{ml'}}, so every tensor is (R, B, V), not (R, B, T-1).
    * **only the parameters that move.**  The decoder input lives in the input vocabulary V (tokens
      that can be keys, plus queries with the residual), so Y is stored as its V rows (R, V, M);
      keys lie in V and only query rows of Z get gradient (Lemma 1: only z_{x_T} moves), so Z is
      stored as (R, Q, V).  Every other entry of Y and Z has zero gradient and is never read.

    With f = c/||c|| and p = softmax(Y^T f) (Tian et al. 2023, Lemma 1, Eq. 3, per sample):

        dL/dY = f (p - e_n)^T / B,    dL/df = Y (p - e_n) / B,    dL/dc = (I - f f^T) dL/df / ||c||
        dL/dz_{ml} = c_l (dL/dc_l - sum_l' c_l' dL/dc_l')          (softmax backward, grouped by token)

    Shapes: counts (R, B, V) over the keys; qrow (R, B) row of each sample's query in Zq; qcol (R, B)
    the query's column in V for the residual connection (None: no residual); label (R, B) in [0, M).
    """
    R, B, V = counts.shape
    Q = Zq.shape[1]
    rows = qrow.unsqueeze(-1).expand(R, B, V)
    # In-place arithmetic throughout: each fresh (R, B, V) temporary costs more in page faults than
    # the arithmetic on it.
    attn = torch.gather(Zq, 1, rows).masked_fill_(counts == 0, float("-inf"))  # z_m for each sample
    attn.sub_(attn.amax(-1, keepdim=True)).exp_().mul_(counts)
    attn.div_(attn.sum(-1, keepdim=True))  # c_l = n_l e^{z_l} / sum_l' n_l' e^{z_l'}
    f = attn
    if qcol is not None:
        f = f.scatter_add(2, qcol.unsqueeze(-1), torch.ones_like(f[..., :1]))
    if normalize:
        norm = torch.linalg.vector_norm(f, dim=-1, keepdim=True)
        f = f / norm
    dlogits = torch.softmax(torch.bmm(f, Y), dim=-1)  # p; becomes (p - e_n)/B below
    loss = -torch.gather(dlogits, 2, label.unsqueeze(-1)).squeeze(-1).log().mean(1)
    dlogits.scatter_add_(2, label.unsqueeze(-1), -torch.ones_like(dlogits[..., :1]))
    dlogits.div_(B)
    dY = torch.bmm(f.transpose(1, 2), dlogits)
    dc = torch.bmm(dlogits, Y.transpose(1, 2))
    if normalize:
        dc.addcmul_(f, torch.linalg.vecdot(f, dc).unsqueeze(-1), value=-1.0).div_(norm)
    dz = dc.sub_(torch.linalg.vecdot(attn, dc).unsqueeze(-1)).mul_(attn)
    dZq = torch.zeros(R, Q, V, dtype=Zq.dtype, device=Zq.device).scatter_add_(1, rows, dz)
    return loss, dY, dZq
