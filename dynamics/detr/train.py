"""Training the toy DETR with and without the auxiliary C-decoder.

Loss per step = sum over layers of the O-decoder's one-to-one set loss, plus (``c_decoder``) the
C-decoder's one-to-many set loss (DAC-DETR: the two are added with equal weight).  The C-decoder's
one-to-many scores use the C-decoder's class logits and, by default, the O-decoder's boxes of the same
layer, as the official ``Stage2Assigner`` does (``pred_logits_cdecoder`` with ``pred_boxes``);
``assign_boxes="c"`` uses the C-decoder's own boxes.

Seeding: ``seed`` fixes the model init and the training-image stream, and nothing else; so the runs
with and without the C-decoder for one seed start from the same weights (the C-decoder adds no
parameters) and see the same images: their difference is the C-decoder alone (common random numbers).
AdamW with linear warmup and cosine decay; gradient-norm clipping 0.1 (DETR).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal

import numpy as np
import torch

from . import assign, losses, scenes
from .model import ModelSpec, Output, ToyDETR


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    clip: float = 0.1
    c_decoder: bool = False
    assign_boxes: Literal["o", "c"] = "o"
    pos_threshold: float = 0.4
    max_pos: int = 6
    iou_weight: float = 0.7
    cls_loss: Literal["focal", "ia-bce"] = "focal"
    device: str = "cpu"


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
    """(O-decoder loss, C-decoder loss or 0) summed over layers."""
    L, B, Q, _ = out.o_logits.shape
    with torch.no_grad():
        cost = assign.hungarian_cost(out.o_logits, out.o_boxes, sc.boxes, sc.labels)  # (L, B, Q, G)
        match = assign.hungarian(cost, sc.valid.expand(L, -1, -1))
    o = sum(losses.set_loss(out.o_logits[l], out.o_boxes[l], sc, losses.match_to_mask(match[l], Q), opts.cls_loss)
            for l in range(L))
    if out.c_logits is None:
        return o, torch.zeros((), device=o.device)
    with torch.no_grad():
        boxes = out.o_boxes if opts.assign_boxes == "o" else out.c_boxes
        score = assign.matching_score(out.c_logits, boxes, sc.boxes, sc.labels, opts.iou_weight)
        pos = assign.one_to_many(score, sc.valid, opts.pos_threshold, opts.max_pos)
    c = sum(losses.set_loss(out.c_logits[l], out.c_boxes[l], sc, pos[l], opts.cls_loss) for l in range(L))
    return o, c


def lr_at(step: int, opts: TrainOptions) -> float:
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    frac = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    return opts.lr * 0.5 * (1 + math.cos(math.pi * frac))


def train(model: ToyDETR, scene_spec: scenes.SceneSpec, opts: TrainOptions, seed: int,
          callback: Callable[[int, ToyDETR], None] | None = None, every: int = 0,
          bar: Callable | None = None) -> dict[str, np.ndarray]:
    """Train ``model`` in place for ``opts.steps`` steps; returns per-step O and C losses.

    ``callback(step, model)`` runs at step 0 and every ``every`` steps (and at the end) for
    learning curves; it runs under ``torch.no_grad`` in eval mode.  A non-finite loss stops training
    and is reported in the log as ``diverged_step``.
    """
    device = torch.device(opts.device)
    gen = torch.Generator().manual_seed(seeds_for(seed)[1])
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    log_o = np.full(opts.steps, np.nan)
    log_c = np.full(opts.steps, np.nan)
    diverged = -1

    def checkpoint(step):
        if callback is not None:
            model.eval()
            with torch.no_grad():
                callback(step, model)
            model.train()

    checkpoint(0)
    pbar = bar(opts.steps, "train O+C" if opts.c_decoder else "train O") if bar else None
    for step in range(opts.steps):
        sc = scenes.sample(opts.batch, scene_spec, gen).to(device)
        images = scenes.render(sc, scene_spec)
        out = model(images, c_decoder=opts.c_decoder)
        o, c = loss_terms(out, sc, opts)
        loss = o + c
        if not torch.isfinite(loss):
            diverged = step
            break
        for g in optim.param_groups:
            g["lr"] = lr_at(step, opts)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip)
        optim.step()
        log_o[step], log_c[step] = float(o.detach()), float(c.detach())
        if pbar is not None:
            pbar.update(1)
        if every and (step + 1) % every == 0 and step + 1 < opts.steps:
            checkpoint(step + 1)
    if pbar is not None:
        pbar.close()
    if diverged < 0:
        checkpoint(opts.steps)
    return {"loss_o": log_o, "loss_c": log_c, "diverged_step": np.array(diverged)}
