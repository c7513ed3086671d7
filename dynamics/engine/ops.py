"""Batched building blocks: every tensor carries a leading replica axis R.

Parameters (R, ...) (per-layer ones sliced from (R, L, ...) stacks); activations (R, B, T, d); attention
maps (R, B, H, T, T).  Linear maps are one ``torch.baddbmm`` over the replica axis (replica r's
(B T, d_in) activations times its own (d_in, d_out) weight), so R small models run as one large
batched GEMM.

Blocks (``norm`` = placement of LayerNorm)::

    pre  (GPT-2, ViT):                 h <- h + Attn(LN1 h);   h <- h + MLP(LN2 h)
    post (Vaswani; nn.TransformerEncoderLayer):  h <- LN1(h + Attn h);   h <- LN2(h + MLP h)
    none:                              h <- h + Attn h;        h <- h + MLP h

Attn = W_O concat_h(E_h V_h), A_h = softmax(Q_h K_h^T / (sqrt(d_h) tau) [+ causal mask]) (``score='linear'``:
A_h = Q_h K_h^T / sqrt(d_h), causal entries 0) and E = A for
vanilla attention; the DeepViT variants (re-attention, BN-only, temperature, attention dropping) take
E from :mod:`dynamics.collapse.attention`.  MLP = W_2 act(W_1 x + b_1) + b_2, optional (hidden 0).
DETR's post-norm cross-attention decoder (self-attention, cross-attention with a box prior, FFN) is
built from these ops in :func:`dynamics.detr.train.replica_forward`, on the toy DETR's own parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from ..collapse import attention as variants
from .trainer import Record


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One self-attention block.  hidden: MLP width (0 = no MLP)."""

    width: int
    heads: int
    hidden: int = 0
    norm: Literal["pre", "post", "none"] = "pre"
    causal: bool = False
    attention: str = "vanilla"  # one of dynamics.collapse.attention.VARIANTS
    temperature: float = 1.0
    attn_drop: float = 0.0
    transform_scale: bool = False  # re-attention output times d_h^-1/2 (DeepViT's reatten_scale)
    act: Literal["gelu", "relu"] = "gelu"
    residual: bool = True
    dropout: float = 0.0  # training only: on attention weights, sublayer outputs and the MLP's hidden units
    # "linear": A = Q K^T / sqrt(d_h) without softmax (Levine et al. 2020's polynomial attention, Sec. 2)
    score: Literal["softmax", "linear"] = "softmax"

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.attention not in variants.VARIANTS:
            raise ValueError(f"unknown attention {self.attention!r}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (R, ..., d_in) @ w (R, d_in, d_out) [+ b (R, d_out)] as one batched matmul."""
    R, din = x.shape[0], x.shape[-1]
    x2 = x.reshape(R, -1, din)
    y = torch.bmm(x2, w) if b is None else torch.baddbmm(b.unsqueeze(1), x2, w)
    return y.view(*x.shape[:-1], w.shape[-1])


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-replica mean cross-entropy of the logits z = h w + b, computed a block (a few replicas x
    ``rows`` rows) at a time.

    Each block's logits (G, rows, V) stay in cache: the loss and, when gradients are needed, the
    gradients with respect to h, w and b are formed there (softmax(z) - onehot(y) times h or w), so the
    full (R, N, V) logits are never written to memory.  The gradients are computed in the forward pass
    (the loss is the end of the graph) and scaled by the upstream gradient (R,) in backward."""

    @staticmethod
    def forward(ctx, h, w, b, y, rows, group):
        R, N, _ = h.shape
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and b is not None
        loss = h.new_zeros(R)
        gh = torch.empty(h.shape, dtype=h.dtype, device=h.device) if need_h else None
        gw = torch.zeros(w.shape, dtype=w.dtype, device=w.device) if need_w else None
        gb = torch.zeros(b.shape, dtype=b.dtype, device=b.device) if need_b else None
        for g in range(0, R, group):
            rs = slice(g, g + group)
            for s in range(0, N, rows):
                _block(h[rs, s:s + rows], w[rs], None if b is None else b[rs], y[rs, s:s + rows].unsqueeze(2),
                       loss[rs], None if gh is None else gh[rs, s:s + rows], None if gw is None else gw[rs],
                       None if gb is None else gb[rs])
        ctx.N, ctx.has = N, (need_h, need_w, need_b)
        ctx.save_for_backward(*(t for t in (gh, gw, gb) if t is not None))
        return loss / N

    @staticmethod
    def backward(ctx, grad):
        saved = iter(ctx.saved_tensors)
        scale = grad / ctx.N
        out = [next(saved) * scale.view(-1, *[1] * (dims - 1)) if has else None
               for has, dims in zip(ctx.has, (3, 3, 2))]
        return out[0], out[1], out[2], None, None, None


def _block(hs, w, b, ys, loss, gh, gw, gb) -> None:
    """One block of :class:`_LinearCrossEntropy`: add its rows' losses to ``loss`` (G,), write d/dh into
    ``gh`` and add d/dw, d/db into ``gw``, ``gb`` (None: not needed)."""
    z = torch.bmm(hs, w) if b is None else torch.baddbmm(b.unsqueeze(1), hs, w)  # (G, rows, V)
    target = z.gather(2, ys)
    m = z.amax(2, keepdim=True)
    z.sub_(m).exp_()
    total = z.sum(2, keepdim=True)
    loss += total.log().add_(m).sub_(target).sum((1, 2))  # log sum exp z - z_y
    if gh is None and gw is None and gb is None:
        return
    z.div_(total).scatter_add_(2, ys, z.new_full(ys.shape, -1.0))  # d loss_row / d z = softmax - onehot
    if gh is not None:
        gh.copy_(torch.bmm(z, w.transpose(1, 2)))
    if gw is not None:
        gw.baddbmm_(hs.transpose(1, 2), z)
    if gb is not None:
        gb += z.sum(1)


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per replica (R,) of the logits h (R, N, d) @ w (R, d, V) [+ b (R, V)] against
    targets y (R, N): ``cross_entropy(linear(h, w, b), y)`` without materialising the (R, N, V) logits
    (an LM head's logits and their gradient are the largest tensors of a small LM's step).  Equal to the
    two-step form up to rounding (the sums run in a different order)."""
    if torch.is_autocast_enabled(h.device.type):
        z = linear(h, w, b)
        return F.cross_entropy(z.reshape(-1, z.shape[-1]).float(), y.reshape(-1), reduction="none").view(
            h.shape[0], -1).mean(1)
    # blocks of 256 rows x a few replicas, ~1.5M logits (6 MB in float32): measured best at V = 1000-2000
    rows = min(h.shape[1], 256)
    group = max(1, (3 << 19) // (rows * w.shape[-1]))
    return _LinearCrossEntropy.apply(h, w, b, y, rows, group)


def layer_norm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis with per-replica gain and bias g, b (R, d)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return torch.addcmul(b.view(shape), F.layer_norm(x, x.shape[-1:], eps=eps), g.view(shape))


def _act(x: torch.Tensor, act: str) -> torch.Tensor:
    return F.gelu(x) if act == "gelu" else F.relu(x)


def _drop(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p) if p else x


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(R, B, T, d) -> (R, B, H, T, d_h)."""
    R, B, T, d = x.shape
    return x.view(R, B, T, heads, d // heads).transpose(2, 3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(R, B, H, T, d_h) -> (R, B, T, H d_h)."""
    R, B, H, T, dh = x.shape
    return x.transpose(2, 3).reshape(R, B, T, H * dh)


def causal_mask(T: int, device) -> torch.Tensor:
    """True above the diagonal: key j > query i is masked."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def self_attention(w: dict, h: torch.Tensor, spec: BlockSpec, *, train: bool = True,
                   generator: torch.Generator | None = None, bn: tuple | None = None,
                   rec: Record | None = None, layer: int = 0) -> torch.Tensor:
    """Multi-head self-attention of h (R, B, T, d) with weights w[qkv_w] (R, d, 3d), w[proj_w] (R, d, d)
    and biases; bn = (running_mean, running_var) (R, H) for the BN variants."""
    R, B, T, _ = h.shape
    H, dh = spec.heads, spec.head_dim
    qkv = linear(h, w["qkv_w"], w["qkv_b"]).view(R, B, T, 3, H, dh).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (R, B, H, T, dh)
    p_drop = spec.dropout if train else 0.0
    plain = spec.score == "softmax" and (spec.attention in ("vanilla", "temperature")
                                         or (spec.attention == "drop" and not train))
    if plain and rec is None and h.is_cuda:
        # fused kernel when no map is needed (GPU); on CPU the explicit form is faster at these sizes
        out = F.scaled_dot_product_attention(q, k, v, is_causal=spec.causal, dropout_p=p_drop, scale=dh ** -0.5 / (
            spec.temperature if spec.attention == "temperature" else 1.0))
        return _drop(linear(merge_heads(out), w["proj_w"], w["proj_b"]), p_drop)
    tau = spec.temperature if spec.attention == "temperature" else 1.0
    scores = torch.matmul(q, k.transpose(-1, -2)) * (dh ** -0.5 / tau)
    if spec.causal:
        scores = scores.masked_fill(causal_mask(T, h.device), float("-inf") if spec.score == "softmax" else 0.0)
    A = torch.softmax(scores, dim=-1) if spec.score == "softmax" else scores
    E = variants.effective_maps(A, spec.attention, w, *(bn if spec.attention in variants.NORMALISES else (None, None)),
                                train, drop=spec.attn_drop, generator=generator,
                                transform_scale=spec.transform_scale, head_dim=dh)
    if rec is not None:
        rec.add("attention", layer, A)
        if E is not A:
            rec.add("effective", layer, E)
    E = _drop(E, p_drop)
    return _drop(linear(merge_heads(torch.matmul(E, v)), w["proj_w"], w["proj_b"]), p_drop)


def mlp(w: dict, h: torch.Tensor, act: str, dropout: float = 0.0) -> torch.Tensor:
    hidden = _drop(_act(linear(h, w["fc1_w"], w["fc1_b"]), act), dropout)
    return _drop(linear(hidden, w["fc2_w"], w["fc2_b"]), dropout)


def encoder_block(w: dict, h: torch.Tensor, spec: BlockSpec, *, train: bool = True,
                  generator: torch.Generator | None = None, bn: tuple | None = None,
                  rec: Record | None = None, layer: int = 0) -> torch.Tensor:
    """One block (pre-, post- or no LayerNorm; causal or not; MLP when spec.hidden > 0)."""
    kw = {"train": train, "generator": generator, "bn": bn, "rec": rec, "layer": layer}
    p_drop = spec.dropout if train else 0.0

    def add(x, y):
        return x + y if spec.residual else y

    if spec.norm == "pre":
        h = add(h, self_attention(w, layer_norm(h, w["ln1_g"], w["ln1_b"]), spec, **kw))
        if spec.hidden:
            h = add(h, mlp(w, layer_norm(h, w["ln2_g"], w["ln2_b"]), spec.act, p_drop))
    else:
        h = add(h, self_attention(w, h, spec, **kw))
        if spec.norm == "post":
            h = layer_norm(h, w["ln1_g"], w["ln1_b"])
        if rec is not None:
            rec.add("after_attention", layer, h)
        if spec.hidden:
            h = add(h, mlp(w, h, spec.act, p_drop))
            if spec.norm == "post":
                h = layer_norm(h, w["ln2_g"], w["ln2_b"])
    if rec is not None:
        rec.add("hidden", layer, h)
    return h


def block_shapes(spec: BlockSpec, depth: int) -> dict[str, tuple[tuple[int, ...], str, int]]:
    """name -> (shape (L, ...) without R, kind, fan_in); kind in w (matrix), b (bias), g (gain 1),
    conv (re-attention's Theta), bn_g, bn_b."""
    L, d, H, m = depth, spec.width, spec.heads, spec.hidden
    out = {"qkv_w": ((L, d, 3 * d), "w", d), "qkv_b": ((L, 3 * d), "b", d),
           "proj_w": ((L, d, d), "w", d), "proj_b": ((L, d), "b", d)}
    if spec.norm != "none":
        out.update({"ln1_g": ((L, d), "g", 0), "ln1_b": ((L, d), "z", 0)})
    if m:
        out.update({"fc1_w": ((L, d, m), "w", d), "fc1_b": ((L, m), "b", d),
                    "fc2_w": ((L, m, d), "w", m), "fc2_b": ((L, d), "b", m)})
        if spec.norm != "none":
            out.update({"ln2_g": ((L, d), "g", 0), "ln2_b": ((L, d), "z", 0)})
    if spec.attention in variants.MIXES_HEADS:
        out.update({"theta": ((L, H, H), "conv", H), "theta_b": ((L, H), "conv", H)})
    if spec.attention in variants.NORMALISES:
        out.update({"bn_g": ((L, H), "g", 0), "bn_b": ((L, H), "z", 0)})
    return out


PER_BLOCK = ("ln1_g", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_g", "ln2_b", "fc1_w", "fc1_b",
             "fc2_w", "fc2_b", "theta", "theta_b", "bn_g", "bn_b")


def per_layer(params, depth: int) -> list[dict[str, torch.Tensor]]:
    """Unbind the (R, L, ...) block stacks once per forward: unbind's backward is one stack, whereas
    indexing w[:, l] in the loop would scatter each block's gradient into a zero tensor of the stack."""
    parts = {n: params[n].unbind(1) for n in PER_BLOCK if n in params}
    return [{n: p[l] for n, p in parts.items()} for l in range(depth)]
