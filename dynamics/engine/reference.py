"""One replica as a plain ``nn.Module`` (nn.Linear, nn.LayerNorm, nn.MultiheadAttention): the
independent reference the batched forward is tested against, and the per-replica baseline (one
module and one ``torch.optim.AdamW`` per replica, what a user would write) that benchmarks compare
the engine with.  Vanilla attention only."""

from __future__ import annotations

import torch
from torch import nn

from .models import EncoderSpec, sinusoidal


def _linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.T)
        if b is not None:
            lin.bias.copy_(b)
    return lin


def _norm(g: torch.Tensor, b: torch.Tensor) -> nn.LayerNorm:
    ln = nn.LayerNorm(g.shape[0], dtype=g.dtype)
    with torch.no_grad():
        ln.weight.copy_(g)
        ln.bias.copy_(b)
    return ln


class Block(nn.Module):
    def __init__(self, spec: EncoderSpec, w: dict[str, torch.Tensor]):
        super().__init__()
        b = spec.block
        if b.attention != "vanilla":
            raise ValueError("the reference implements vanilla attention only")
        self.spec = b
        d = b.width
        self.attn = nn.MultiheadAttention(d, b.heads, batch_first=True, dtype=w["qkv_w"].dtype)
        with torch.no_grad():
            self.attn.in_proj_weight.copy_(w["qkv_w"].T)
            self.attn.in_proj_bias.copy_(w["qkv_b"])
            self.attn.out_proj.weight.copy_(w["proj_w"].T)
            self.attn.out_proj.bias.copy_(w["proj_b"])
        self.ln1 = _norm(w["ln1_g"], w["ln1_b"]) if b.norm != "none" else nn.Identity()
        if b.hidden:
            self.mlp = nn.Sequential(_linear(w["fc1_w"], w["fc1_b"]), nn.GELU() if b.act == "gelu" else nn.ReLU(),
                                     _linear(w["fc2_w"], w["fc2_b"]))
            self.ln2 = _norm(w["ln2_g"], w["ln2_b"]) if b.norm != "none" else nn.Identity()

    def _sa(self, x):
        T = x.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1) if self.spec.causal else None
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]

    def forward(self, x):
        b = self.spec
        res = (lambda x, y: x + y) if b.residual else (lambda x, y: y)
        if b.norm == "pre":
            x = res(x, self._sa(self.ln1(x)))
            if b.hidden:
                x = res(x, self.mlp(self.ln2(x)))
            return x
        x = self.ln1(res(x, self._sa(x)))
        if b.hidden:
            x = self.ln2(res(x, self.mlp(x)))
        return x


class Encoder(nn.Module):
    """Replica ``r`` of an engine :class:`EncoderSpec` model: ``Encoder(spec, params.replica(r))``."""

    def __init__(self, spec: EncoderSpec, p: dict[str, torch.Tensor]):
        super().__init__()
        self.spec = spec
        dt = next(iter(p.values())).dtype
        if spec.patch_dim:
            self.embed = _linear(p["embed_w"], p["embed_b"])
        else:
            self.embed = nn.Embedding(spec.vocab, spec.block.width, dtype=dt)
            with torch.no_grad():
                self.embed.weight.copy_(p["tok"])
        self.cls = nn.Parameter(p["cls"].clone()) if spec.cls else None
        self.pos = nn.Parameter(p["pos"].clone()) if spec.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(spec, {n: t[l] for n, t in p.items() if t.dim() >= 2 and n in _PER_BLOCK})
                                    for l in range(spec.depth))
        self.norm = _norm(p["norm_g"], p["norm_b"]) if spec.final_norm else nn.Identity()
        self.head = _linear(p["head_w"], p["head_b"]) if spec.head in ("cls", "mean", "lm") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        h = self.embed(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], 1, -1), h], 1)
        T = h.shape[1]
        if self.pos is not None:
            h = h + self.pos[:T]
        elif s.pos == "sinusoidal":
            h = h + sinusoidal(T, h.shape[-1], h.dtype, h.device)
        for blk in self.blocks:
            h = blk(h)
        if s.head == "cls":
            return self.head(self.norm(h[:, 0]))
        h = self.norm(h)
        if s.head == "mean":
            return self.head(h.mean(1))
        if s.head == "lm_tied":
            return h @ self.embed.weight.T
        return self.head(h)


_PER_BLOCK = {"ln1_g", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_g", "ln2_b", "fc1_w", "fc1_b",
              "fc2_w", "fc2_b"}
