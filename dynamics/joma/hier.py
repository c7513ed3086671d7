"""The hierarchical binary latent-tree model (JoMA Sec. 5, Fig. 5a) and a two-layer model trained on it.

Generative model (our concrete instance of the paper's HBLT).  A rooted tree of binary variables: the root
y_0 ~ Bernoulli(1/2) is the sequence's label; every other node copies its parent and is flipped with
probability ``flip`` (a binary symmetric channel per edge).  Leaves are tokens: leaf l is present in the
sequence iff y_l = 1.  With q := 1 - 2 flip, spins s = 2y - 1 have E[s_l s_l'] = q^{d(l, l')}, where d is
the path length between the leaves, so the co-occurrence

    P(y_l = 1 | y_l' = 1) = (1 + q^{d(l, l')}) / 2,     d(l, l') = 2 x (height of their lowest common ancestor)

falls with the height of the lowest common ancestor (the content of the paper's Thm. 5: tokens with a
closer common ancestor co-occur more strongly).

Model (two JoMA blocks, no positions; runs on a leading axis R).  Task: masked-leaf prediction, the set
analogue of next-token prediction: for each query leaf m, predict y_m from the other present tokens.

    layer 1   every context token i attends over the other present context tokens j (m removed):
              b_ij = softmax_j(Z1[i, j]) (logits in the token basis, as JoMA's z),
              o_i = e_i + sum_j b_ij e_j (residual), x_i = o_i + U1^T relu(W1^T o_i)   (MLP with residual)
    layer 2   the query m attends over the context: a_mj = softmax_j(Z2[m, j]),
              f_m = e_m + sum_j a_mj x_j (residual), logit_m = A^T relu(W2^T f_m) + c_m,  BCE against y_m

trained with SGD on fresh batches.  What each layer has learned to associate is read off its logits: the
centred logit zeta_ml = Z[m, l] - mean_{l' != m} Z[m, l'].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..runtime import numpy_rng, record_within, torch_dtype, torch_generator


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


def sample_nodes(tree: Tree, flip: float, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Top-down sampling of every node: y (batch, n_nodes) in {0, 1} (float64), node order of ``tree``
    (latents and leaves; ``y[:, tree.leaves]`` is the sequence, ``y[:, 0]`` its label)."""
    n = len(tree.parent)
    y = torch.empty(batch, n, dtype=torch.float64)
    y[:, 0] = (torch.rand(batch, generator=gen, dtype=torch.float64) < 0.5).double()
    flips = (torch.rand(batch, n, generator=gen, dtype=torch.float64) < flip).double()
    for i in range(1, n):  # parents precede children in the node order built by ``balanced``
        p = tree.parent[i]
        y[:, i] = (y[:, p] + flips[:, i]) % 2
    return y


def sample(tree: Tree, flip: float, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-down sampling: present (batch, M) in {0, 1} (float64) and labels (batch,) = root value."""
    y = sample_nodes(tree, flip, batch, gen)
    return y[:, tree.leaves], y[:, 0].long()


MLP_PARAMS = ("W1", "U1", "W2", "A", "c")


@dataclasses.dataclass
class HierTrajectory:
    """steps (S,); Z1, Z2 (S, R, M, M): the layer-1 and layer-2 attention logits in the token basis;
    loss (S, R) on a fixed evaluation batch; mlp: the other parameters (``MLP_PARAMS``) at the same steps,
    each (S, R, ...), kept only when ``train(keep_mlp=True)``."""

    steps: np.ndarray
    Z1: np.ndarray
    Z2: np.ndarray
    loss: np.ndarray
    mlp: dict | None = None

    def params(self, k: int, dtype: str = "float64", device: str = "cpu") -> dict:
        """All parameters at recorded step index k, as the (R, ...) tensors ``forward`` takes."""
        if self.mlp is None:
            raise ValueError("trajectory has no MLP parameters: train with keep_mlp=True")
        dt, dev = torch_dtype(dtype), torch.device(device)
        arrays = {"Z1": self.Z1[k], "Z2": self.Z2[k]} | {n: self.mlp[n][k] for n in MLP_PARAMS}
        return {n: torch.as_tensor(a).to(dt).to(dev) for n, a in arrays.items()}


def _masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over j of (..., i, j) restricted to present j != i; rows with no such j give zeros."""
    M = logits.shape[-1]
    ok = present[..., None, :].bool() & ~torch.eye(M, dtype=torch.bool, device=logits.device)
    a = torch.where(ok, logits, torch.full_like(logits, -torch.inf))
    a = torch.softmax(a, dim=-1)
    return torch.nan_to_num(a, nan=0.0)


def _layers(P: dict, present: torch.Tensor) -> dict:
    """The two blocks on the M masked copies of each sequence (see ``forward``).  Returns ctx (R, B, Mq, M),
    the lower MLP's hidden units h1 = relu(W1^T o_i) (R, B, Mq, Mi, H), layer 2's attention a2 (R, B, Mq, M),
    the upper MLP's hidden units h2 = relu(W2^T f_m) (R, B, Mq, H) and the logits out (R, B, Mq)."""
    R, B, M = present.shape
    eye = torch.eye(M, dtype=present.dtype, device=present.device)
    ctx = present[:, :, None, :] * (1 - eye)  # (R, B, Mq, M): the context of query m
    b1 = _masked_softmax(P["Z1"][:, None, None].expand(R, B, M, M, M), ctx)  # (R, B, Mq, Mi, Mj)
    o = eye + b1  # token i: e_i + sum_j b_ij e_j
    h1 = torch.relu(o @ P["W1"][:, None, None])
    x = o + h1 @ P["U1"][:, None, None]  # (R, B, Mq, Mi, M)
    logits2 = P["Z2"][:, None].expand(R, B, M, M)  # query m's logits over context tokens (token basis)
    ok = ctx.bool()
    a2 = torch.softmax(torch.where(ok, logits2, torch.full_like(logits2, -torch.inf)), dim=-1)
    a2 = torch.nan_to_num(a2, nan=0.0)  # (R, B, Mq, M)
    f = (a2[..., None] * x).sum(-2) + eye  # residual: the query's own (mask) embedding e_m
    h2 = torch.relu(f @ P["W2"][:, None])  # (R, B, Mq, H)
    out = (h2 @ P["A"][:, None]).squeeze(-1) + P["c"][:, None, :]  # (R, B, Mq)
    return {"ctx": ctx, "h1": h1, "a2": a2, "h2": h2, "out": out}


def forward(P: dict, present: torch.Tensor):
    """Masked-leaf prediction.  present (R, B, M).  For every query leaf m, both layers see the sequence
    with m removed (no leak of the target): layer 1 runs on the M masked copies, (R, B, M_query, M, .).
    Returns the loss (R,) (binary cross-entropy on y_m, mean over samples and queries) and layer 2's
    attention (R, B, M_query, M)."""
    parts = _layers(P, present)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(parts["out"], present, reduction="none").mean((1, 2))
    return loss, parts["a2"]


def train(tree: Tree, flip: float, seeds: Sequence[int], steps: int, record: Sequence[int], *, hidden: int = 16,
          lr: float = 0.5, batch: int = 128, init_scale: float = 0.01, eval_batch: int = 512, root_seed: int = 0,
          dtype: str = "float64", device: str = "cpu", keep_mlp: bool = False, bar=None) -> HierTrajectory:
    """SGD on fresh batches for R = len(seeds) runs at once; data and init depend on (root_seed, seed).
    keep_mlp: also keep the MLP parameters at the recorded steps (``HierTrajectory.mlp``)."""
    dt, dev = torch_dtype(dtype), torch.device(device)
    M = len(tree.leaves)
    gens = [torch_generator(root_seed, s, "joma-hier-data") for s in seeds]
    init = {k: [] for k in ("Z1", "W1", "U1", "Z2", "W2", "A", "c")}
    shapes = {"Z1": (M, M), "W1": (M, hidden), "U1": (hidden, M), "Z2": (M, M), "W2": (M, hidden), "A": (hidden, 1),
              "c": (M,)}
    for s in seeds:
        g = torch_generator(root_seed, s, "joma-hier-init")
        for k, shp in shapes.items():
            scale = init_scale if k in ("Z1", "Z2", "c") else 1 / np.sqrt(shp[0])
            init[k].append(torch.randn(*shp, generator=g, dtype=torch.float64) * scale)
    P = {k: torch.stack(v).to(dt).to(dev).requires_grad_() for k, v in init.items()}
    ev_present = torch.stack([sample(tree, flip, eval_batch, torch_generator(root_seed, s, "joma-hier-eval"))[0]
                              for s in seeds]).to(dt).to(dev)
    record = record_within(record, steps)
    out = {"Z1": [], "Z2": [], "loss": []} | ({n: [] for n in MLP_PARAMS} if keep_mlp else {})
    progress = bar(steps, "joma-hier") if bar else None
    for t in range(steps + 1):
        if t in record:
            with torch.no_grad():
                l_ev, _ = forward(P, ev_present)
                out["Z1"].append(P["Z1"].detach().cpu().numpy().copy())
                out["Z2"].append(P["Z2"].detach().cpu().numpy().copy())
                out["loss"].append(l_ev.cpu().numpy())
                for n in MLP_PARAMS if keep_mlp else ():
                    out[n].append(P[n].detach().cpu().numpy().copy())
        if t == steps:
            break
        data = [sample(tree, flip, batch, g) for g in gens]
        present = torch.stack([d[0] for d in data]).to(dt).to(dev)
        loss, _ = forward(P, present)
        grads = torch.autograd.grad(loss.sum(), list(P.values()))
        with torch.no_grad():
            for p, g in zip(P.values(), grads):
                p.sub_(lr * torch.nan_to_num(g))
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    mlp = {n: np.stack(out[n]) for n in MLP_PARAMS} if keep_mlp else None
    return HierTrajectory(np.array(record), np.stack(out["Z1"]), np.stack(out["Z2"]), np.stack(out["loss"]), mlp)


def centred_logits(Z: np.ndarray) -> np.ndarray:
    """zeta[m, l] = Z[m, l] - mean_{l' != m} Z[m, l'] over the last two axes; the diagonal is NaN."""
    M = Z.shape[-1]
    off = ~np.eye(M, dtype=bool)
    mean = np.where(off, Z, 0).sum(-1, keepdims=True) / (M - 1)
    return np.where(off, Z - mean, np.nan)


# --- Table 1: do the hidden units align with the latent variables? -------------------------------------------------

def pooled_hidden(P: dict, present: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden units max-pooled over the positions of each sequence, as the official Table 1 script pools
    them (``decoder_only_hier.py``: max over positions, then a correlation with the latents).

    present (R, B, M).  Lower MLP: h1 = relu(W1^T o_i) maxed over the present context tokens i of every
    masked copy (absent tokens are never read by layer 2; relu >= 0, so zeroing them drops them from the
    max).  Upper MLP: h2 = relu(W2^T f_m) maxed over the present queries m (the positions of the sequence;
    the task also queries absent leaves, but those are not positions of the sequence, and their residual
    e_m is the same in every sample).  Returns (R, B, H) each; the batch is processed in chunks (layer 1
    holds (R, chunk, M, M, M) tensors)."""
    lo, up = [], []
    with torch.no_grad():
        for s in range(0, present.shape[1], chunk):
            parts = _layers(P, present[:, s:s + chunk])
            lo.append((parts["h1"] * parts["ctx"][..., None]).amax((2, 3)))
            up.append((parts["h2"] * present[:, s:s + chunk, :, None]).amax(2))
    return torch.cat(lo, 1), torch.cat(up, 1)


def max_correlation(latents: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """NCorr of Table 1: per run and latent, the largest Pearson correlation over samples between the latent
    and any hidden unit (the official ``compute_corr(..., zero_mean=True)`` then a max over units).

    latents (R, B, K) in {0, 1}; hidden (R, B, H).  Returns (R, K).  A unit constant over the batch (a dead
    ReLU) has correlation 0."""
    x = latents - latents.mean(1, keepdims=True)
    y = hidden - hidden.mean(1, keepdims=True)
    cov = np.einsum("rbk,rbh->rkh", x, y)
    norm = np.sqrt((x ** 2).sum(1))[:, :, None] * np.sqrt((y ** 2).sum(1))[:, None, :]
    ok = norm > 1e-12 * max(1.0, float(norm.max(initial=0.0)))
    return np.where(ok, cov / np.where(ok, norm, 1.0), 0.0).max(-1)


def latent_nodes(tree: Tree) -> tuple[np.ndarray, np.ndarray]:
    """The latent (non-leaf) nodes and their levels (depth below the root; the root, level 0, is the label)."""
    leaves = set(tree.leaves.tolist())
    nodes = np.array([i for i in range(len(tree.parent)) if i not in leaves])
    return nodes, np.array([tree.depth(int(i)) for i in nodes])


def alignment_frame(tree: Tree, flip: float, tr: HierTrajectory, seeds, *, eval_batch: int = 1024,
                    root_seed: int = 0, dtype: str = "float64", device: str = "cpu", chunk: int = 128) -> pd.DataFrame:
    """NCorr between each layer's pooled hidden units and every latent node, at every recorded step.

    Evaluation sequences come with their latents (``sample_nodes``) from their own stream per seed.  The
    control ``ncorr_shuffled`` correlates the same units with the latents of other samples (a fixed random
    permutation of the batch per seed): the chance level of a max over H units.  Columns: seed_index, step,
    layer ("lower" = MLP of layer 1, "upper" = MLP of layer 2), node, level, ncorr, ncorr_shuffled."""
    nodes, levels = latent_nodes(tree)
    ys = [sample_nodes(tree, flip, eval_batch, torch_generator(root_seed, s, "joma-hier-latents")) for s in seeds]
    present = torch.stack([y[:, tree.leaves] for y in ys]).to(torch_dtype(dtype)).to(torch.device(device))
    lat = np.stack([y[:, nodes].numpy() for y in ys])  # (R, B, K)
    perm = np.stack([numpy_rng(root_seed, s, "joma-hier-latents-shuffle").permutation(eval_batch) for s in seeds])
    lat_shuffled = np.take_along_axis(lat, perm[:, :, None], axis=1)
    R, K = len(seeds), len(nodes)
    rows = []
    for k, step in enumerate(tr.steps):
        pooled = pooled_hidden(tr.params(k, dtype, device), present, chunk)
        for layer, h in zip(("lower", "upper"), pooled):
            h = h.double().cpu().numpy()
            rows.append(pd.DataFrame({"seed_index": np.repeat(np.arange(R), K), "step": int(step), "layer": layer,
                                      "node": np.tile(nodes, R), "level": np.tile(levels, R),
                                      "ncorr": max_correlation(lat, h).ravel(),
                                      "ncorr_shuffled": max_correlation(lat_shuffled, h).ravel()}))
    return pd.concat(rows, ignore_index=True)


def alignment_figure(per_seed: pd.DataFrame):
    """NCorr over training per layer (columns) and latent level (lines, mean over seeds; dotted: the chance
    level of the permuted control).  per_seed: columns step, layer, level, ncorr, ncorr_shuffled (and
    optionally seed_index, tree; several trees are pooled by level)."""
    from ..report.figures import subplots

    layers = [x for x in ("lower", "upper") if x in set(per_seed.layer)]
    fig, axes = subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        g = per_seed[per_seed.layer == layer]
        for level, s in g.groupby("level"):
            m = s.groupby("step")[["ncorr", "ncorr_shuffled"]].mean()
            line, = ax.plot(m.index, m.ncorr, marker="o", ms=3, label=f"level {level}" + (" (label)" if level == 0 else ""))
            ax.plot(m.index, m.ncorr_shuffled, ls=":", color=line.get_color(), lw=0.8)
        ax.set_title(f"{layer} MLP ({'layer 1' if layer == 'lower' else 'layer 2'})")
        ax.set_xlabel("SGD step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("NCorr: max over units of corr(latent, unit)")
    fig.suptitle("JoMA Table 1: hidden units vs latents of the tree (dotted: permuted-sample chance level)")
    return fig
