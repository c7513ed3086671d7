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

import torch
import torch.nn.functional as F
from torch import nn


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


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float) -> float:
    """One SGD step with optional global gradient-norm clipping (``clip`` <= 0: none); returns the
    gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    else:
        norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    opt.step()
    return float(norm)
