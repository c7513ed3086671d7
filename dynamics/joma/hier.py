"""The hierarchical binary latent-tree model (JoMA Sec. 5, Fig. 5a) and a two-layer model trained on it.

Generative model (our concrete instance of the paper's HBLT).  A rooted tree of binary variables: the root
y_0 ~ Bernoulli(1/2) is the sequence's label; every other node copies its parent and is flipped with
probability ``flip`` (a binary symmetric channel per edge).  Leaves are tokens: leaf l is present in the
sequence iff y_l = 1.  With q := 1 - 2 flip, spins s = 2y - 1 have E[s_l s_l'] = q^{d(l, l')}, where d is
the path length between the leaves, so the co-occurrence

    P(y_l = 1 | y_l' = 1) = (1 + q^{d(l, l')}) / 2,     d(l, l') = 2 x (height of their lowest common ancestor)

falls with the height of the lowest common ancestor (the content of the paper's Thm. 5: tokens with a
closer common ancestor co-occur more strongly).

Model (two JoMA blocks on the set of present tokens, no positions; runs on a leading axis R):

    layer 1   b_ij = softmax_{j present, j != i}(Z1[i, j]) (logits in the token basis, as JoMA's z),
              o_i = e_i + sum_j b_ij e_j (residual), x_i = o_i + U1 relu(W1^T o_i)   (MLP with residual)
    layer 2   a_ij = softmax_{j present, j != i}(x_i^T Q2 x_j), o2_i = x_i + sum_j a_ij x_j,
              h_i = relu(W2^T o2_i), logits = A^T mean_{i present} h_i,  CE against the root label

trained with SGD on fresh batches.  What layer 1 has learned to associate is read off Z1: the centred
logit zeta_ml = Z1[m, l] - mean_{l' != m} Z1[m, l'].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from ..scan_snap.data import seed_generator

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass(frozen=True)
class Tree:
    """parent[i] of every node (node 0 is the root, parent -1); leaves are the nodes without children,
    in increasing node order (token l = l-th leaf)."""

    parent: tuple[int, ...]

    @property
    def leaves(self) -> np.ndarray:
        p = np.array(self.parent)
        return np.array([i for i in range(len(p)) if not np.any(p == i)])

    def depth(self, i: int) -> int:
        d = 0
        while self.parent[i] >= 0:
            i, d = self.parent[i], d + 1
        return d

    def ancestors(self, i: int) -> list[int]:
        out = [i]
        while self.parent[i] >= 0:
            i = self.parent[i]
            out.append(i)
        return out

    def distance(self) -> np.ndarray:
        """Path length between every pair of leaves: (M, M) int."""
        L = self.leaves
        anc = [self.ancestors(int(l)) for l in L]
        D = np.zeros((len(L), len(L)), dtype=int)
        for a in range(len(L)):
            for b in range(len(L)):
                common = next(x for x in anc[a] if x in anc[b])
                D[a, b] = anc[a].index(common) + anc[b].index(common)
        return D

    def lca_height(self) -> np.ndarray:
        """Height of the lowest common ancestor above the leaves (leaves at equal depth): d / 2."""
        return self.distance() // 2


def balanced(branching: Sequence[int]) -> Tree:
    """A tree whose level k nodes each have branching[k] children (root = level 0)."""
    parent = [-1]
    level = [0]
    for b in branching:
        nxt = []
        for node in level:
            for _ in range(b):
                parent.append(node)
                nxt.append(len(parent) - 1)
        level = nxt
    return Tree(tuple(parent))


def cooccurrence(tree: Tree, flip: float) -> np.ndarray:
    """Exact P(y_l = 1 | y_l' = 1) = (1 + (1 - 2 flip)^{d(l, l')}) / 2: (M, M), 1 on the diagonal."""
    return (1 + (1 - 2 * flip) ** tree.distance()) / 2


def sample(tree: Tree, flip: float, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-down sampling: present (batch, M) in {0, 1} (float64) and labels (batch,) = root value."""
    n = len(tree.parent)
    y = torch.empty(batch, n, dtype=torch.float64)
    y[:, 0] = (torch.rand(batch, generator=gen, dtype=torch.float64) < 0.5).double()
    flips = (torch.rand(batch, n, generator=gen, dtype=torch.float64) < flip).double()
    for i in range(1, n):  # parents precede children in the node order built by ``balanced``
        p = tree.parent[i]
        y[:, i] = (y[:, p] + flips[:, i]) % 2
    return y[:, tree.leaves], y[:, 0].long()


@dataclasses.dataclass
class HierTrajectory:
    """steps (S,); Z1 (S, R, M, M) layer-1 logits; attn2 (S, R, M, M) layer-2 attention averaged over an
    evaluation batch (pairs where both tokens are present); loss (S, R)."""

    steps: np.ndarray
    Z1: np.ndarray
    attn2: np.ndarray
    loss: np.ndarray


def _masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over j of (..., i, j) restricted to present j != i; rows with no such j give zeros."""
    M = logits.shape[-1]
    ok = present[..., None, :].bool() & ~torch.eye(M, dtype=torch.bool, device=logits.device)
    a = torch.where(ok, logits, torch.full_like(logits, -torch.inf))
    a = torch.softmax(a, dim=-1)
    return torch.nan_to_num(a, nan=0.0)


def forward(P: dict, present: torch.Tensor, labels: torch.Tensor):
    """present (R, B, M), labels (R, B) -> loss (R,), layer-2 attention (R, B, M, M)."""
    R, B, M = present.shape
    eye = torch.eye(M, dtype=present.dtype, device=present.device)
    b1 = _masked_softmax(P["Z1"][:, None].expand(R, B, M, M), present)  # (R, B, M, M)
    o = eye + b1  # row i: e_i + sum_j b_ij e_j
    x = o + torch.relu(o @ P["W1"][:, None]) @ P["U1"][:, None]  # (R, B, M, M)
    s = x @ P["Q2"][:, None] @ x.transpose(-1, -2)
    a2 = _masked_softmax(s, present)
    o2 = x + a2 @ x
    h = torch.relu(o2 @ P["W2"][:, None])  # (R, B, M, H)
    pooled = (h * present[..., None]).sum(-2) / present.sum(-1, keepdim=True).clamp_min(1)
    logits = pooled @ P["A"]  # (R, B, 2)
    loss = torch.nn.functional.cross_entropy(logits.reshape(R * B, -1), labels.reshape(-1),
                                             reduction="none").view(R, B).mean(-1)
    return loss, a2


def train(tree: Tree, flip: float, seeds: Sequence[int], steps: int, record: Sequence[int], *, hidden: int = 16,
          lr: float = 0.5, batch: int = 128, init_scale: float = 0.01, eval_batch: int = 512, root_seed: int = 0,
          dtype: str = "float64", device: str = "cpu", bar=None) -> HierTrajectory:
    """SGD on fresh batches for R = len(seeds) runs at once; data and init depend on (root_seed, seed)."""
    dt, dev = DTYPES[dtype], torch.device(device)
    M = len(tree.leaves)
    gens = [seed_generator(root_seed, s, "joma-hier-data") for s in seeds]
    init = {k: [] for k in ("Z1", "W1", "U1", "Q2", "W2", "A")}
    shapes = {"Z1": (M, M), "W1": (M, hidden), "U1": (hidden, M), "Q2": (M, M), "W2": (M, hidden), "A": (hidden, 2)}
    for s in seeds:
        g = seed_generator(root_seed, s, "joma-hier-init")
        for k, shp in shapes.items():
            scale = 1 / np.sqrt(hidden) if k == "A" else init_scale if k in ("Z1", "Q2") else 1 / np.sqrt(shp[0])
            init[k].append(torch.randn(*shp, generator=g, dtype=torch.float64) * scale)
    P = {k: torch.stack(v).to(dt).to(dev).requires_grad_() for k, v in init.items()}
    ev = [sample(tree, flip, eval_batch, seed_generator(root_seed, s, "joma-hier-eval")) for s in seeds]
    ev_present = torch.stack([e[0] for e in ev]).to(dt).to(dev)
    ev_labels = torch.stack([e[1] for e in ev]).to(dev)
    both = ev_present[..., :, None] * ev_present[..., None, :]  # (R, B, M, M)
    record = sorted(set(int(t) for t in record if 0 <= t <= steps))
    out = {"Z1": [], "attn2": [], "loss": []}
    progress = bar(steps, "joma-hier") if bar else None
    for t in range(steps + 1):
        if t in record:
            with torch.no_grad():
                l_ev, a2 = forward(P, ev_present, ev_labels)
                out["Z1"].append(P["Z1"].detach().cpu().numpy().copy())
                out["attn2"].append(((a2 * both).sum(1) / both.sum(1).clamp_min(1)).cpu().numpy())
                out["loss"].append(l_ev.cpu().numpy())
        if t == steps:
            break
        data = [sample(tree, flip, batch, g) for g in gens]
        present = torch.stack([d[0] for d in data]).to(dt).to(dev)
        labels = torch.stack([d[1] for d in data]).to(dev)
        loss, _ = forward(P, present, labels)
        grads = torch.autograd.grad(loss.sum(), list(P.values()))
        with torch.no_grad():
            for p, g in zip(P.values(), grads):
                p.sub_(lr * torch.nan_to_num(g))
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    return HierTrajectory(np.array(record), np.stack(out["Z1"]), np.stack(out["attn2"]), np.stack(out["loss"]))


def centred_logits(Z: np.ndarray) -> np.ndarray:
    """zeta[m, l] = Z[m, l] - mean_{l' != m} Z[m, l'] over the last two axes; the diagonal is NaN."""
    M = Z.shape[-1]
    off = ~np.eye(M, dtype=bool)
    mean = np.where(off, Z, 0).sum(-1, keepdims=True) / (M - 1)
    return np.where(off, Z - mean, np.nan)
