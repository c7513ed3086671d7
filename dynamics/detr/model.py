"""A toy DETR: conv feature-grid memory, a decoder of learned queries with reference boxes, an
O-decoder and an optional auxiliary C-decoder (DAC-DETR, Hu et al. 2023, Sec. 3 and official
``models/deformable_transformer.py``).

Memory: a patch embedding (stride ``patch``) and a depthwise 3x3 conv map the (B, C+1, S, S) image
to a (S/patch)^2 grid of d-dim features, plus a fixed sine positional encoding of each cell centre
(DETR).  Each cell sees its own patch exactly (the embedding is linear in the pixels) and its 3x3
neighbourhood of patches; the toy's stand-in for a backbone and encoder.

Decoder layer l (post-norm, as the official ``DeformableTransformerDecoderLayer``), queries
x (B, Q, d), reference boxes r_l (B, Q, 4) cxcywh, positional query p_l = MLP(sine(r_l)) (DINO)::

    O-stream:  x <- LN2(x + SA(x + p, x + p, x))          self-attention among queries
               x <- LN1(x + CA(x + p, memory, r_l))        cross-attention to the grid
               x <- LN3(x + FFN(x))
    C-stream:  same without SA; its layer-0 input is the O-stream's post-SA state of layer 0
               (official: ``if lid == 0: tgt_cdecoder = tgt_og_input``); CA, LN1, FFN, LN3, the
               positional MLP and the heads are the O-stream's modules; its reference chain is its own.

Heads per layer (shared by both streams): class logits W_c x + b (bias at prior 0.01) and box
b = sigmoid(logit(r_l) + MLP_l(x)); the next reference is b detached (iterative box refinement).

CA is dense attention over the grid with a Gaussian prior around the reference box, the toy stand-in
for deformable attention sampling around the reference point: the logit of cell (u, v) gets
-((u - cx)^2 / w^2 + (v - cy)^2 / h^2) / (2 sigma_h^2), with a learned sigma per head (init 1).

``forward(..., probe=True)`` also returns the query states x (B, Q, d) and the reference r_l at every
sublayer boundary of layer l (points "in", "sa", "ca", "ffn"; the C-stream has no "sa").  Only the
"ffn" state is what layer l's heads were trained on; :mod:`dynamics.detr.probes` trains a head per
boundary on that boundary's own states, so that the gather/disperse counts are read on-distribution.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import field
from ..errors import UserError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    n_classes: int = field(3, "object classes (logits: n_classes + 1 with no-object)")
    canvas: int = field(32, "image side in pixels")
    d: int = field(64, "model width")
    heads: int = field(4, "attention heads")
    layers: int = field(3, "decoder layers")
    queries: int = field(30, "object queries (learned content + reference box each)")
    ffn: int = field(128, "FFN hidden width")
    patch: int = field(4, "pixels per memory cell side (memory grid = canvas / patch)")

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise UserError(f"queries must be at least 1, got {self.queries}")
        if self.layers < 1:
            raise UserError(f"layers must be at least 1, got {self.layers}")
        if self.d % (4 * self.heads) or self.d % 4:
            raise UserError(f"d={self.d} must be divisible by 4 * heads = {4 * self.heads}")
        if self.patch < 1 or self.canvas % self.patch:
            raise UserError(f"patch={self.patch} must divide the canvas ({self.canvas} pixels)")

    @property
    def grid(self) -> int:
        return self.canvas // self.patch


def sine_embed(coords: torch.Tensor, d: int, temperature: float = 10000.0) -> torch.Tensor:
    """(..., k) coordinates in [0, 1] -> (..., d) with d/k sin/cos features each (DETR's encoding,
    scale 2 pi)."""
    k = coords.shape[-1]
    n = d // (2 * k)
    freq = temperature ** (torch.arange(n, device=coords.device, dtype=coords.dtype) / n)
    ang = coords[..., None] * 2 * math.pi / freq  # (..., k, n)
    return torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Sequential):
    def __init__(self, sizes: list[int]):
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(nn.ReLU())
        super().__init__(*mods)


class CrossAttention(nn.Module):
    """Multi-head attention of queries over the memory grid with a Gaussian reference-box prior."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.log_sigma = nn.Parameter(torch.zeros(heads))

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mpos: torch.Tensor, cells: torch.Tensor,
                ref: torch.Tensor) -> torch.Tensor:
        """x (B, Q, d) queries incl. position; mem (B, N, d); mpos (N, d); cells (N, 2); ref (B, Q, 4)."""
        B, Q, _ = x.shape
        q = self.q(x).view(B, Q, self.h, self.dh).transpose(1, 2)
        k = self.k(mem + mpos).view(B, -1, self.h, self.dh).transpose(1, 2)
        v = self.v(mem).view(B, -1, self.h, self.dh).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.dh)  # (B, h, Q, N)
        off = (cells[None, None] - ref[:, :, None, :2]) / ref[:, :, None, 2:].clamp(min=1e-3)  # (B, Q, N, 2)
        dist2 = off.pow(2).sum(-1)[:, None]  # (B, 1, Q, N)
        prior = -dist2 / (2 * torch.exp(2 * self.log_sigma))[None, :, None, None]
        attn = (logits + prior).softmax(-1)
        return self.o((attn @ v).transpose(1, 2).reshape(B, Q, -1))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        d = spec.d
        self.sa = nn.MultiheadAttention(d, spec.heads, batch_first=True)
        self.ca = CrossAttention(d, spec.heads)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.lin1, self.lin2 = nn.Linear(d, spec.ffn), nn.Linear(spec.ffn, d)

    def self_attn(self, x, pos):
        qk = x + pos
        return self.norm2(x + self.sa(qk, qk, x, need_weights=False)[0])

    def cross_attn(self, x, pos, mem, mpos, cells, ref):
        return self.norm1(x + self.ca(x + pos, mem, mpos, cells, ref))

    def ffn(self, x):
        return self.norm3(x + self.lin2(F.relu(self.lin1(x))))


@dataclasses.dataclass
class Output:
    """Per-layer predictions: logits (L, B, Q, C), boxes (L, B, Q, 4) cxcywh.  ``probes`` maps
    (stream, layer, point) -> (state x (B, Q, d), reference box r_l (B, Q, 4)) when asked for."""

    o_logits: torch.Tensor
    o_boxes: torch.Tensor
    c_logits: torch.Tensor | None = None
    c_boxes: torch.Tensor | None = None
    probes: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] | None = None


class ToyDETR(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, g = spec.d, spec.grid
        self.stem = nn.Sequential(nn.Conv2d(spec.n_classes + 1, d, spec.patch, stride=spec.patch), nn.ReLU(),
                                  nn.Conv2d(d, d, 3, padding=1, groups=d), nn.ReLU(), nn.Conv2d(d, d, 1))
        centre = (torch.arange(g, dtype=torch.float32) + 0.5) / g
        cells = torch.stack(torch.meshgrid(centre, centre, indexing="xy"), -1).reshape(-1, 2)  # (N, 2) = (x, y)
        self.register_buffer("cells", cells, persistent=False)
        self.register_buffer("mpos", sine_embed(cells, d), persistent=False)
        self.content = nn.Embedding(spec.queries, d)
        ref = torch.empty(spec.queries, 4)
        ref[:, :2].uniform_(0.05, 0.95)
        ref[:, 2:] = 0.2
        self.ref_logit = nn.Parameter(inverse_sigmoid(ref))
        self.pos_head = MLP([d, d, d])
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.layers))
        self.class_heads = nn.ModuleList(nn.Linear(d, spec.n_classes) for _ in range(spec.layers))
        self.box_heads = nn.ModuleList(MLP([d, d, d, 4]) for _ in range(spec.layers))
        prior = -math.log((1 - 0.01) / 0.01)
        for h in self.class_heads:
            nn.init.constant_(h.bias, prior)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.stem(images).flatten(2).transpose(1, 2)  # (B, N, d)

    def pos(self, ref: torch.Tensor) -> torch.Tensor:
        return self.pos_head(sine_embed(ref, self.spec.d))

    def heads(self, l: int, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.class_heads[l](x), (inverse_sigmoid(ref) + self.box_heads[l](x)).sigmoid()

    def forward(self, images: torch.Tensor, c_decoder: bool = False, probe: bool = False) -> Output:
        mem = self.encode(images)
        B = mem.shape[0]
        x = self.content.weight[None].expand(B, -1, -1)
        ref = self.ref_logit.sigmoid()[None].expand(B, -1, -1)
        xc, refc = None, ref
        probes: dict[tuple[str, int, str], Any] | None = {} if probe else None
        o_out, c_out = [], []
        args = (mem, self.mpos, self.cells)
        for l, layer in enumerate(self.layers):
            pos = self.pos(ref)
            if probe:
                probes[("O", l, "in")] = (x, ref)
            x = layer.self_attn(x, pos)
            if probe:
                probes[("O", l, "sa")] = (x, ref)
            if c_decoder and l == 0:
                xc = x
            x = layer.cross_attn(x, pos, *args, ref)
            if probe:
                probes[("O", l, "ca")] = (x, ref)
            x = layer.ffn(x)
            logits, boxes = self.heads(l, x, ref)
            if probe:
                probes[("O", l, "ffn")] = (x, ref)
            o_out.append((logits, boxes))
            ref = boxes.detach()
            if c_decoder:
                posc = self.pos(refc)
                if probe:
                    probes[("C", l, "in")] = (xc, refc)
                xc = layer.cross_attn(xc, posc, *args, refc)
                if probe:
                    probes[("C", l, "ca")] = (xc, refc)
                xc = layer.ffn(xc)
                logits, boxes = self.heads(l, xc, refc)
                if probe:
                    probes[("C", l, "ffn")] = (xc, refc)
                c_out.append((logits, boxes))
                refc = boxes.detach()
        out = Output(torch.stack([o[0] for o in o_out]), torch.stack([o[1] for o in o_out]), probes=probes)
        if c_decoder:
            out.c_logits = torch.stack([c[0] for c in c_out])
            out.c_boxes = torch.stack([c[1] for c in c_out])
        return out
