"""A standard softmax transformer, R independent replicas (seeds) advanced as one tensor program.

Pre-LayerNorm blocks (Radford et al. 2019 / GPT-2 layout):

    h <- h + W_O MHA(LN(h)),   MHA = concat_h softmax(Q_h K_h^T / sqrt(d_a) [+ causal mask]) V_h
    h <- h + W_2 GELU(W_1 LN(h) + b_1) + b_2,   d_ff = 4 d_x

with learned token and position embeddings, a final LayerNorm, and either a tied-embedding
language-model head (causal attention) or mean pooling + a linear classifier (bidirectional).

Every parameter carries a leading replica axis R, so the seeds of one (depth, width) cell train
together: activations are (R, batch, tokens, d_x).  Non-embedding parameters per layer are
12 d_x^2 + 13 d_x (Kaplan et al. 2020; the BigScience count l (12 h^2 + 13 h)), the budget counted
by :func:`nonembedding_params`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def nonembedding_params(depth: int, width: int) -> int:
    """Weights and biases of the L blocks: 4 d^2 + 4 d (attention) + 8 d^2 + 5 d (MLP) + 4 d (two LNs)."""
    return depth * (12 * width**2 + 13 * width)


def width_for_budget(budget: float, depth: int, heads: int) -> int:
    """The multiple of ``heads`` whose non-embedding count 12 L d^2 + 13 L d is closest to ``budget``."""
    best, best_err = heads, math.inf
    for d in range(heads, 4096, heads):
        err = abs(nonembedding_params(depth, d) - budget)
        if err < best_err:
            best, best_err = d, err
        if nonembedding_params(depth, d) > budget:
            break
    return best


class ReplicaTransformer(nn.Module):
    """R replicas of a depth-L, width-d_x, H-head transformer.

    vocab: input tokens; classes: 0 for a tied LM head over the vocabulary, else the number of
    classes of a mean-pooled classifier; causal: causal self-attention mask.
    """

    def __init__(self, replicas: int, vocab: int, tokens: int, depth: int, width: int, heads: int,
                 classes: int, causal: bool, generator: torch.Generator, dtype=torch.float32, device="cpu"):
        super().__init__()
        if width % heads:
            raise ValueError(f"heads={heads} must divide width={width}")
        R, d, L = replicas, width, depth
        self.depth, self.width, self.heads, self.causal, self.classes = depth, width, heads, causal, classes
        kw = dict(dtype=dtype, device=device)

        def normal(*shape, std):
            return nn.Parameter(torch.randn(*shape, generator=generator, **kw).to(device) * std)

        def const(value, *shape):
            return nn.Parameter(torch.full(shape, float(value), **kw))

        std, proj = 0.02, 0.02 / math.sqrt(2 * L)  # GPT-2 init: residual projections scaled by 1/sqrt(2L)
        self.tok = normal(R, vocab, d, std=std)
        self.pos = normal(R, tokens, d, std=std)
        self.ln1_w, self.ln1_b = const(1, R, L, d), const(0, R, L, d)
        self.qkv, self.qkv_b = normal(R, L, d, 3 * d, std=std), const(0, R, L, 3 * d)
        self.out, self.out_b = normal(R, L, d, d, std=proj), const(0, R, L, d)
        self.ln2_w, self.ln2_b = const(1, R, L, d), const(0, R, L, d)
        self.fc1, self.fc1_b = normal(R, L, d, 4 * d, std=std), const(0, R, L, 4 * d)
        self.fc2, self.fc2_b = normal(R, L, 4 * d, d, std=proj), const(0, R, L, d)
        self.lnf_w, self.lnf_b = const(1, R, d), const(0, R, d)
        if classes:
            self.head, self.head_b = normal(R, d, classes, std=std), const(0, R, classes)
        # True above the diagonal: key j > query i is masked for causal attention
        self.register_buffer("mask", torch.ones(tokens, tokens, dtype=torch.bool, device=device).triu(1),
                             persistent=False)

    def nonembedding(self) -> int:
        return nonembedding_params(self.depth, self.width)

    @staticmethod
    def _ln(x, w, b):
        # x (R, B, T, d); w, b (R, d)
        return nn.functional.layer_norm(x, x.shape[-1:]) * w[:, None, None, :] + b[:, None, None, :]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (R, B, T) int64 -> logits (R, B, T, vocab) for the LM, (R, B, classes) for the classifier."""
        R, B, T = ids.shape
        H, d = self.heads, self.width
        da = d // H
        h = torch.gather(self.tok, 1, ids.reshape(R, B * T, 1).expand(R, B * T, d)).reshape(R, B, T, d)
        h = h + self.pos[:, None, :T, :]
        for layer in range(self.depth):
            x = self._ln(h, self.ln1_w[:, layer], self.ln1_b[:, layer])
            qkv = torch.einsum("rbtd,rde->rbte", x, self.qkv[:, layer]) + self.qkv_b[:, layer, None, None, :]
            q, k, v = qkv.reshape(R, B, T, 3, H, da).permute(3, 0, 1, 4, 2, 5)  # (R, B, H, T, da) each
            # explicit softmax attention: for heads this small it beats the fused CPU kernel
            scores = q @ k.transpose(-1, -2) / math.sqrt(da)  # (R, B, H, T, T)
            if self.causal:
                scores = scores.masked_fill(self.mask, float("-inf"))
            att = (scores.softmax(-1) @ v).permute(0, 1, 3, 2, 4).reshape(R, B, T, d)
            h = h + torch.einsum("rbtd,rde->rbte", att, self.out[:, layer]) + self.out_b[:, layer, None, None, :]
            x = self._ln(h, self.ln2_w[:, layer], self.ln2_b[:, layer])
            x = torch.einsum("rbtd,rde->rbte", x, self.fc1[:, layer]) + self.fc1_b[:, layer, None, None, :]
            x = nn.functional.gelu(x)
            h = h + torch.einsum("rbte,red->rbtd", x, self.fc2[:, layer]) + self.fc2_b[:, layer, None, None, :]
        h = self._ln(h, self.lnf_w, self.lnf_b)
        if self.classes:
            return torch.einsum("rbd,rdc->rbc", h.mean(2), self.head) + self.head_b[:, None, :]
        return torch.einsum("rbtd,rvd->rbtv", h, self.tok)  # tied input/output embedding
