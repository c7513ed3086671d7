"""Label assignment: one-to-one (Hungarian) for the O-decoder, one-to-many for the C-decoder.

Shapes: B images, Q queries, G object slots per image (``valid`` (B, G) marks real objects).

One-to-one (DETR, Carion et al. 2020; cost as in Deformable DETR's ``HungarianMatcher``)::

    C[q, g] = w_cls * (focal_pos(p_q,c_g) - focal_neg(p_q,c_g)) + w_l1 * |b_q - b_g|_1 - w_giou * GIoU(b_q, b_g)

solved per image with ``scipy.optimize.linear_sum_assignment`` (the only per-image loop: scipy's
solver is sequential; the cost matrices are built for the whole batch at once).

One-to-many (DAC-DETR ``models/onetomany.py``: ``Stage2Assigner``, adapted from DETA / detectron2)::

    S[q, g] = 0.7 * IoU(b_q, b_g) + 0.3 * sigmoid(logit_q[c_g])
    1. each query q takes its best object g*(q) = argmax_g S[q, g]; it is positive when S[q, g*] >= 0.4
    2. each object's best query argmax_q S[q, g] is forced positive ("low-quality matches")
    3. n_g = number of queries positive for g by 1-2; g keeps its top min(n_g, k) queries by S (k = 6)

Step 3 follows the official ``sample_topk``: it takes g's top-scoring queries among *all* queries,
so a query whose best object is another one can still be among g's positives (and a query can be
positive for two objects).  One deviation, so that rule 2 holds as stated: here a forced query counts
for the object that forced it; in the official ``Matcher`` it stays matched to its own argmax object,
which can leave an object with no positive when its best query prefers a neighbour.  The official
random subsampling to at most 25% positive queries (75 of 300) is not applied: with <= 6 objects and
k = 6 it rarely binds at COCO scale, and with 30 queries it would cap a toy image at 7 positives.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .boxes import cxcywh_to_xyxy, pairwise_giou, pairwise_iou

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def hungarian_cost(logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   w_cls: float = 2.0, w_l1: float = 5.0, w_giou: float = 2.0) -> torch.Tensor:
    """(..., Q, C) logits, (..., Q, 4) and (..., G, 4) cxcywh boxes, (..., G) labels -> (..., Q, G) cost."""
    p = logits.sigmoid()
    idx = gt_labels[..., None, :].expand(*p.shape[:-1], gt_labels.shape[-1])
    pg = p.gather(-1, idx)  # (..., Q, G): probability of each object's class
    neg = (1 - FOCAL_ALPHA) * pg ** FOCAL_GAMMA * -(1 - pg + 1e-8).log()
    pos = FOCAL_ALPHA * (1 - pg) ** FOCAL_GAMMA * -(pg + 1e-8).log()
    l1 = (boxes[..., :, None, :] - gt_boxes[..., None, :, :]).abs().sum(-1)
    g = pairwise_giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes))
    return w_cls * (pos - neg) + w_l1 * l1 - w_giou * g


def hungarian(cost: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Minimum-cost one-to-one matching per image.

    cost (..., Q, G) and valid (..., G) -> match (..., G) int64: the query matched to each object,
    -1 for padding slots.  Needs Q >= number of valid objects in every image.
    """
    lead = cost.shape[:-2]
    c = cost.detach().reshape(-1, *cost.shape[-2:]).cpu().double().numpy()
    v = valid.reshape(-1, valid.shape[-1]).cpu().numpy()
    out = np.full(v.shape, -1, dtype=np.int64)
    for i in range(c.shape[0]):
        cols = np.flatnonzero(v[i])
        if cols.size == 0:
            continue
        rows, j = linear_sum_assignment(c[i][:, cols])
        out[i, cols[j]] = rows
    return torch.from_numpy(out).to(cost.device).reshape(*lead, valid.shape[-1])


def matching_score(logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   iou_weight: float = 0.7) -> torch.Tensor:
    """S = iou_weight * IoU + (1 - iou_weight) * p(class of the object) -> (..., Q, G)."""
    p = logits.sigmoid()
    pg = p.gather(-1, gt_labels[..., None, :].expand(*p.shape[:-1], gt_labels.shape[-1]))
    iou = pairwise_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes))
    return iou_weight * iou + (1 - iou_weight) * pg


def one_to_many(score: torch.Tensor, valid: torch.Tensor, threshold: float = 0.4, k: int = 6) -> torch.Tensor:
    """The DAC-DETR one-to-many rule (module docstring) -> positive (..., Q, G) bool.

    score (..., Q, G) with entries in [0, 1]; valid (..., G).  Every valid object gets between 1 and
    k positives; padding slots get none.
    """
    Q = score.shape[-2]
    s = score.masked_fill(~valid[..., None, :], -1.0)
    best_val, best_gt = s.max(-1)  # (..., Q)
    assigned = torch.nn.functional.one_hot(best_gt, s.shape[-1]).bool() & (best_val >= threshold)[..., None]
    best_q = s.argmax(-2)  # (..., G): each object's best query
    forced = torch.nn.functional.one_hot(best_q, Q).transpose(-1, -2).bool()  # (..., Q, G)
    assigned = (assigned | forced) & valid[..., None, :]
    n_keep = assigned.sum(-2).clamp(max=k)  # (..., G)
    return top_per_column(s, n_keep, min(k, Q)) & valid[..., None, :]


def top_per_column(score: torch.Tensor, n: torch.Tensor, k: int) -> torch.Tensor:
    """Mask (..., Q, G) of the n[..., g] <= k highest scores of every column g (``torch.topk``, as the
    official ``sample_topk``); one top-k instead of a full sort of the Q axis."""
    idx = score.topk(k, dim=-2).indices  # (..., k, G), best first
    take = torch.arange(k, device=score.device).view(*([1] * (score.dim() - 2)), k, 1) < n[..., None, :]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-2, idx, take)
