"""Set losses for both decoders: sigmoid focal classification (Lin et al. 2017), L1 and GIoU box terms.

Weights follow Deformable DETR / DAC-DETR configs: 2 (class), 5 (L1), 2 (GIoU), summed over decoder
layers (auxiliary losses), normalised by the number of objects in the batch.  The O-decoder's targets
come from one-to-one matching ``match`` (B, G); the C-decoder's from the one-to-many mask
``pos`` (B, Q, G).

Classification, the same for both decoders:

- ``"focal"`` (default; Deformable DETR): hard target 1 for every positive (query, class).
- ``"ia-bce"`` (the released DAC-DETR code, ``models/segmentation.py: IA_BCE_loss``, from Align-DETR):
  soft target t = p^0.25 IoU^0.75 (detached, >= 0.01) times a rank weight exp(-rank / 1.5), rank of
  the positive among its object's positives ordered by t (always 0 under one-to-one matching);
  loss = -t log p - (1 - t) log(1 - p) on positives and -p^2 log(1 - p) on negatives.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .assign import FOCAL_ALPHA, FOCAL_GAMMA
from .boxes import cxcywh_to_xyxy, giou, iou
from .scenes import Scenes

W_CLS, W_L1, W_GIOU = 2.0, 5.0, 2.0


def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed sigmoid focal loss, alpha 0.25, gamma 2; logits and target (..., C)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    a = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (a * (1 - pt) ** FOCAL_GAMMA * ce).sum()


def ia_bce(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
           alpha: float = 0.25, gamma: float = 2.0, tau: float = 1.5) -> torch.Tensor:
    """Summed IoU-aware BCE with rank weights (module docstring); logits (B, Q, C), pos (B, Q, G)."""
    p = logits.sigmoid()
    b, q, g = pos.nonzero(as_tuple=True)
    c = scenes.labels[b, g]
    with torch.no_grad():
        u = iou(cxcywh_to_xyxy(boxes[b, q]), cxcywh_to_xyxy(scenes.boxes[b, g]))
        t = (p[b, q, c] ** alpha * u ** (1 - alpha)).clamp(min=0.01)
        quality = torch.full(pos.shape, -1.0, dtype=t.dtype, device=t.device)
        quality[b, q, g] = t
        rank = quality.argsort(dim=-2, descending=True, stable=True).argsort(dim=-2)  # per object
        t = t * torch.exp(-rank[b, q, g].to(t.dtype) / tau)
        flat = (b * p.shape[1] + q) * p.shape[2] + c  # a query positive for two same-class objects keeps the max
        target = torch.zeros_like(p).flatten().scatter_reduce_(0, flat, t, reduce="amax").view_as(p)
        is_pos = torch.zeros_like(p, dtype=torch.bool).index_put_((b, q, c), torch.ones_like(c, dtype=torch.bool))
    neg_w = torch.where(is_pos, 1 - target, p ** gamma)
    pos_w = torch.where(is_pos, target, torch.zeros_like(p))
    return -(pos_w * F.logsigmoid(logits) + neg_w * F.logsigmoid(-logits)).sum()


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
             cls_loss: str = "focal") -> torch.Tensor:
    """Loss of one layer's predictions given a positive mask pos (B, Q, G) (one-to-one is the special
    case with one positive per object).  logits (B, Q, C), boxes (B, Q, 4)."""
    n_obj = scenes.valid.sum().clamp(min=1)
    if cls_loss == "focal":
        onehot = F.one_hot(scenes.labels, logits.shape[-1]).to(logits.dtype)  # (B, G, C)
        cls = focal(logits, torch.einsum("bqg,bgc->bqc", pos.to(logits.dtype), onehot).clamp(max=1))
    elif cls_loss == "ia-bce":
        cls = ia_bce(logits, boxes, scenes, pos)
    else:
        raise ValueError(f"unknown classification loss {cls_loss!r}")
    b, q, g = pos.nonzero(as_tuple=True)
    pred, gt = boxes[b, q], scenes.boxes[b, g]
    l1 = (pred - gt).abs().sum()
    gi = (1 - giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt))).sum()
    return (W_CLS * cls + W_L1 * l1 + W_GIOU * gi) / n_obj


def match_to_mask(match: torch.Tensor, Q: int) -> torch.Tensor:
    """(..., G) matched query per object (-1 = none) -> (..., Q, G) bool mask."""
    hit = match >= 0
    mask = F.one_hot(match.clamp(min=0), Q).transpose(-1, -2).bool()
    return mask & hit[..., None, :]
