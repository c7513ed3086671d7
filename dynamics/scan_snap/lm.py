"""A small standard Transformer language model: token embedding, causal softmax self-attention,
optional positional encoding, optional MLP, linear decoder (nanoGPT-sized; one file).

The 1-layer, 1-head, no-MLP default is the "standard Transformer" of Tian et al. 2023, Sec. 8 /
Fig. 7 and App. G (there: emsize 200, sinusoidal positions, post-LayerNorm, SGD), reduced to
the parts the Scan and Snap theory talks about.  Depth, width, heads and the MLP are parameters so
the same module serves depth-versus-width sweeps.

Shapes: tokens (B, L) int64; logits (B, L, vocab); attention weights (B, H, L, L) per layer,
row t over keys 0..t (causal; the query attends to itself, as in a standard decoder).

Per layer, with x (B, L, d) and head size d_h = d / H::

    q, k, v = x W_q, x W_k, x W_v                     (one packed Linear, with bias)
    a = softmax(q k^T / sqrt(d_h) + causal mask)      (F.scaled_dot_product_attention when training)
    x = x + (a v) W_o          residual (or x = (a v) W_o without)
    x = LN(x) after the sum ("post", as nn.TransformerEncoderLayer), before the branch ("pre"), or none
    x = x + MLP(x) when d_ff > 0 (ReLU, same norm placement)

For a first layer without positional encoding the attention logit of query token m on key token l
is a function of the two tokens only, q(m) . k(l) / sqrt(d_h): the Scan and Snap Z matrix
(:meth:`TransformerLM.token_logits`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import (
    FusedSGD,
    Precision,
    Record,
    Schedule,
    Trainer,
    lr_table,
    models,
    ops,
)
from ..engine.ops import BlockSpec


@dataclasses.dataclass(frozen=True)
class LMSpec:
    vocab: int
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 1
    d_ff: int = 0  # 0: no MLP
    pos: Literal["none", "sinusoidal", "learned"] = "none"
    norm: Literal["none", "pre", "post"] = "post"
    residual: bool = True
    dropout: float = 0.0
    max_len: int = 512

    def __post_init__(self) -> None:
        if self.vocab < 2 or self.d_model < 1 or self.n_layers < 1 or self.n_heads < 1 or self.d_ff < 0:
            raise ValueError(f"invalid LM sizes: {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")


def sinusoidal(max_len: int, d: int) -> torch.Tensor:
    """Vaswani et al. 2017, Sec. 3.5: PE[p, 2i] = sin(p / 10000^{2i/d}), PE[p, 2i+1] = cos(...). (max_len, d)"""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    pe = torch.zeros(max_len, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe.float()


class Block(nn.Module):
    def __init__(self, spec: LMSpec):
        super().__init__()
        d = spec.d_model
        self.spec = spec
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d) if spec.norm != "none" else nn.Identity()
        if spec.d_ff:
            self.ff = nn.Sequential(nn.Linear(d, spec.d_ff), nn.ReLU(), nn.Dropout(spec.dropout), nn.Linear(spec.d_ff, d))
            self.norm2 = nn.LayerNorm(d) if spec.norm != "none" else nn.Identity()
        self.drop = nn.Dropout(spec.dropout)

    def heads(self, x: torch.Tensor):
        B, L, d = x.shape
        H = self.spec.n_heads
        q, k, v = self.qkv(x).view(B, L, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, L, d_h)
        return q, k, v

    def attend(self, x: torch.Tensor, weights: bool = False):
        B, L, d = x.shape
        q, k, v = self.heads(x)
        if weights:
            s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            s = s.masked_fill(torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            a = torch.softmax(s, -1)
            y = a @ v
        else:
            a = None
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.spec.dropout if self.training else 0.0)
        return self.drop(self.out(y.transpose(1, 2).reshape(B, L, d))), a

    def forward(self, x: torch.Tensor, weights: bool = False):
        pre = self.spec.norm == "pre"
        y, a = self.attend(self.norm1(x) if pre else x, weights)
        x = x + y if self.spec.residual else y
        if self.spec.norm == "post":
            x = self.norm1(x)
        if self.spec.d_ff:
            y = self.drop(self.ff(self.norm2(x) if pre else x))
            x = x + y if self.spec.residual else y
            if self.spec.norm == "post":
                x = self.norm2(x)
        return x, a


class TransformerLM(nn.Module):
    """See the module docstring.  ``forward(tokens) -> logits``; ``loss(tokens, targets)``;
    ``attention(tokens) -> [ (B, H, L, L) per layer ]``."""

    def __init__(self, spec: LMSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab, spec.d_model)
        if spec.pos == "sinusoidal":
            self.register_buffer("pe", sinusoidal(spec.max_len, spec.d_model), persistent=False)
        elif spec.pos == "learned":
            self.pe = nn.Parameter(torch.zeros(spec.max_len, spec.d_model))
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layers))
        if spec.norm == "pre":
            self.final_norm = nn.LayerNorm(spec.d_model)
        self.decoder = nn.Linear(spec.d_model, spec.vocab)
        self.drop = nn.Dropout(spec.dropout)
        # the PyTorch word-language-model / transformer tutorial init (used for the paper's Fig. 7)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.spec.pos != "none":
            x = x + self.pe[: tokens.shape[1]]
        return self.drop(x)

    def hidden(self, tokens: torch.Tensor, weights: bool = False):
        if tokens.shape[1] > self.spec.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.spec.max_len}")
        x = self.inputs(tokens)
        maps = []
        for block in self.blocks:
            x, a = block(x, weights)
            maps.append(a)
        if self.spec.norm == "pre":
            x = self.final_norm(x)
        return x, maps

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.hidden(tokens)[0])

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def attention(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, (B, H, L, L) each, computed explicitly."""
        return self.hidden(tokens, weights=True)[1]

    @torch.no_grad()
    def token_logits(self, queries: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """First-layer content logits q(m) . k(l) / sqrt(d_h) for query tokens ``queries`` (Q,) against
        ``keys`` (V,) (default: all tokens), without positional terms: (H, Q, V).  With pos="none" and
        norm != "pre" these are exactly the first layer's attention logits (the paper's Z rows)."""
        block = self.blocks[0]
        keys = torch.arange(self.spec.vocab, device=queries.device) if keys is None else keys
        e_q, e_k = self.embed(queries)[None], self.embed(keys)[None]
        if self.spec.norm == "pre":
            e_q, e_k = block.norm1(e_q), block.norm1(e_k)
        q = block.heads(e_q)[0][0]  # (H, Q, d_h)
        k = block.heads(e_k)[1][0]
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def attention_entropy(a: torch.Tensor, skip_first: int = 1) -> torch.Tensor:
    """Mean entropy (nats) of causal attention rows: a (..., L, L) -> (...), averaged over query
    positions t >= skip_first (row 0 attends only to itself and has entropy 0)."""
    h = -(a * torch.log(a.clamp_min(1e-30))).sum(-1)
    return h[..., skip_first:].mean(-1)


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """The word-language-model layout: the stream cut into ``batch`` contiguous columns. (N, batch)"""
    n = ids.numel() // batch
    if n < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for batch {batch}")
    return ids[: n * batch].view(batch, n).t().contiguous()


def chunk(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (batch, L) and next-token targets (batch, L) starting at row i of a batchified stream."""
    L = min(bptt, source.shape[0] - 1 - i)
    return source[i:i + L].t(), source[i + 1:i + 1 + L].t()


# ------------------------------------------------------------------------------------------------
# R replicas of the LM as one program (dynamics.engine): seeds x learning rates of one shape

def replica_spec(spec: LMSpec) -> models.EncoderSpec:
    """The engine's spec of :class:`TransformerLM` (same blocks, same PyTorch-default init: linear
    weights and biases U(+-1/sqrt(fan_in)), embedding and decoder weight U(+-0.1), decoder bias 0,
    learned positions 0)."""
    block = BlockSpec(spec.d_model, spec.n_heads, hidden=spec.d_ff, norm=spec.norm, causal=True, act="relu",
                      residual=spec.residual, dropout=spec.dropout)
    return models.EncoderSpec(block, depth=spec.n_layers, tokens=spec.max_len, vocab=spec.vocab, pos=spec.pos,
                              head="lm", final_norm=spec.norm == "pre", init="torch")


@torch.no_grad()
def replica_eval(params, spec: LMSpec, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per replica and layer: mean attention entropy (nats, positions >= 1, averaged over sequences and
    heads) and per replica the mean cross-entropy on shared inputs x, targets y (B, L)
    -> ((R, n_layers), (R,))."""
    R = params["tok"].shape[0]
    rec = Record(-1)
    logits = models.forward(params, replica_spec(spec), x.expand(R, *x.shape), train=False, rec=rec)
    H = torch.stack([attention_entropy(rec.maps[("attention", k)]).flatten(1).mean(1)
                     for k in range(spec.n_layers)], 1)
    return H, models.cross_entropy(logits, y.expand(R, *y.shape))


@torch.no_grad()
def replica_attention(params, spec: LMSpec, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Attention weights (R, B, H, L, L) of one layer on shared inputs x (B, L)."""
    R = params["tok"].shape[0]
    rec = Record(-1)
    models.forward(params, replica_spec(spec), x.expand(R, *x.shape), train=False, rec=rec)
    return rec.maps[("attention", layer)]


@torch.no_grad()
def replica_token_logits(params, spec: LMSpec, queries: torch.Tensor) -> torch.Tensor:
    """:meth:`TransformerLM.token_logits` of every replica against all tokens: (R, H, Q, V)."""
    tok, d, H = params["tok"], spec.d_model, spec.n_heads
    e_q, e_k = tok[:, queries], tok
    if spec.norm == "pre":
        g, b = params["ln1_g"][:, 0], params["ln1_b"][:, 0]
        e_q, e_k = ops.layer_norm(e_q, g, b), ops.layer_norm(e_k, g, b)
    w, bias = params["qkv_w"][:, 0], params["qkv_b"][:, 0]  # (R, d, 3d), (R, 3d)
    q = (torch.bmm(e_q, w[..., :d]) + bias[:, None, :d]).unflatten(-1, (H, d // H)).transpose(1, 2)
    k = (torch.bmm(e_k, w[..., d:2 * d]) + bias[:, None, d:2 * d]).unflatten(-1, (H, d // H)).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d // H)


@dataclasses.dataclass
class ReplicaRun:
    """What :func:`train_replicas` returns: ``trajectory`` rows (replica, iter, layer, entropy, eval_loss,
    train_loss) at every evaluation, one per layer (the losses repeat); ``maps`` (iter -> (L, L) first-layer attention of the first
    evaluation sequence) for ``map_replica``; ``diverged`` (R,): the iteration count at which a
    replica's loss was first non-finite (it then stops), or -1."""

    params: object
    trajectory: list[dict]
    maps: dict[int, torch.Tensor]
    diverged: np.ndarray


def train_replicas(spec: LMSpec, seeds: list, lrs: list[float], source: torch.Tensor, ex: torch.Tensor,
                   ey: torch.Tensor, iters: int, bptt: int, clip: float, eval_every: int, map_every: int = 0,
                   map_replica: int = -1, device: str = "cpu", on_init=None, bar=None) -> ReplicaRun:
    """SGD (Tian et al. 2023's notebook: plain SGD, per-model gradient-norm clipping ``clip``) of R
    replicas: replica r from seed ``seeds[r]`` (a SeedSequence) at learning rate ``lrs[r]``, all on the
    same chunk sequence of ``source`` (the word-language-model layout, cycling epochs).  Evaluation
    (entropy, loss) on the chunks ex, ey (C, B, L) every ``eval_every`` iterations and at the end.
    ``on_init(params)`` runs before the first step (e.g. to record the initial logits)."""
    R = len(seeds)
    espec = replica_spec(spec)
    params = models.init(espec, seeds, torch.float32, device)
    trainer = Trainer(params, FusedSGD(params), lr_table(lrs, Schedule(iters, kind="constant"), iters,
                                                         torch.float32, device),
                      clip=clip, precision=Precision(device))
    if on_init is not None:
        on_init(params)
    C_, B, L = ex.shape
    xe, ye = ex.reshape(C_ * B, L), ey.reshape(C_ * B, L)
    n_rows = source.shape[0] - 1
    traj, maps = [], {}
    train_loss = torch.full((R,), float("nan"))
    stopped = np.full(R, -1)
    for it in range(iters + 1):
        if it % eval_every == 0 or it == iters:
            H, ev = replica_eval(params, spec, xe, ye)
            for r in np.flatnonzero(stopped < 0):
                traj.extend({"replica": int(r), "iter": it, "layer": k, "entropy": float(H[r, k]),
                             "eval_loss": float(ev[r]), "train_loss": float(train_loss[r])}
                            for k in range(spec.n_layers))
        if map_replica >= 0 and map_every and (it % map_every == 0 or it == iters) and stopped[map_replica] < 0:
            maps[it] = replica_attention(params, spec, ex[0, :1])[map_replica, 0, 0]
        if it == iters:
            break
        i = (it * bptt) % max(n_rows - 1, 1)
        x, y = chunk(source, i, bptt)

        def loss_fn(step, rec, x=x, y=y):
            logits = models.forward(params, espec, x.expand(R, *x.shape), train=True)
            return models.cross_entropy(logits, y.expand(R, *y.shape))

        train_loss = trainer.step(loss_fn).cpu()
        newly = (trainer.diverged >= 0) & (stopped < 0)
        stopped[newly] = it + 1  # as the per-model loop reported it: iterations run when it stopped
        if bar is not None:
            bar.update(1)
        if (stopped >= 0).all():
            break
    return ReplicaRun(params, traj, maps, stopped)
