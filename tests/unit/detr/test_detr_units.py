"""Unit tests for the DETR toy: IoU, Hungarian matching, the one-to-many rule, COCO AP, scenes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dynamics.detr import assign, boxes, metrics, scenes
from dynamics.errors import UserError


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- IoU / GIoU

@pytest.mark.parametrize("a,b,expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),                 # identical
    ([0, 0, 1, 1], [2, 0, 3, 1], 0.0),                 # disjoint
    ([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3),               # half overlap: 1 / (2 + 2 - 1)
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),              # containment
    ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),                 # touching edges
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),               # corner overlap: 1 / (4 + 4 - 1)
], ids=["identical", "disjoint", "half", "contained", "touching", "corner"])
def test_iou_constructed(a, b, expected):
    assert float(boxes.iou(t(a), t(b))) == pytest.approx(expected, abs=1e-12)
    assert float(boxes.iou(t(b), t(a))) == pytest.approx(expected, abs=1e-12)


def test_giou_constructed():
    # disjoint unit boxes 1 apart: hull 3, union 2 -> GIoU = 0 - 1/3
    assert float(boxes.giou(t([0, 0, 1, 1]), t([2, 0, 3, 1]))) == pytest.approx(-1 / 3)
    # containment: hull = the big box = union -> GIoU = IoU
    assert float(boxes.giou(t([0, 0, 4, 4]), t([1, 1, 3, 3]))) == pytest.approx(0.25)


def test_pairwise_iou_matches_elementwise_and_formats_roundtrip():
    g = torch.Generator().manual_seed(0)
    c = torch.rand(2, 5, 4, generator=g, dtype=torch.float64)
    c[..., 2:] = c[..., 2:] * 0.5 + 0.05
    d = torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
    d[..., 2:] = d[..., 2:] * 0.5 + 0.05
    a, b = boxes.cxcywh_to_xyxy(c), boxes.cxcywh_to_xyxy(d)
    P = boxes.pairwise_iou(a, b)
    assert P.shape == (2, 5, 3)
    for i, j, k in itertools.product(range(2), range(5), range(3)):
        assert float(P[i, j, k]) == pytest.approx(float(boxes.iou(a[i, j], b[i, k])))
    assert torch.allclose(boxes.xyxy_to_cxcywh(a), c)
    assert ((P >= 0) & (P <= 1)).all()
    G = boxes.pairwise_giou(a, b)
    assert ((G <= P + 1e-12) & (G >= -1)).all()


# ---------------------------------------------------------------- Hungarian matching

def test_hungarian_beats_greedy_on_constructed_case():
    # greedy row-wise argmin takes (0,0)=1 then (1,1)=10 (total 11); the optimum is (0,1)+(1,0) = 3
    cost = t([[1.0, 2.0], [1.0, 10.0]])[None]
    match = assign.hungarian(cost, torch.tensor([[True, True]]))
    assert match.tolist() == [[1, 0]]


def test_hungarian_equals_brute_force_with_padding():
    rng = np.random.default_rng(1)
    for trial in range(20):
        Q, G = 5, 3
        cost = torch.from_numpy(rng.normal(size=(1, Q, G)))
        valid = torch.tensor([[True, trial % 2 == 0, True]])
        match = assign.hungarian(cost, valid)[0]
        cols = [g for g in range(G) if valid[0, g]]
        best = min(sum(float(cost[0, p[i], g]) for i, g in enumerate(cols))
                   for p in itertools.permutations(range(Q), len(cols)))
        got = sum(float(cost[0, match[g], g]) for g in cols)
        assert got == pytest.approx(best)
        assert len({int(match[g]) for g in cols}) == len(cols)  # one-to-one
        assert all(int(match[g]) == -1 for g in range(G) if not valid[0, g])


def test_hungarian_cost_prefers_the_right_box():
    gt = t([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    pred = t([[[0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)
    cost = assign.hungarian_cost(logits, pred, gt, torch.tensor([[0, 1]]))
    assert assign.hungarian(cost, torch.tensor([[True, True]])).tolist() == [[2, 0]]


# ---------------------------------------------------------------- one-to-many rule

def om(score, valid=None, **kw):
    s = t(score)[None]
    v = torch.ones(1, s.shape[-1], dtype=torch.bool) if valid is None else torch.tensor([valid])
    return assign.one_to_many(s, v, **kw)[0]


def test_one_to_many_threshold_is_inclusive():
    # column 0: q0 = 0.9 (best), q1 = 0.4 (exactly at threshold: positive), q2 = 0.39 (not)
    pos = om([[0.9], [0.4], [0.39]])
    assert pos[:, 0].tolist() == [True, True, False]


def test_one_to_many_caps_at_k_keeping_the_best():
    scores = np.linspace(0.95, 0.5, 10)[:, None]  # ten queries above 0.4 for one object
    pos = om(scores.tolist())
    assert int(pos.sum()) == 6
    assert pos[:6, 0].all() and not pos[6:, 0].any()
    assert int(om(scores.tolist(), k=3).sum()) == 3


def test_one_to_many_forces_each_objects_best_query():
    # object 1 has no query above 0.4: its best query (q2, 0.3) is forced positive, and only it
    pos = om([[0.8, 0.1], [0.6, 0.2], [0.05, 0.3]])
    assert pos[:, 1].tolist() == [False, False, True]
    assert pos[:, 0].tolist() == [True, True, False]


def test_one_to_many_forced_query_counts_for_its_object_even_if_it_prefers_another():
    # q0 is the best query of both objects; object 1 still gets q0 as a positive (rule 2 as stated)
    pos = om([[0.9, 0.35], [0.1, 0.2]])
    assert pos[0].tolist() == [True, True]
    assert pos[1].tolist() == [False, False]


def test_one_to_many_top_count_follows_official_sample_topk():
    # Object 0: q2 (0.8) and q1 (0.45) pick it by argmax, so n_0 = 2; q0 (0.5) prefers object 1 (0.9).
    # The official sample_topk keeps object 0's top-2 queries by score over *all* queries: q2 and q0,
    # so q0 is positive for both objects and q1 for neither.
    pos = om([[0.5, 0.9], [0.45, 0.1], [0.8, 0.2]])
    assert pos[:, 0].tolist() == [True, False, True]
    assert pos[:, 1].tolist() == [True, False, False]


def test_one_to_many_ignores_padding_and_gives_every_object_one_to_k():
    g = torch.Generator().manual_seed(3)
    s = torch.rand(4, 30, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    pos = assign.one_to_many(s, valid)
    n = pos.sum(-2)
    assert (n[~valid] == 0).all()
    assert ((n[valid] >= 1) & (n[valid] <= 6)).all()


def test_matching_score_is_weighted_iou_plus_probability():
    gt = t([[[0.5, 0.5, 0.2, 0.2]]])
    pred = t([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]]])  # IoU 1 and 1/3
    logits = torch.zeros(1, 2, 2, dtype=torch.float64)  # p = 0.5 for every class
    s = assign.matching_score(logits, pred, gt, torch.tensor([[1]]))
    assert s[0, :, 0].tolist() == pytest.approx([0.7 + 0.15, 0.7 / 3 + 0.15])


# ---------------------------------------------------------------- COCO AP

def coco_ap_reference(logits, bxs, sc, thresholds=metrics.COCO_THRESHOLDS):
    """Plain-loop COCO AP (pycocotools' evaluateImg/accumulate logic without crowds or areas)."""
    p = logits.sigmoid().numpy()
    B, Q, C = p.shape
    iou = boxes.pairwise_iou(boxes.cxcywh_to_xyxy(bxs), boxes.cxcywh_to_xyxy(sc.boxes)).numpy()
    aps = []
    for thr in thresholds:
        per_class = []
        for c in range(C):
            dets, n_gt = [], 0
            for b in range(B):
                gts = [g for g in range(sc.boxes.shape[1]) if sc.valid[b, g] and sc.labels[b, g] == c]
                n_gt += len(gts)
                taken = set()
                for q in sorted(range(Q), key=lambda q: -p[b, q, c]):
                    best, best_iou = None, thr
                    for g in gts:
                        if g not in taken and iou[b, q, g] >= best_iou:
                            best, best_iou = g, iou[b, q, g]
                    if best is not None:
                        taken.add(best)
                    dets.append((p[b, q, c], best is not None))
            if n_gt == 0:
                continue
            dets.sort(key=lambda d: -d[0])
            tp = np.cumsum([d[1] for d in dets])
            fp = np.cumsum([not d[1] for d in dets])
            rc, pr = tp / n_gt, tp / np.maximum(tp + fp, 1)
            for i in range(len(pr) - 1, 0, -1):
                pr[i - 1] = max(pr[i - 1], pr[i])
            idx = np.searchsorted(rc, np.linspace(0, 1, 101), side="left")
            per_class.append(np.mean([pr[i] if i < len(pr) else 0.0 for i in idx]))
        aps.append(np.mean(per_class))
    return float(np.mean(aps))


def test_ap_hand_computed_case():
    # two objects of class 0; detections: hit (0.9), miss (0.8), hit (0.7) -> P/R = (1, .5), (.5, .5), (2/3, 1)
    sc = scenes.Scenes(torch.tensor([[[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]]),
                       torch.tensor([[0, 0]]), torch.tensor([[True, True]]))
    bx = torch.tensor([[[0.25, 0.25, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1], [0.75, 0.75, 0.2, 0.2]]])
    p = torch.tensor([0.9, 0.8, 0.7])
    logits = torch.logit(p)[None, :, None]
    got = metrics.average_precision(logits, bx, sc)
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert got["ap"] == pytest.approx(expected)
    assert got["ap50"] == pytest.approx(expected)
    perfect = metrics.average_precision(torch.logit(torch.tensor([0.9, 0.1, 0.8]))[None, :, None], bx, sc)
    assert perfect["ap"] == pytest.approx(1.0)


def test_ap_matches_plain_loop_reference_on_random_predictions():
    spec = scenes.SceneSpec(n_classes=2)
    g = torch.Generator().manual_seed(5)
    sc = scenes.sample(6, spec, g)
    Q = 8
    # predictions: jittered copies of the objects plus random boxes, random scores
    base = sc.boxes.repeat(1, 2, 1)[:, :Q]
    bx = (base + 0.03 * torch.randn(base.shape, generator=g)).clamp(0.02, 0.98)
    bx[:, 6:] = torch.rand(6, 2, 4, generator=g) * 0.5 + 0.2
    logits = torch.randn(6, Q, 2, generator=g, dtype=torch.float32)
    got = metrics.average_precision(logits, bx, sc)["ap"]
    assert got == pytest.approx(coco_ap_reference(logits, bx, sc), abs=1e-9)


def test_nms_removes_a_lower_scored_duplicate():
    sc = scenes.Scenes(torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]), torch.tensor([[0]]), torch.tensor([[True]]))
    bx = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]]])
    logits = torch.logit(torch.tensor([[[0.9], [0.8]]]))
    keep = metrics.nms_keep(logits, bx, sc, 0.8)
    assert keep.tolist() == [[[True, False]]]


# ---------------------------------------------------------------- scenes

def test_sampled_scenes_lie_on_the_canvas_and_pixel_grid():
    spec = scenes.SceneSpec()
    sc = scenes.sample(200, spec, torch.Generator().manual_seed(0))
    n = sc.valid.sum(1)
    assert int(n.min()) >= 1 and int(n.max()) <= 6
    xyxy = boxes.cxcywh_to_xyxy(sc.boxes)[sc.valid]
    assert (xyxy >= -1e-6).all() and (xyxy <= 1 + 1e-6).all()
    px = xyxy * spec.canvas
    assert torch.allclose(px, px.round(), atol=1e-4)
    scenes.check_boxes(sc)  # no error


def test_render_paints_each_box_interior_and_outline():
    spec = scenes.SceneSpec(canvas=8, n_classes=2, max_size=0.5)
    sc = scenes.make_scenes([[[0.25, 0.25, 0.5, 0.5]]], [[1]], spec)  # pixels [0, 4) x [0, 4)
    img = scenes.render(sc, spec)
    assert img.shape == (1, 3, 8, 8)
    assert float(img[0, 1].sum()) == 16 and float(img[0, 0].sum()) == 0
    assert float(img[0, 2].sum()) == 16 - 4  # outline = 4x4 minus the 2x2 interior


@pytest.mark.parametrize("box", [[0.95, 0.5, 0.2, 0.2], [0.5, -0.05, 0.2, 0.2], [0.5, 0.5, 1.2, 0.2]])
def test_boxes_outside_the_canvas_are_a_user_error(box):
    with pytest.raises(UserError, match="outside the canvas"):
        scenes.make_scenes([[box]], [[0]], scenes.SceneSpec())


# ---------------------------------------------------------------- IoU-aware BCE and duplicates

def test_ia_bce_on_constructed_positives():
    from dynamics.detr import losses
    sc = scenes.Scenes(t([[[0.5, 0.5, 0.2, 0.2]]]), torch.tensor([[0]]), torch.tensor([[True]]))
    bx = t([[[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])  # IoU 1, 0.6, 0
    p = t([0.8, 0.8, 0.3])
    logits = torch.logit(p)[None, :, None]
    pos = torch.tensor([[[True], [True], [False]]])
    iou2 = float(boxes.iou(boxes.cxcywh_to_xyxy(bx[0, 1]), boxes.cxcywh_to_xyxy(bx[0, 0])))
    t0 = 0.8 ** 0.25 * 1.0
    t1 = 0.8 ** 0.25 * iou2 ** 0.75 * np.exp(-1 / 1.5)  # second-ranked positive of the object
    expected = (-(t0 * np.log(0.8) + (1 - t0) * np.log(0.2)) - (t1 * np.log(0.8) + (1 - t1) * np.log(0.2))
                - 0.3 ** 2 * np.log(0.7))
    assert float(losses.ia_bce(logits, bx, sc, pos)) == pytest.approx(expected, rel=1e-9)


def test_confident_hits_counts_duplicates():
    sc = scenes.Scenes(t([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]]), torch.tensor([[0, 1]]),
                       torch.tensor([[True, True]]))
    bx = t([[[0.3, 0.3, 0.2, 0.2], [0.31, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    p = t([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.9], [0.0, 0.2]]])  # object 0: two confident hits; object 1: one
    hits, dup = metrics.confident_hits(torch.logit(p.clamp(1e-6, 1 - 1e-6)), bx, sc)
    assert hits == pytest.approx(1.5) and dup == pytest.approx(0.5)
