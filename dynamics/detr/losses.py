"""Set losses for both decoders: sigmoid focal classification (Lin et al. 2017), L1 and GIoU box terms.

Weights follow Deformable DETR / DAC-DETR configs: 2 (class), 5 (L1), 2 (GIoU), summed over decoder
layers (auxiliary losses), normalised by the number of objects in the batch.  The O-decoder's targets
come from one-to-one matching ``match`` (B, G); the C-decoder's from the one-to-many mask
``pos`` (B, Q, G).  The official code uses an IoU-aware BCE (Align-DETR) for both; the toy uses the
plain focal loss with hard targets for both, so the only difference between the decoders is the
assignment and the missing self-attention.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .assign import FOCAL_ALPHA, FOCAL_GAMMA
from .boxes import cxcywh_to_xyxy, giou
from .scenes import Scenes

W_CLS, W_L1, W_GIOU = 2.0, 5.0, 2.0


def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed sigmoid focal loss, alpha 0.25, gamma 2; logits and target (..., C)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    a = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (a * (1 - pt) ** FOCAL_GAMMA * ce).sum()


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, pos: torch.Tensor) -> torch.Tensor:
    """Loss of one layer's predictions given a positive mask pos (B, Q, G) (one-to-one is the special
    case with one positive per object).  logits (B, Q, C), boxes (B, Q, 4)."""
    n_obj = scenes.valid.sum().clamp(min=1)
    onehot = F.one_hot(scenes.labels, logits.shape[-1]).to(logits.dtype)  # (B, G, C)
    target = torch.einsum("bqg,bgc->bqc", pos.to(logits.dtype), onehot).clamp(max=1)
    b, q, g = pos.nonzero(as_tuple=True)
    pred, gt = boxes[b, q], scenes.boxes[b, g]
    l1 = (pred - gt).abs().sum()
    gi = (1 - giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt))).sum()
    return (W_CLS * focal(logits, target) + W_L1 * l1 + W_GIOU * gi) / n_obj


def match_to_mask(match: torch.Tensor, Q: int) -> torch.Tensor:
    """(..., G) matched query per object (-1 = none) -> (..., Q, G) bool mask."""
    hit = match >= 0
    mask = F.one_hot(match.clamp(min=0), Q).transpose(-1, -2).bool()
    return mask & hit[..., None, :]
