"""The Y/Z model's loss and gradients with the samples grouped by class: the same numbers as
:func:`dynamics.scan_snap.model.loss_and_grads`, with less arithmetic when classes are many.

A sample of class k (query psi(n), next token n) only has keys in the support S_k = {l : P(l|n) > 0}
(plus the query's column with the residual).  Its attention output f, and so every product with Y,
lives on those |S_k| columns.  With K classes of support s out of V input tokens, the dense form
multiplies (B, V) by (V, M); grouping the batch by class multiplies (P, s) by (s, M) for each of the
K classes, where P is the largest number of samples any class drew this step (batch B spread over K
classes, so K P is about B plus the padding).  For Syn-Medium with 10 queries (K = 20, s = 20,
V = 210) that is about 5x fewer multiply-adds in each of the three matrix products.

Layout: ``counts`` (R, K, P, s) holds, for class k's p-th sample of the step, how often each support
column occurs among its keys.  Padding rows (classes that drew fewer than P samples) carry weight 0
and a placeholder count, so they are finite and contribute nothing.  The formulas are those of
:func:`~dynamics.scan_snap.model.loss_and_grads` (Tian et al. 2023, Lemma 1 and Eq. 3) row by row.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .data import SequenceClasses


class ClassLayout:
    """Per-class supports in the input vocabulary V and the maps that scatter gradients back.

    sup (K, s): column in V of each support slot (padding slots repeat a real column; their count is
    always 0); count_col (K, s): the same with padding slots pointing at the always-zero column V of
    the (V + 1)-column key counts; qrow (K,): the class's row of Zq; label (K,): the next token n;
    qslot (K,): slot of the query's column (residual only).
    """

    def __init__(self, classes: SequenceClasses, vocab: np.ndarray, queries: np.ndarray, residual: bool,
                 device: torch.device):
        col = {int(t): i for i, t in enumerate(vocab)}
        supports = []
        for k in range(classes.K):
            cols = [col[int(t)] for t in np.flatnonzero(classes.probs[k] > 0)]
            if residual and col[int(classes.query[k])] not in cols:
                cols.append(col[int(classes.query[k])])
            supports.append(cols)
        s = max(len(c) for c in supports)
        V = len(vocab)
        sup = np.array([c + [c[0]] * (s - len(c)) for c in supports])
        count_col = np.array([c + [V] * (s - len(c)) for c in supports])
        qrow = np.searchsorted(queries, classes.query)
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)  # noqa: E731
        self.K, self.s, self.V, self.Q = classes.K, s, V, len(queries)
        self.sup, self.count_col = as_t(sup), as_t(count_col)
        self.qrow, self.label = as_t(qrow), as_t(classes.next)
        self.zflat = as_t(qrow[:, None] * V + sup)  # index into Zq viewed as (R, Q * V)
        self.qslot = as_t([supports[k].index(col[int(classes.query[k])]) for k in range(classes.K)]) \
            if residual else None

    def worthwhile(self, batch: int) -> bool:
        """Whether grouping does fewer multiply-adds in the matrix products: K P s against B V, with
        P estimated as the mean class count plus three standard deviations.  (On Fig. 6's sizes the
        grouped form was faster whenever this holds: 1.2x at K = 2, 1.6x at K = 20.)"""
        mean = batch / self.K
        P = mean + 3 * math.sqrt(mean) + 1
        return self.K * P * self.s < batch * self.V

    def arrange(self, cls: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Group one step's samples by class.

        cls (S, B): class of each sample per seed; counts (S, B, V + 1): key counts per input token.
        Returns counts (S, K, P, s) on the class supports and weights (S, K, P): 1 for a real sample,
        0 for padding.  Within a class, samples keep their batch order.
        """
        S, B = cls.shape
        onehot = F.one_hot(cls, self.K)
        pos = (onehot.cumsum(1) - 1).gather(2, cls.unsqueeze(-1)).squeeze(-1)  # rank within its class
        P = int(pos.max()) + 1
        compact = counts.gather(2, self.count_col[cls])  # (S, B, s)
        seed = torch.arange(S, device=cls.device)[:, None].expand(S, B)
        out = torch.zeros(S, self.K, P, self.s, dtype=dtype, device=cls.device)
        w = torch.zeros(S, self.K, P, dtype=dtype, device=cls.device)
        out[seed, cls, pos] = compact.to(dtype)
        w[seed, cls, pos] = 1.0
        out[..., 0] += 1.0 - w  # padding rows: one placeholder key, so their softmax is finite
        return out, w

    def loss_and_grads(self, Y: torch.Tensor, Zq: torch.Tensor, counts: torch.Tensor, w: torch.Tensor, batch: int,
                       normalize: bool = True):
        """Per-run mean loss (R,) and exact gradients dY (R, V, M), dZq (R, Q, V).

        counts (R, K, P, s) and w (R, K, P) from :meth:`arrange`; ``batch`` is B (the mean's divisor).
        """
        R, K, P, s = counts.shape
        M = Y.shape[-1]
        z = Zq[:, self.qrow[:, None], self.sup]  # (R, K, s): z_{psi(n), l} on the support
        attn = z.unsqueeze(2).expand(R, K, P, s).masked_fill(counts == 0, float("-inf"))
        attn.sub_(attn.amax(-1, keepdim=True)).exp_().mul_(counts)
        attn.div_(attn.sum(-1, keepdim=True))  # c_l = n_l e^{z_l} / sum_l' n_l' e^{z_l'}
        f = attn
        if self.qslot is not None:
            f = f.scatter_add(3, self.qslot.view(1, K, 1, 1).expand(R, K, P, 1), torch.ones_like(f[..., :1]))
        if normalize:
            norm = torch.linalg.vector_norm(f, dim=-1, keepdim=True)
            f = f / norm
        Yk = Y[:, self.sup].view(R * K, s, M)  # the rows of Y each class can reach
        logits = torch.bmm(f.view(R * K, P, s), Yk).view(R, K, P, M)
        dlogits = torch.softmax(logits, dim=-1)
        lab = self.label.view(1, K, 1, 1).expand(R, K, P, 1)
        nll = -torch.gather(dlogits, 3, lab).squeeze(-1).log()
        loss = (nll * w).sum((1, 2)) / batch
        dlogits.scatter_add_(3, lab, -torch.ones_like(dlogits[..., :1]))
        dlogits.mul_((w / batch).unsqueeze(-1))  # (p - e_n) / B on real samples, 0 on padding
        dl = dlogits.view(R * K, P, M)
        # class k's share of dY; a transposed batch operand makes bmm several times slower at these sizes
        dYk = torch.bmm(f.view(R * K, P, s).transpose(1, 2).contiguous(), dl)  # (R K, s, M)
        dY = torch.zeros(R, self.V, M, dtype=Y.dtype, device=Y.device).index_add_(1, self.sup.flatten(),
                                                                                 dYk.view(R, K * s, M))
        if self.qslot is None:
            # Without the residual the third product is not needed.  Per sample, with u = Y dlogits and
            # alpha = f . u = logits . dlogits: f is scale-invariant in c, so c . dL/dc = 0 and
            # dz_l = f_l u_l - f_l^2 alpha (normalised), dz_l = f_l u_l - f_l alpha (not normalised).
            # Summed over a class's samples, sum_b f_bl u_bl = <Y_l, dY^(k)_l>.
            # (einsum, not vecdot: vecdot materialises the elementwise product first)
            alpha = torch.einsum("rkpm,rkpm->rkp", logits, dlogits)
            fw = f * f if normalize else f
            dz = torch.einsum("nsm,nsm->ns", Yk, dYk).view(R, K, s) - torch.einsum("rkps,rkp->rks", fw, alpha)
        else:
            dc = torch.bmm(dl, Yk.transpose(1, 2)).view(R, K, P, s)
            if normalize:
                dc.addcmul_(f, torch.linalg.vecdot(f, dc).unsqueeze(-1), value=-1.0).div_(norm)
            dz = dc.sub_(torch.linalg.vecdot(attn, dc).unsqueeze(-1)).mul_(attn).sum(2)  # (R, K, s)
        dZq = torch.zeros(R, self.Q * self.V, dtype=Zq.dtype, device=Zq.device).index_add_(
            1, self.zflat.flatten(), dz.reshape(R, K * s)).view(R, self.Q, self.V)
        return loss, dY, dZq
