"""Gather/disperse counts and COCO-style average precision.

``queries_per_object``: DAC-DETR's "average number of queries per object with large affinity"
(README, ``figs/analyse.jpg``): for each object, the number of queries whose affinity with it exceeds
t, averaged over all objects.  Affinity is box IoU (default) or the one-to-many matching score
0.7 IoU + 0.3 p; the paper's exact affinity is not stated in the material read.

``average_precision``: COCO AP (Lin et al. 2014; pycocotools ``COCOeval``): per class and IoU
threshold t in {0.50, 0.55, ..., 0.95}, detections sorted by score are matched greedily to the
unmatched same-class object of highest IoU >= t; precision is made monotone and read at 101 recall
points; AP averages over thresholds and the classes that occur.  Every (query, class) pair is a
detection (DETR's sigmoid post-processing), at most ``max_dets`` per image.
"""

from __future__ import annotations

import torch

from .assign import matching_score
from .boxes import cxcywh_to_xyxy, pairwise_iou
from .scenes import Scenes

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def affinity(logits: torch.Tensor | None, boxes: torch.Tensor, scenes: Scenes, kind: str = "iou") -> torch.Tensor:
    """(..., B, Q, G) affinity of every query with every object slot."""
    if kind == "iou":
        return pairwise_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(scenes.boxes))
    if kind == "score":
        return matching_score(logits, boxes, scenes.boxes, scenes.labels)
    raise ValueError(f"unknown affinity {kind!r}")


def queries_per_object(aff: torch.Tensor, valid: torch.Tensor, thresholds) -> torch.Tensor:
    """aff (..., B, Q, G), valid (B, G) -> (..., T): mean over real objects of #{q: aff > t}."""
    t = torch.as_tensor(thresholds, dtype=aff.dtype, device=aff.device)
    count = (aff[..., None] > t).sum(-3).to(aff.dtype)  # (..., B, G, T)
    w = valid.to(aff.dtype)[..., None]
    return (count * w).sum((-3, -2)) / w.sum().clamp(min=1)


def confident_hits(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, iou_t: float = 0.5,
                   p_t: float = 0.5) -> tuple[float, float]:
    """Duplicate diagnostic: per object, n = #{q : IoU(q, g) > iou_t and p_q(class of g) > p_t}.

    Returns (mean n, fraction of objects with n >= 2).  A one-to-one detector without NMS wants n = 1."""
    aff = affinity(logits, boxes, scenes)
    pg = logits.sigmoid().gather(-1, scenes.labels[:, None, :].expand(-1, logits.shape[1], -1))
    n = ((aff > iou_t) & (pg > p_t)).sum(1)[scenes.valid].to(torch.float64)
    return float(n.mean()), float((n >= 2).to(torch.float64).mean())


def _ranked(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, max_dets: int):
    """Per (image, class), queries sorted by score: scores (B, C, Q), IoU (B, C, Q, G) with other-class
    and padding objects set to -1, and a mask of the detections kept by max_dets."""
    B, Q, C = logits.shape
    p = logits.sigmoid().transpose(1, 2)  # (B, C, Q)
    flat = p.reshape(B, -1)
    k = min(max_dets, flat.shape[1])
    kept = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True).view(B, C, Q)
    order = p.argsort(dim=-1, descending=True, stable=True)
    score = p.gather(-1, order)
    kept = kept.gather(-1, order)
    iou = pairwise_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(scenes.boxes))  # (B, Q, G)
    iou = iou[:, None].expand(B, C, Q, -1).gather(2, order[..., None].expand(-1, -1, -1, iou.shape[-1]))
    same = (scenes.labels[:, None, :] == torch.arange(C, device=logits.device)[None, :, None]) & scenes.valid[:, None]
    iou = iou.masked_fill(~same[:, :, None, :], -1.0)
    return score, iou, kept, order


def nms_keep(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes, threshold: float) -> torch.Tensor:
    """Class-aware greedy NMS (the official DAC-DETR ``NMSPostProcess`` uses IoU 0.8) -> keep (B, C, Q)
    in the per-class score order of :func:`_ranked`."""
    B, Q, C = logits.shape
    p = logits.sigmoid().transpose(1, 2)
    order = p.argsort(dim=-1, descending=True, stable=True)
    xyxy = cxcywh_to_xyxy(boxes)
    qq = pairwise_iou(xyxy, xyxy)[:, None].expand(B, C, Q, Q)
    qq = qq.gather(2, order[..., None].expand(-1, -1, -1, Q)).gather(3, order[:, :, None, :].expand(-1, -1, Q, -1))
    keep = torch.ones(B, C, Q, dtype=torch.bool, device=logits.device)
    later = torch.arange(Q, device=logits.device)
    for r in range(Q):
        suppress = keep[..., r, None] & (qq[..., r, :] > threshold) & (later > r)
        keep &= ~suppress
    return keep


def average_precision(logits: torch.Tensor, boxes: torch.Tensor, scenes: Scenes,
                      thresholds=COCO_THRESHOLDS, max_dets: int = 100, nms: float | None = None) -> dict:
    """COCO AP of one set of predictions: logits (B, Q, C), boxes (B, Q, 4) cxcywh.

    Returns {"ap": mean over thresholds and classes, "ap50", "ap75", "per_threshold": (T,) tensor}.
    """
    B, Q, C = logits.shape
    score, iou, kept, _ = _ranked(logits, boxes, scenes, max_dets)
    if nms is not None:
        kept = kept & nms_keep(logits, boxes, scenes, nms)
    t = torch.as_tensor(thresholds, dtype=iou.dtype, device=iou.device)
    T, G = len(t), iou.shape[-1]
    taken = torch.zeros(T, B, C, G, dtype=torch.bool, device=iou.device)
    tp = torch.zeros(T, B, C, Q, dtype=torch.bool, device=iou.device)
    for r in range(Q):  # greedy matching in score order, all images, classes and thresholds at once
        cand = iou[:, :, r][None].expand(T, -1, -1, -1)  # (T, B, C, G)
        ok = (cand >= t[:, None, None, None]) & ~taken & kept[None, :, :, r, None]
        best = cand.masked_fill(~ok, -2.0).argmax(-1, keepdim=True)
        hit = ok.gather(-1, best).squeeze(-1)
        tp[..., r] = hit
        taken |= torch.zeros_like(taken).scatter_(-1, best, hit[..., None])
    # pool detections over images, per class: (T, C, B*Q) sorted by score
    s = score.transpose(0, 1).reshape(C, -1)
    k = kept.transpose(0, 1).reshape(C, -1)
    order = s.masked_fill(~k, -1.0).argsort(dim=-1, descending=True, stable=True)
    tp_c = tp.transpose(1, 2).reshape(T, C, -1).gather(-1, order[None].expand(T, -1, -1))
    k_c = k.gather(-1, order)[None].expand(T, -1, -1)
    ctp = (tp_c & k_c).cumsum(-1).to(torch.float64)
    cfp = (~tp_c & k_c).cumsum(-1).to(torch.float64)
    n_gt = ((scenes.labels[..., None] == torch.arange(C, device=logits.device)) & scenes.valid[..., None]).sum((0, 1))
    recall = ctp / n_gt.clamp(min=1)[None, :, None].to(torch.float64)
    precision = ctp / (ctp + cfp).clamp(min=1)
    precision = precision.masked_fill(~k_c, 0.0)
    envelope = precision.flip(-1).cummax(-1).values.flip(-1)
    rec_pts = torch.linspace(0, 1, 101, dtype=torch.float64, device=logits.device).expand(T, C, -1).contiguous()
    idx = torch.searchsorted(recall.contiguous(), rec_pts, side="left")
    padded = torch.cat([envelope, torch.zeros(T, C, 1, dtype=envelope.dtype, device=envelope.device)], -1)
    prec_at = padded.gather(-1, idx.clamp(max=padded.shape[-1] - 1))
    present = n_gt > 0
    ap_tc = prec_at.mean(-1)[:, present]  # (T, C_present)
    per_t = ap_tc.mean(-1) if present.any() else torch.full((T,), float("nan"), dtype=torch.float64)
    out = {"ap": float(per_t.mean()), "per_threshold": per_t}
    for name, val in (("ap50", 0.5), ("ap75", 0.75)):
        hit = (t - val).abs() < 1e-6
        out[name] = float(per_t[hit][0]) if hit.any() else float("nan")
    return out
