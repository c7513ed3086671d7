"""Training the toy DETR with and without the auxiliary C-decoder.

Loss per step = sum over layers of the O-decoder's one-to-one set loss, plus (``c_decoder``) the
C-decoder's one-to-many set loss (DAC-DETR: the two are added with equal weight).  The C-decoder's
one-to-many scores use the C-decoder's class logits and, by default, the O-decoder's boxes of the same
layer, as the official ``Stage2Assigner`` does (``pred_logits_cdecoder`` with ``pred_boxes``);
``assign_boxes="c"`` uses the C-decoder's own boxes.

Seeding: ``seed`` fixes the model init and the training-image stream, and nothing else; so the runs
with and without the C-decoder for one seed start from the same weights (the C-decoder adds no
parameters) and see the same images: their difference is the C-decoder alone (common random numbers).
AdamW (weight decay on every parameter, as ``torch.optim.AdamW(model.parameters())``) with linear
warmup and cosine decay; gradient-norm clipping 0.1 per model (DETR).

Several seeds train as replicas of one program (:mod:`dynamics.engine`): their ToyDETR parameters are
stacked (R, ...) in one flat buffer and :func:`replica_forward` runs the R models with batched matmuls;
each replica's set losses (Hungarian matching per image) are its own.  A replica whose loss or
gradient turns non-finite is frozen alone at that step (``diverged_step``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import field
from ..engine import (
    FusedAdamW,
    Precision,
    ReplicaParams,
    Schedule,
    Trainer,
    lr_table,
    ops,
)
from . import assign, losses, scenes
from .model import ModelSpec, Output, ToyDETR, inverse_sigmoid, sine_embed


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    steps: int = field(2000, "training steps (the cosine schedule ends here)")
    batch: int = field(32, "images per step")
    lr: float = field(2e-3, "AdamW peak learning rate")
    weight_decay: float = field(1e-4, "AdamW weight decay")
    warmup: int = field(100, "linear warmup steps")
    clip: float = field(0.1, "gradient-norm clip")
    c_decoder: bool = field(False, "train the auxiliary C-decoder (no self-attention, one-to-many) too")
    assign_boxes: Literal["o", "c"] = field("o", "one-to-many IoU from O-decoder boxes (official) or C-decoder boxes")
    pos_threshold: float = field(0.4, "one-to-many: positive when iou_weight IoU + (1 - iou_weight) p >= this")
    max_pos: int = field(6, "one-to-many: at most this many positives per object")
    iou_weight: float = field(0.7, "one-to-many score: weight of IoU (1 - it weights the class probability)")
    cls_loss: Literal["focal", "ia-bce"] = field("focal", "classification loss: focal (Deformable DETR's) or ia-bce "
                                                 "(the released IoU-aware BCE)")
    device: str = field("cpu", "torch device")


def seeds_for(seed: int) -> tuple[int, int]:
    """(init seed, data seed) from one root seed."""
    a, b = np.random.SeedSequence(seed).generate_state(2)
    return int(a), int(b)


def build_model(spec: ModelSpec, seed: int, device: str = "cpu") -> ToyDETR:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds_for(seed)[0])
        model = ToyDETR(spec)
    return model.to(device)


def loss_terms(out: Output, sc: scenes.Scenes, opts: TrainOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(O-decoder loss, C-decoder loss or 0) summed over layers, for one model's output."""
    one = Output(out.o_logits[None], out.o_boxes[None], None if out.c_logits is None else out.c_logits[None],
                 None if out.c_boxes is None else out.c_boxes[None])
    stacked = scenes.Scenes(sc.boxes[None], sc.labels[None], sc.valid[None])
    o, c = replica_loss_terms(one, stacked, opts, [opts.cls_loss])
    return o[0], c[0]


def replica_loss_terms(out: Output, sc: scenes.Scenes, opts: TrainOptions,
                       cls_losses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-replica (O loss, C loss) (R,) each, every replica's layers and images in one call.

    out: logits (R, L, B, Q, C), boxes (R, L, B, Q, 4); sc: replica r's scenes, tensors (R, B, G, ...);
    cls_losses[r]: replica r's classification loss.  Each replica's sum over layers and images is
    divided by its number of objects (Deformable DETR's ``num_boxes``)."""
    R, L, B, Q, _ = out.o_logits.shape
    G = sc.valid.shape[-1]
    gt = scenes.Scenes(sc.boxes[:, None].expand(R, L, B, G, 4), sc.labels[:, None].expand(R, L, B, G),
                       sc.valid[:, None].expand(R, L, B, G))
    n_obj = sc.valid.sum((1, 2)).clamp(min=1).to(out.o_logits.dtype)

    def flat(t):
        return t.reshape(-1, *t.shape[3:])

    def per_replica(logits, boxes, pos):
        total = torch.zeros(R, dtype=logits.dtype, device=logits.device)
        for kind in dict.fromkeys(cls_losses):
            idx = torch.tensor([r for r, k in enumerate(cls_losses) if k == kind], device=logits.device)
            part = scenes.Scenes(flat(gt.boxes[idx]), flat(gt.labels[idx]), flat(gt.valid[idx]))
            per_image = losses.set_loss_per_image(flat(logits[idx]), flat(boxes[idx]), part, flat(pos[idx]), kind)
            total = total.index_add(0, idx, per_image.view(len(idx), -1).sum(1))
        return total / n_obj

    with torch.no_grad():
        cost = assign.hungarian_cost(out.o_logits, out.o_boxes, gt.boxes, gt.labels)  # (R, L, B, Q, G)
        pos_o = losses.match_to_mask(assign.hungarian(cost, gt.valid), Q)
    o = per_replica(out.o_logits, out.o_boxes, pos_o)
    if out.c_logits is None:
        return o, torch.zeros_like(o)
    with torch.no_grad():
        boxes = out.o_boxes if opts.assign_boxes == "o" else out.c_boxes
        score = assign.matching_score(out.c_logits, boxes, gt.boxes, gt.labels, opts.iou_weight)
        pos_c = assign.one_to_many(score, gt.valid, opts.pos_threshold, opts.max_pos)
    return o, per_replica(out.c_logits, out.c_boxes, pos_c)


def schedule(opts: TrainOptions) -> Schedule:
    return Schedule(opts.steps, warmup=opts.warmup)


def _lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """nn.Linear per replica: w (R, out, in), b (R, out)."""
    return ops.linear(x, w.transpose(1, 2), b)


def _mlp(p, prefix: str, x: torch.Tensor, n: int) -> torch.Tensor:
    """The MLP of dynamics.detr.model (Linear, ReLU, ..., Linear) with ``n`` linear layers."""
    for i in range(n):
        x = _lin(x, p[f"{prefix}.{2 * i}.weight"], p[f"{prefix}.{2 * i}.bias"])
        if i < n - 1:
            x = torch.relu(x)
    return x


def _norm(p, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return ops.layer_norm(x, p[prefix + ".weight"], p[prefix + ".bias"])


def replica_forward(p, spec: ModelSpec, images: torch.Tensor, cells: torch.Tensor, mpos: torch.Tensor,
                    c_decoder: bool = False) -> Output:
    """:meth:`ToyDETR.forward` of R replicas at once: parameters p[name] (R, ...) named as ToyDETR's,
    images (R, B, C+1, S, S).  Returns logits (R, L, B, Q, C) and boxes (R, L, B, Q, 4)."""
    R, B = images.shape[:2]
    d, g, P, H = spec.d, spec.grid, spec.patch, spec.heads
    dh = d // H
    # stem: the stride-P patch conv is a linear map of each patch, the depthwise conv one grouped conv
    patches = images.unflatten(3, (g, P)).unflatten(5, (g, P)).permute(0, 1, 3, 5, 2, 4, 6).flatten(4).flatten(2, 3)
    h = torch.relu(_lin(patches, p["stem.0.weight"].flatten(2), p["stem.0.bias"]))  # (R, B, N, d)
    h = h.permute(1, 0, 3, 2).reshape(B, R * d, g, g)
    h = F.conv2d(h, p["stem.2.weight"].reshape(R * d, 1, 3, 3), p["stem.2.bias"].reshape(R * d), padding=1,
                 groups=R * d)
    h = torch.relu(h).view(B, R, d, g * g).permute(1, 0, 3, 2)
    mem = _lin(h, p["stem.4.weight"].flatten(2), p["stem.4.bias"])  # (R, B, N, d)
    x = p["content.weight"][:, None].expand(R, B, -1, -1)
    ref = p["ref_logit"].sigmoid()[:, None].expand(R, B, -1, -1)
    xc, refc = None, ref
    mem_k = mem + mpos

    def heads(l, x, ref):
        logits = _lin(x, p[f"class_heads.{l}.weight"], p[f"class_heads.{l}.bias"])
        return logits, (inverse_sigmoid(ref) + _mlp(p, f"box_heads.{l}", x, 3)).sigmoid()

    def split(t):  # (R, B, T, d) -> (R, B, H, T, dh)
        return t.unflatten(-1, (H, dh)).transpose(2, 3)

    def attend(q, k, v, bias=None):
        logits = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if bias is not None:
            logits = logits + bias
        return ops.merge_heads(logits.softmax(-1) @ v)

    def cross(l, x, pos, ref):
        pre = f"layers.{l}.ca."
        q = split(_lin(x + pos, p[pre + "q.weight"], p[pre + "q.bias"]))
        k = split(_lin(mem_k, p[pre + "k.weight"], p[pre + "k.bias"]))
        v = split(_lin(mem, p[pre + "v.weight"], p[pre + "v.bias"]))
        off = (cells - ref[..., None, :2]) / ref[..., None, 2:].clamp(min=1e-3)  # (R, B, Q, N, 2)
        dist2 = off.pow(2).sum(-1)[:, :, None]  # (R, B, 1, Q, N)
        prior = -dist2 / (2 * torch.exp(2 * p[pre + "log_sigma"]))[:, None, :, None, None]
        out = _lin(attend(q, k, v, prior), p[pre + "o.weight"], p[pre + "o.bias"])
        return _norm(p, f"layers.{l}.norm1", x + out)

    def ffn(l, x):
        pre = f"layers.{l}."
        y = _lin(torch.relu(_lin(x, p[pre + "lin1.weight"], p[pre + "lin1.bias"])), p[pre + "lin2.weight"],
                 p[pre + "lin2.bias"])
        return _norm(p, pre + "norm3", x + y)

    o_out, c_out = [], []
    for l in range(spec.layers):
        pos = _mlp(p, "pos_head", sine_embed(ref, d), 2)
        pre = f"layers.{l}.sa."
        w_in, b_in = p[pre + "in_proj_weight"], p[pre + "in_proj_bias"]  # (R, 3d, d), (R, 3d)
        qk = x + pos
        q = split(_lin(qk, w_in[:, :d], b_in[:, :d]))
        k = split(_lin(qk, w_in[:, d:2 * d], b_in[:, d:2 * d]))
        v = split(_lin(x, w_in[:, 2 * d:], b_in[:, 2 * d:]))
        sa = _lin(attend(q, k, v), p[pre + "out_proj.weight"], p[pre + "out_proj.bias"])
        x = _norm(p, f"layers.{l}.norm2", x + sa)
        if c_decoder and l == 0:
            xc = x
        x = ffn(l, cross(l, x, pos, ref))
        logits, boxes = heads(l, x, ref)
        o_out.append((logits, boxes))
        ref = boxes.detach()
        if c_decoder:
            posc = _mlp(p, "pos_head", sine_embed(refc, d), 2)
            xc = ffn(l, cross(l, xc, posc, refc))
            logits, boxes = heads(l, xc, refc)
            c_out.append((logits, boxes))
            refc = boxes.detach()
    out = Output(torch.stack([o[0] for o in o_out], 1), torch.stack([o[1] for o in o_out], 1))
    if c_decoder:
        out.c_logits = torch.stack([c[0] for c in c_out], 1)
        out.c_boxes = torch.stack([c[1] for c in c_out], 1)
    return out


@torch.no_grad()
def _load(model: ToyDETR, params: ReplicaParams, r: int) -> None:
    for n, t in model.named_parameters():
        t.copy_(params[n][r])


def train_replicas(models: list[ToyDETR], scene_spec: scenes.SceneSpec, opts: TrainOptions, seeds: list[int],
                   callback: Callable[[int, int, ToyDETR], None] | None = None, every: int | tuple[int, ...] = 0,
                   bar: Callable | None = None, lrs: list[float] | None = None,
                   cls_losses: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Train the models (one per replica, same spec) in place as replicas of one program; returns each
    one's per-step O and C losses and ``diverged_step``.

    seeds[r] fixes replica r's image stream (replicas with one seed see the same images: the images
    are drawn and rendered once per seed); lrs[r] (default opts.lr) is its peak learning rate and
    cls_losses[r] (default opts.cls_loss) its classification loss, so a learning-rate bracket and both
    losses train as one program.  ``callback(step, r, model)`` runs for replica r at step 0, at every
    step in ``every`` (an int: its multiples) and at the end while r has not diverged, under
    ``torch.no_grad`` in eval mode, with model r holding its current weights (step 0 only when
    ``every`` is an int or lists 0)."""
    device = torch.device(opts.device)
    spec, R = models[0].spec, len(models)
    lrs = [opts.lr] * R if lrs is None else list(lrs)
    cls_losses = [opts.cls_loss] * R if cls_losses is None else list(cls_losses)
    named = [dict(m.named_parameters()) for m in models]
    params = ReplicaParams.from_tensors({n: torch.stack([p[n].detach() for p in named]).to(device) for n in named[0]},
                                        lambda n, t: True)
    trainer = Trainer(params, FusedAdamW(params, weight_decay=opts.weight_decay),
                      lr_table(lrs, schedule(opts), opts.steps, params.data.dtype, device),
                      clip=opts.clip, precision=Precision(opts.device))
    unique = list(dict.fromkeys(seeds))
    gens = {s: torch.Generator().manual_seed(seeds_for(s)[1]) for s in unique}
    which = torch.tensor([unique.index(s) for s in seeds], device=device)
    cells, mpos = models[0].cells.to(device), models[0].mpos.to(device)
    log_o = np.full((opts.steps, R), np.nan)
    log_c = np.full((opts.steps, R), np.nan)
    marks = set(range(every, opts.steps, every)) if isinstance(every, int) and every else set(every or ())

    def checkpoint(step):
        if callback is None:
            return
        alive = np.flatnonzero(trainer.diverged < 0)
        for r in alive:
            m = models[r]
            _load(m, params, r)
            m.eval()
            with torch.no_grad():
                callback(step, int(r), m)
            m.train()

    if 0 in marks or isinstance(every, int):
        checkpoint(0)
    pbar = bar(opts.steps, "train O+C" if opts.c_decoder else "train O") if bar else None
    for step in range(opts.steps):
        drawn = [scenes.sample(opts.batch, scene_spec, gens[s]).to(device) for s in unique]
        sc = scenes.Scenes(torch.stack([d.boxes for d in drawn])[which], torch.stack([d.labels for d in drawn])[which],
                           torch.stack([d.valid for d in drawn])[which])
        images = torch.stack([scenes.render(d, scene_spec) for d in drawn])[which]
        terms = []

        def loss_fn(t, rec, sc=sc, images=images, terms=terms):
            out = replica_forward(params, spec, images, cells, mpos, opts.c_decoder)
            o, c = replica_loss_terms(out, sc, opts, cls_losses)
            terms.append((o.detach(), c.detach()))
            return o + c

        trainer.step(loss_fn)
        alive = trainer.active.cpu().numpy()
        log_o[step] = np.where(alive, terms[0][0].cpu().numpy(), np.nan)
        log_c[step] = np.where(alive, terms[0][1].cpu().numpy(), np.nan)
        if pbar is not None:
            pbar.update(1)
        if step + 1 in marks:
            checkpoint(step + 1)
    if pbar is not None:
        pbar.close()
    checkpoint(opts.steps)
    for r, m in enumerate(models):
        _load(m, params, r)
    div = trainer.diverged
    return [{"loss_o": log_o[:, r], "loss_c": log_c[:, r], "diverged_step": np.array(div[r])} for r in range(R)]


def train(model: ToyDETR, scene_spec: scenes.SceneSpec, opts: TrainOptions, seed: int,
          callback: Callable[[int, ToyDETR], None] | None = None, every: int = 0,
          bar: Callable | None = None) -> dict[str, np.ndarray]:
    """One model: :func:`train_replicas` with R = 1 (``callback(step, model)``)."""
    cb = None if callback is None else (lambda step, r, m: callback(step, m))
    return train_replicas([model], scene_spec, opts, [seed], cb, every, bar)[0]
