"""A pre-LN vision transformer, batched along a leading run axis so several seeds train as one program.

Per block (Dosovitskiy et al. 2021; DeepViT's official ``Block`` with ``scale_adjustment = 1``)::

    x <- x + proj(Attn(LN1(x)) V)          Attn = one of attention.VARIANTS, per head
    x <- x + fc2(GELU(fc1(LN2(x))))

Tokens: a learned class token, then one linear patch embedding per p x p patch, plus learned position
embeddings; the head reads the class token after a final LayerNorm.  Every tensor has a leading run
axis R: parameters (R, ...), activations (R, B, T, d), maps (R, B, H, T, T).  Per-block weights are
stacked on an L axis, (R, L, ...), so the optimiser sees a handful of tensors.

Initialisation ("lecun", default): linear weights N(0, 1/fan_in), biases 0, LayerNorm (1, 0), class
token and position embeddings N(0, 1).  Query-key logits are then O(1) at init, so the random-init
maps are not trivially uniform.  "timm" uses the ViT/DeiT init (weights and embeddings N(0, 0.02^2),
truncated at 2 std), under which every random-init map is almost exactly uniform.  Re-attention's
Theta and bias follow ``nn.Conv2d``'s default (U(+-1/sqrt(H))), BN starts at gamma = 1, beta = 0 and
running statistics (0, 1), as in the official code.

Every parameter is drawn from its own generator seeded by (root seed, seed index, parameter name), so
two variants with the same seed share all common weights (paired comparisons), and a run's init does
not depend on which other runs share its batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import field, require
from ..engine.ops import linear
from . import attention as attn

PER_BLOCK = ("ln1_g", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_g", "ln2_b", "fc1_w", "fc1_b",
             "fc2_w", "fc2_b", "theta", "theta_b", "bn_g", "bn_b")  # parameters stacked as (R, L, ...)
Variant = Literal["vanilla", "reattn", "reattn-nonorm", "bn-only", "temperature", "drop"]


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    """Architecture. ``n_patches`` and ``patch_dim`` come from the data (see :func:`spec_for`)."""

    depth: int = dataclasses.field(metadata={"help": "transformer blocks L"})
    width: int = dataclasses.field(metadata={"help": "embedding width d"})
    heads: int = dataclasses.field(metadata={"help": "attention heads (d_h = width / heads)"})
    n_patches: int = dataclasses.field(metadata={"help": "patch tokens per image (from the data)"})
    patch_dim: int = dataclasses.field(metadata={"help": "pixels per patch x channels (from the data)"})
    n_classes: int = dataclasses.field(metadata={"help": "classes (from the data)"})
    mlp_ratio: float = field(2.0, "MLP hidden width / d (official DeepViT: 3)")
    attention: Variant = field("vanilla", "attention variant (dynamics.collapse.attention.VARIANTS)")
    temperature: float = field(0.5, "softmax temperature of the 'temperature' variant (< 1 sharpens)")
    attn_drop: float = field(0.3, "entry drop rate of the 'drop' variant")
    transform_scale: bool = field(False, "re-attention output times d_h^-1/2 (official reatten_scale), else 1")
    init: Literal["lecun", "timm"] = field("lecun", "weights N(0,1/fan_in) and embeddings N(0,1), or ViT's "
                                                    "N(0,0.02^2)")

    def __post_init__(self) -> None:
        check_shape(self.width, self.heads, self.depth)
        require(self.attention in attn.VARIANTS, f"unknown attention {self.attention!r}")
        require(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        require(0 <= self.attn_drop < 1, f"attn_drop must be in [0, 1), got {self.attn_drop}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def tokens(self) -> int:
        return self.n_patches + 1

    @property
    def hidden(self) -> int:
        return max(1, int(round(self.width * self.mlp_ratio)))

    def forward_flops(self) -> int:
        """Multiply-add FLOPs (2 per multiply-add) of the matrix products in one image's forward pass:
        patch embedding 2 n_p P d; per block qkv 2 T d 3d, scores and their product with V 2 x 2 H T^2 d_h,
        output projection 2 T d^2, MLP 2 x 2 T d m; classifier 2 d C on the class token.  Elementwise
        work (softmax, norms, GELU, re-attention's head mixing) is not counted: this is the work a GEMM
        does, the yardstick for a GEMM peak.  A training step costs about three times this per image."""
        T, d, m, H, dh = self.tokens, self.width, self.hidden, self.heads, self.head_dim
        block = 2 * T * d * 3 * d + 2 * 2 * H * T * T * dh + 2 * T * d * d + 2 * 2 * T * d * m
        return 2 * self.n_patches * self.patch_dim * d + self.depth * block + 2 * d * self.n_classes


def check_shape(width: int, heads: int, depth: int) -> None:
    """Impossible shapes are user errors (exit 2), raised before anything runs."""
    require(depth >= 1, f"depth must be at least 1, got {depth}")
    require(heads >= 1, f"heads must be at least 1, got {heads}")
    require(width >= 1 and width % heads == 0,
            f"width {width} is not divisible by heads {heads}")


def check_patch(image_size: int, patch: int) -> None:
    require(patch >= 1 and image_size % patch == 0,
            f"patch size {patch} does not divide the image size {image_size}")


def _generator(root_seed: int, seed: int, name: str) -> torch.Generator:
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    state = np.random.SeedSequence([root_seed, seed, tag]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _shapes(spec: ViTSpec) -> dict[str, tuple[tuple[int, ...], str, float]]:
    """name -> (shape without R, kind, fan_in) for every parameter."""
    L, d, H, m, P, C, T = spec.depth, spec.width, spec.heads, spec.hidden, spec.patch_dim, spec.n_classes, spec.tokens
    shapes = {
        "embed_w": ((P, d), "w", P), "embed_b": ((d,), "zero", 0), "cls": ((1, d), "emb", 0),
        "pos": ((T, d), "emb", 0),
        "ln1_g": ((L, d), "one", 0), "ln1_b": ((L, d), "zero", 0),
        "qkv_w": ((L, d, 3 * d), "w", d), "qkv_b": ((L, 3 * d), "zero", 0),
        "proj_w": ((L, d, d), "w", d), "proj_b": ((L, d), "zero", 0),
        "ln2_g": ((L, d), "one", 0), "ln2_b": ((L, d), "zero", 0),
        "fc1_w": ((L, d, m), "w", d), "fc1_b": ((L, m), "zero", 0),
        "fc2_w": ((L, m, d), "w", m), "fc2_b": ((L, d), "zero", 0),
        "norm_g": ((d,), "one", 0), "norm_b": ((d,), "zero", 0),
        "head_w": ((d, C), "w", d), "head_b": ((C,), "zero", 0),
    }
    if spec.attention in attn.MIXES_HEADS:
        shapes["theta"] = ((L, H, H), "conv", H)
        shapes["theta_b"] = ((L, H), "conv", H)
    if spec.attention in attn.NORMALISES:
        shapes["bn_g"] = ((L, H), "one", 0)
        shapes["bn_b"] = ((L, H), "zero", 0)
    return shapes


def init_params(spec: ViTSpec, seeds: list[int], root_seed: int = 0, dtype=torch.float32,
                device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters (leaf tensors requiring grad) and BN buffers for runs with seed indices ``seeds``."""
    params = {}
    for name, (shape, kind, fan_in) in _shapes(spec).items():
        per_run = []
        for s in seeds:
            g = _generator(root_seed, s, name)
            if kind == "w":
                std = 0.02 if spec.init == "timm" else fan_in ** -0.5
                t = torch.randn(shape, generator=g, dtype=torch.float64) * std
                if spec.init == "timm":
                    t = t.clamp(-2 * std, 2 * std)
            elif kind == "emb":
                std = 0.02 if spec.init == "timm" else 1.0
                t = torch.randn(shape, generator=g, dtype=torch.float64) * std
            elif kind == "conv":  # nn.Conv2d default: kaiming_uniform(a=sqrt 5) -> U(+-1/sqrt(fan_in))
                t = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) / math.sqrt(fan_in)
            elif kind == "one":
                t = torch.ones(shape, dtype=torch.float64)
            else:
                t = torch.zeros(shape, dtype=torch.float64)
            per_run.append(t)
        params[name] = torch.stack(per_run).to(device=device, dtype=dtype).requires_grad_(True)
    buffers = {}
    if spec.attention in attn.NORMALISES:
        R, L, H = len(seeds), spec.depth, spec.heads
        buffers["bn_mean"] = torch.zeros(R, L, H, dtype=dtype, device=device)
        buffers["bn_var"] = torch.ones(R, L, H, dtype=dtype, device=device)
    return params, buffers


def decayed(name: str) -> bool:
    """Weight decay applies to weight matrices only (not biases, norms, embeddings, BN, Theta's bias)."""
    return name.endswith("_w") or name == "theta"


@dataclasses.dataclass
class Record:
    """What a recording forward pass keeps (detached): per block l = 1..L."""

    softmax: list[torch.Tensor]  # (R, B, H, T, T) softmax maps before any transform
    effective: list[torch.Tensor]  # (R, B, H, T, T) the maps that multiply V
    hidden: list[torch.Tensor]  # L + 1 residual streams (R, B, T, d): embedding, then after each block


def _layer_norm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:]) * g.view(shape) + b.view(shape)


def forward(params: dict, buffers: dict, spec: ViTSpec, x: torch.Tensor, train: bool,
            generator: torch.Generator | None = None, record: bool = False) -> tuple[torch.Tensor, Record | None]:
    """Logits (R, B, n_classes) for patch inputs x (R, B, n_patches, patch_dim).

    ``train`` selects BN batch statistics (updating the running ones) and attention dropping.
    """
    p = params
    R, B = x.shape[:2]
    H, dh, T = spec.heads, spec.head_dim, spec.tokens
    h = linear(x, p["embed_w"], p["embed_b"])
    h = torch.cat([p["cls"].unsqueeze(1).expand(R, B, 1, spec.width), h], dim=2) + p["pos"].unsqueeze(1)
    rec = Record([], [], [h.detach()]) if record else None
    # Unbind the stacked per-block weights once: the backward of unbind is one stack, whereas indexing
    # w[:, l] in the loop would scatter each block's gradient into a zero tensor of the whole stack.
    blk = {name: t.unbind(1) for name, t in p.items() if name in PER_BLOCK}
    for l in range(spec.depth):
        w = {name: parts[l] for name, parts in blk.items()}
        z = _layer_norm(h, w["ln1_g"], w["ln1_b"])
        qkv = linear(z, w["qkv_w"], w["qkv_b"]).view(R, B, T, 3, H, dh).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (R, B, H, T, dh)
        tau = spec.temperature if spec.attention == "temperature" else 1.0
        A = attn.softmax_maps(q, k, tau)
        normalised = spec.attention in attn.NORMALISES
        E = attn.effective_maps(A, spec.attention, w, buffers["bn_mean"][:, l] if normalised else None,
                                buffers["bn_var"][:, l] if normalised else None, train, drop=spec.attn_drop,
                                generator=generator, transform_scale=spec.transform_scale, head_dim=dh)
        out = torch.matmul(E, v).transpose(2, 3).reshape(R, B, T, spec.width)
        h = h + linear(out, w["proj_w"], w["proj_b"])
        z = _layer_norm(h, w["ln2_g"], w["ln2_b"])
        h = h + linear(F.gelu(linear(z, w["fc1_w"], w["fc1_b"])), w["fc2_w"], w["fc2_b"])
        if rec is not None:
            rec.softmax.append(A.detach())
            rec.effective.append(E.detach())
            rec.hidden.append(h.detach())
    z = _layer_norm(h[:, :, 0], p["norm_g"], p["norm_b"])
    return linear(z, p["head_w"], p["head_b"]), rec


@torch.no_grad()
def probe(params: dict, buffers: dict, spec: ViTSpec, x: torch.Tensor, train: bool,
          generator: torch.Generator | None = None) -> Record:
    """A recording forward pass on the same images x (B, n_patches, patch_dim) for every run.

    ``train=True`` uses BN batch statistics and attention dropping (the random-init analysis: an
    untrained BN's running statistics are the identity); ``train=False`` is the deployed model.
    BN running statistics are restored afterwards, so probing never changes the model.
    """
    saved = {k: v.clone() for k, v in buffers.items()}
    R = next(iter(params.values())).shape[0]
    _, rec = forward(params, buffers, spec, x.unsqueeze(0).expand(R, -1, -1, -1), train=train,
                     generator=generator, record=True)
    for k, v in saved.items():
        buffers[k].copy_(v)
    return rec
