"""Replica-stacked encoder models built from :mod:`.ops` blocks: a ViT (patch input, class token,
classifier on it), a sequence classifier (token input, mean pooling) and a causal language model
(token input, untied or tied decoder).  Parameters are a :class:`ReplicaParams` (or any mapping
name -> (R, ...) tensor); per-block weights are stacked (R, L, ...).

Initialisations (per replica, each parameter from its own generator of the replica's seed):

* ``lecun``: matrices N(0, 1/fan_in), biases 0, embeddings N(0, 1) (dynamics.collapse.vit's default);
* ``torch``: PyTorch's module defaults: matrices and biases U(+-1/sqrt(fan_in)), embeddings and the
  LM decoder U(+-0.1), decoder bias 0 (the word-language-model init of dynamics.scan_snap.lm);
* ``gpt2``: matrices and embeddings N(0, 0.02^2), residual projections N(0, (0.02/sqrt(2L))^2), biases 0.

LayerNorms start at (1, 0); re-attention's Theta and bias U(+-1/sqrt(H)) (nn.Conv2d's default).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch

from . import ops
from .ops import BlockSpec
from .params import ParamSpec, ReplicaParams
from .trainer import Record


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    block: BlockSpec
    depth: int
    tokens: int  # positions incl. the class token
    vocab: int = 0  # > 0: token ids in
    patch_dim: int = 0  # > 0: patch vectors in
    cls: bool = False  # prepend a learned class token (ViT)
    pos: Literal["learned", "sinusoidal", "none"] = "learned"
    head: Literal["cls", "mean", "lm", "lm_tied"] = "cls"
    classes: int = 0
    final_norm: bool = True
    init: Literal["lecun", "torch", "gpt2"] = "lecun"

    def __post_init__(self) -> None:
        if (self.vocab > 0) == (self.patch_dim > 0):
            raise ValueError("exactly one of vocab and patch_dim must be positive")
        if self.head in ("lm", "lm_tied") and not self.vocab:
            raise ValueError("a language-model head needs token input")


def _param(kind: str, shape, fan_in: int, init: str, resid: bool, depth: int) -> ParamSpec:
    if kind == "w":
        if init == "torch":
            return ParamSpec(shape, "uniform", fan_in ** -0.5, True)
        if init == "gpt2":
            return ParamSpec(shape, "normal", 0.02 / math.sqrt(2 * depth) if resid else 0.02, True)
        return ParamSpec(shape, "normal", fan_in ** -0.5, True)
    if kind == "b":
        return ParamSpec(shape, "uniform", fan_in ** -0.5) if init == "torch" else ParamSpec(shape)
    if kind == "conv":
        return ParamSpec(shape, "uniform", fan_in ** -0.5, shape[-1] == shape[-2])  # Theta decays, its bias not
    if kind == "g":
        return ParamSpec(shape, "ones")
    if kind == "emb":
        if init == "torch":
            return ParamSpec(shape, "uniform", 0.1, True)
        return ParamSpec(shape, "normal", 0.02 if init == "gpt2" else 1.0, True)
    return ParamSpec(shape)


def param_specs(spec: EncoderSpec) -> dict[str, ParamSpec]:
    d, L, init = spec.block.width, spec.depth, spec.init
    raw: dict[str, tuple] = {}
    if spec.patch_dim:
        raw["embed_w"] = ((spec.patch_dim, d), "w", spec.patch_dim)
        raw["embed_b"] = ((d,), "b", spec.patch_dim)
    else:
        raw["tok"] = ((spec.vocab, d), "emb", 0)
    if spec.cls:
        raw["cls"] = ((1, d), "emb", 0)
    if spec.pos == "learned":
        raw["pos"] = ((spec.tokens, d), "emb", 0)
    raw.update(ops.block_shapes(spec.block, L))
    if spec.final_norm:
        raw["norm_g"], raw["norm_b"] = ((d,), "g", 0), ((d,), "z", 0)
    if spec.head in ("cls", "mean"):
        raw["head_w"], raw["head_b"] = ((d, spec.classes), "w", d), ((spec.classes,), "b", d)
    elif spec.head == "lm":
        raw["head_w"], raw["head_b"] = ((d, spec.vocab), "emb" if init == "torch" else "w", d), ((spec.vocab,), "z", d)
    out = {n: _param(kind, shape, fan, init, n in ("proj_w", "fc2_w"), L) for n, (shape, kind, fan) in raw.items()}
    if spec.pos == "learned" and init == "torch":
        out["pos"] = ParamSpec(out["pos"].shape, "zeros", decay=True)  # dynamics.scan_snap.lm's learned positions start at 0
    return out


def init(spec: EncoderSpec, seeds: list[np.random.SeedSequence], dtype=torch.float32, device="cpu") -> ReplicaParams:
    return ReplicaParams.init(param_specs(spec), seeds, dtype, device)


def bn_buffers(spec: EncoderSpec, replicas: int, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """Running statistics (R, L, H) of the BN attention variants (empty otherwise)."""
    from ..collapse import attention as variants

    if spec.block.attention not in variants.NORMALISES:
        return {}
    shape = (replicas, spec.depth, spec.block.heads)
    return {"bn_mean": torch.zeros(shape, dtype=dtype, device=device),
            "bn_var": torch.ones(shape, dtype=dtype, device=device)}


def sinusoidal(T: int, d: int, dtype, device) -> torch.Tensor:
    """Vaswani et al. 2017, Sec. 3.5 (shared with dynamics.scan_snap.lm)."""
    from ..scan_snap.lm import sinusoidal as table

    return table(T, d).to(dtype=dtype, device=device)


def embed_tokens(tok: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-replica embedding lookup: tok (R, V, d), ids (R, B, T) -> (R, B, T, d)."""
    R, B, T = ids.shape
    d = tok.shape[-1]
    return torch.gather(tok, 1, ids.reshape(R, B * T, 1).expand(R, B * T, d)).view(R, B, T, d)


def features(params, spec: EncoderSpec, x: torch.Tensor, *, train: bool = True, buffers: dict | None = None,
             generator: torch.Generator | None = None, rec: Record | None = None) -> torch.Tensor:
    """The states the head reads: (R, B, d) for "cls"/"mean" heads (class token or mean over tokens,
    after the final norm), (R, B, T, d) for LM heads.  Arguments as :func:`forward`."""
    p = params
    if spec.patch_dim:
        h = ops.linear(x, p["embed_w"], p["embed_b"])
    else:
        h = embed_tokens(p["tok"], x)
    R, B = h.shape[:2]
    if spec.cls:
        h = torch.cat([p["cls"].unsqueeze(1).expand(R, B, 1, h.shape[-1]), h], dim=2)
    T = h.shape[2]
    if spec.pos == "learned":
        h = h + p["pos"][:, None, :T]
    elif spec.pos == "sinusoidal":
        h = h + sinusoidal(T, h.shape[-1], h.dtype, h.device)
    if train and spec.block.dropout:
        h = torch.nn.functional.dropout(h, spec.block.dropout)
    if rec is not None:
        rec.add("hidden", -1, h)
    buffers = buffers or {}
    for l, w in enumerate(ops.per_layer(p, spec.depth)):
        bn = (buffers["bn_mean"][:, l], buffers["bn_var"][:, l]) if "bn_mean" in buffers else None
        h = ops.encoder_block(w, h, spec.block, train=train, generator=generator, bn=bn, rec=rec, layer=l)
    if spec.head == "cls":
        h = h[:, :, 0]
    elif spec.head == "mean" and not spec.final_norm:
        h = h.mean(2)
    if spec.final_norm:
        h = ops.layer_norm(h, p["norm_g"], p["norm_b"])
        if spec.head == "mean":
            h = h.mean(2)
    return h


def _head(params, spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output map (R, d, out) and bias (R, out) or None."""
    if spec.head == "lm_tied":
        return params["tok"].transpose(1, 2), None
    return params["head_w"], params["head_b"]


def forward(params, spec: EncoderSpec, x: torch.Tensor, *, train: bool = True, buffers: dict | None = None,
            generator: torch.Generator | None = None, rec: Record | None = None) -> torch.Tensor:
    """x: patches (R, B, n_patches, patch_dim) or ids (R, B, T).  Returns logits (R, B, classes) for
    "cls"/"mean" heads, (R, B, T, vocab) for LM heads."""
    h = features(params, spec, x, train=train, buffers=buffers, generator=generator, rec=rec)
    return ops.linear(h, *_head(params, spec))


def loss(params, spec: EncoderSpec, x: torch.Tensor, y: torch.Tensor, *, train: bool = True,
         buffers: dict | None = None, generator: torch.Generator | None = None,
         rec: Record | None = None) -> torch.Tensor:
    """Mean cross-entropy per replica (R,): ``cross_entropy(forward(...), y)`` with targets y (R, B)
    (classes) or (R, B, T) (next tokens).  LM heads go through :func:`ops.linear_cross_entropy`, which
    never materialises the (R, B, T, vocab) logits (same value up to rounding, less memory traffic)."""
    h = features(params, spec, x, train=train, buffers=buffers, generator=generator, rec=rec)
    w, b = _head(params, spec)
    if spec.head in ("lm", "lm_tied"):
        return ops.linear_cross_entropy(h.flatten(1, 2), w, b, y.reshape(y.shape[0], -1))
    return cross_entropy(ops.linear(h, w, b), y)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per replica: logits (R, ..., C), targets (R, ...) -> (R,)."""
    R = logits.shape[0]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                             reduction="none").view(R, -1).mean(1)


def flops_per_step(spec: EncoderSpec, batch: int, replicas: int) -> float:
    """Multiply-add FLOPs (x2) of forward + backward (x3) of the matmuls, all replicas."""
    d, m, L, T = spec.block.width, spec.block.hidden, spec.depth, spec.tokens
    n_in = spec.patch_dim if spec.patch_dim else 0
    out = spec.classes if spec.head in ("cls", "mean") else spec.vocab
    per_token = L * (4 * d * d + 2 * d * m + 2 * T * d) + n_in * d
    head_tokens = 1 if spec.head in ("cls", "mean") else T
    total = batch * (T * per_token + head_tokens * d * out)
    return 6.0 * total * replicas
