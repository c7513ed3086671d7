"""Axis-aligned boxes: formats, batched pairwise IoU and generalised IoU (Rezatofighi et al. 2019).

Boxes are normalised to the canvas ([0, 1] on both axes).  ``cxcywh`` = (centre x, centre y, width,
height), the format the heads predict; ``xyxy`` = (x0, y0, x1, y1), the format the overlaps use.
Every function broadcasts over leading axes, so a batch of images is one call.
"""

from __future__ import annotations

import torch

EPS = 1e-9


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def area(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...,); degenerate boxes have area 0."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter, area(a) + area(b) - inter


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of broadcastable (..., 4) xyxy boxes -> (...,).

    IoU = |A ∩ B| / |A ∪ B|; two empty boxes give 0.
    """
    inter, union = _inter_union(a, b)
    return inter / union.clamp(min=EPS)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., N, 4) x (..., M, 4) xyxy -> (..., N, M) IoU."""
    return iou(a[..., :, None, :], b[..., None, :, :])


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise generalised IoU, GIoU = IoU - |C \\ (A ∪ B)| / |C| with C the enclosing box.

    In [-1, 1]; equals IoU when one box encloses the other.  Rezatofighi et al. 2019, Alg. 1.
    """
    inter, union = _inter_union(a, b)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return inter / union.clamp(min=EPS) - (hull - union) / hull.clamp(min=EPS)


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., N, 4) x (..., M, 4) xyxy -> (..., N, M) generalised IoU."""
    return giou(a[..., :, None, :], b[..., None, :, :])
