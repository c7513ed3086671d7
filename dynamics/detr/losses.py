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
    return focal_terms(logits, target).sum()


def focal_terms(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise sigmoid focal loss (..., C)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    a = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return a * (1 - pt) ** FOCAL_GAMMA * ce


def ia_bce(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
           alpha: float = 0.25, gamma: float = 2.0, tau: float = 1.5) -> torch.Tensor:
    """Summed IoU-aware BCE with rank weights (module docstring); logits (B, Q, C), pos (B, Q, G)."""
    return ia_bce_per_image(logits, boxes, scenes, pos, alpha, gamma, tau).sum()


def ia_bce_per_image(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
                     alpha: float = 0.25, gamma: float = 2.0, tau: float = 1.5) -> torch.Tensor:
    """:func:`ia_bce` summed per image -> (B,)."""
    p = logits.sigmoid()
    b, q, g = pos.nonzero(as_tuple=True)
    c = scenes.labels[b, g]
    with torch.no_grad():
        u = iou(cxcywh_to_xyxy(boxes[b, q]), cxcywh_to_xyxy(scenes.boxes[b, g]))
        t = (p[b, q, c] ** alpha * u ** (1 - alpha)).clamp(min=0.01)
        quality = torch.full(pos.shape, -1.0, dtype=t.dtype, device=t.device)
        quality[b, q, g] = t
        # rank among the object's positives (0 = best): a top-k over the few positives per object
        k = max(1, int(pos.sum(-2).max()))
        order = quality.topk(k, dim=-2).indices  # (B, k, G)
        rank = torch.full(pos.shape, k, dtype=torch.long, device=t.device).scatter_(
            -2, order, torch.arange(k, device=t.device).view(1, k, 1).expand_as(order))
        t = t * torch.exp(-rank[b, q, g].to(t.dtype) / tau)
        flat = (b * p.shape[1] + q) * p.shape[2] + c  # a query positive for two same-class objects keeps the max
        target = torch.zeros_like(p).flatten().scatter_reduce_(0, flat, t, reduce="amax").view_as(p)
        is_pos = torch.zeros_like(p, dtype=torch.bool).index_put_((b, q, c), torch.ones_like(c, dtype=torch.bool))
    neg_w = torch.where(is_pos, 1 - target, p ** gamma)
    pos_w = torch.where(is_pos, target, torch.zeros_like(p))
    return -(pos_w * F.logsigmoid(logits) + neg_w * F.logsigmoid(-logits)).sum((-2, -1))


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
             cls_loss: str = "focal") -> torch.Tensor:
    """Loss of one layer's predictions given a positive mask pos (B, Q, G) (one-to-one is the special
    case with one positive per object).  logits (B, Q, C), boxes (B, Q, 4)."""
    n_obj = scenes.valid.sum().clamp(min=1)
    return set_loss_per_image(logits, boxes, scenes, pos, cls_loss).sum() / n_obj


def set_loss_per_image(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor,
                       cls_loss: str = "focal") -> torch.Tensor:
    """W_CLS cls + W_L1 L1 + W_GIOU (1 - GIoU), summed per image and not normalised -> (B,).

    The batch axis may stack images of several layers and replicas (so one call serves a whole
    replica program); the caller divides each replica's sum by its number of objects."""
    if cls_loss == "focal":
        onehot = F.one_hot(scenes.labels, logits.shape[-1]).to(logits.dtype)  # (B, G, C)
        target = torch.einsum("bqg,bgc->bqc", pos.to(logits.dtype), onehot).clamp(max=1)
        cls = focal_terms(logits, target).sum((-2, -1))
    elif cls_loss == "ia-bce":
        cls = ia_bce_per_image(logits, boxes, scenes, pos)
    else:
        raise ValueError(f"unknown classification loss {cls_loss!r}")
    b, q, g = pos.nonzero(as_tuple=True)
    pred, gt = boxes[b, q], scenes.boxes[b, g]
    per_pair = W_L1 * (pred - gt).abs().sum(-1) + W_GIOU * (1 - giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt)))
    box = torch.zeros(logits.shape[0], dtype=per_pair.dtype, device=per_pair.device).index_add(0, b, per_pair)
    return W_CLS * cls + box


def match_to_mask(match: torch.Tensor, Q: int) -> torch.Tensor:
    """(..., G) matched query per object (-1 = none) -> (..., Q, G) bool mask."""
    hit = match >= 0
    mask = F.one_hot(match.clamp(min=0), Q).transpose(-1, -2).bool()
    return mask & hit[..., None, :]
