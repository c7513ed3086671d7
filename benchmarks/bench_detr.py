"""Speed of the DETR toy's hot paths, each against a baseline measured in the same run.

- COCO AP: the batched matcher (all images, classes and IoU thresholds as one tensor program per
  detection rank) vs. a per-image, per-class, per-threshold Python loop (pycocotools' structure).
- One-to-many assignment: batched over images vs. one image at a time.
- The set losses of R replicas (every layer, both decoders, mixed classification losses) as one call
  vs. one call per replica (the loop the replica program had before).
- One training step with the C-decoder vs. without (the C-decoder's training overhead).

Run: ``.venv/bin/python benchmarks/bench_detr.py``.  Times are wall-clock medians; one torch thread.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
import torch

from dynamics.detr import assign, boxes, metrics, scenes
from dynamics.detr import train as T
from dynamics.detr.model import ModelSpec

torch.set_num_threads(1)


def timeit(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ap_loop(logits, bxs, sc, thresholds=metrics.COCO_THRESHOLDS):
    p = logits.sigmoid().numpy()
    B, Q, C = p.shape
    iou = boxes.pairwise_iou(boxes.cxcywh_to_xyxy(bxs), boxes.cxcywh_to_xyxy(sc.boxes)).numpy()
    valid, labels = sc.valid.numpy(), sc.labels.numpy()
    aps = []
    for thr in thresholds:
        per_class = []
        for c in range(C):
            dets, n_gt = [], 0
            for b in range(B):
                gts = [g for g in range(valid.shape[1]) if valid[b, g] and labels[b, g] == c]
                n_gt += len(gts)
                taken = set()
                for q in np.argsort(-p[b, :, c], kind="stable"):
                    best, best_iou = None, thr
                    for g in gts:
                        if g not in taken and iou[b, q, g] >= best_iou:
                            best, best_iou = g, iou[b, q, g]
                    if best is not None:
                        taken.add(best)
                    dets.append((p[b, q, c], best is not None))
            if n_gt:
                dets.sort(key=lambda d: -d[0])
                tp = np.cumsum([d[1] for d in dets])
                fp = np.cumsum([not d[1] for d in dets])
                rc, pr = tp / n_gt, tp / np.maximum(tp + fp, 1)
                pr = np.maximum.accumulate(pr[::-1])[::-1]
                idx = np.searchsorted(rc, np.linspace(0, 1, 101), side="left")
                per_class.append(np.mean([pr[i] if i < len(pr) else 0.0 for i in idx]))
        aps.append(np.mean(per_class))
    return float(np.mean(aps))


def main():
    spec = scenes.SceneSpec()
    g = torch.Generator().manual_seed(0)
    sc = scenes.sample(256, spec, g)
    Q = 30
    bx = (sc.boxes.repeat(1, 5, 1)[:, :Q] + 0.02 * torch.randn(256, Q, 4, generator=g)).clamp(0.02, 0.98)
    logits = torch.randn(256, Q, 3, generator=g)
    fast = timeit(lambda: metrics.average_precision(logits, bx, sc), 3)
    slow = timeit(lambda: ap_loop(logits, bx, sc), 1)
    a, b = metrics.average_precision(logits, bx, sc)["ap"], ap_loop(logits, bx, sc)
    print(f"COCO AP, 256 images x {Q} queries: batched {fast * 1e3:.1f} ms, loop {slow * 1e3:.1f} ms, "
          f"speed-up x{slow / fast:.1f} (|diff| {abs(a - b):.1e})")

    score = torch.rand(3 * 32, Q, 6, generator=g)
    valid = sc.valid[:96]
    fast = timeit(lambda: assign.one_to_many(score, valid))
    slow = timeit(lambda: [assign.one_to_many(score[i:i + 1], valid[i:i + 1]) for i in range(96)])
    print(f"one-to-many, 96 images: batched {fast * 1e3:.2f} ms, per image {slow * 1e3:.2f} ms, "
          f"speed-up x{slow / fast:.1f}")

    crowd = scenes.SceneSpec(min_objects=10, max_objects=30, min_size=0.06, max_size=0.2)
    small = ModelSpec(d=16, heads=2, layers=6, queries=100, ffn=32)
    R = 12
    models = [T.build_model(small, s) for s in range(R)]
    scs = [scenes.sample(1, crowd, g) for _ in range(R)]
    with torch.no_grad():
        outs = [m(scenes.render(x, crowd), c_decoder=True) for m, x in zip(models, scs)]
    fields = ("o_logits", "o_boxes", "c_logits", "c_boxes")
    stacked = T.Output(*(torch.stack([getattr(o, f) for o in outs]) for f in fields))
    sc_r = scenes.Scenes(*(torch.stack([getattr(x, f) for x in scs]) for f in ("boxes", "labels", "valid")))
    kinds = ["ia-bce", "focal"] * (R // 2)
    opts = T.TrainOptions(c_decoder=True)
    fast = timeit(lambda: T.replica_loss_terms(stacked, sc_r, opts, kinds), 3)
    slow = timeit(lambda: [T.loss_terms(o, x, dataclasses.replace(opts, cls_loss=k))
                           for o, x, k in zip(outs, scs, kinds)], 3)
    print(f"set losses, {R} replicas x 6 layers x O+C, 100 queries, 10-30 objects: one call {fast * 1e3:.1f} ms, "
          f"per replica {slow * 1e3:.1f} ms, speed-up x{slow / fast:.1f}")

    ms = ModelSpec()
    for c in (False, True):
        model = T.build_model(ms, 0)
        opts = T.TrainOptions(steps=10, warmup=1, c_decoder=c)
        t = timeit(lambda: T.train(model, spec, opts, 0), 1) / opts.steps  # noqa: B023 (called within this iteration)
        if not c:
            base = t
        print(f"train step, batch {opts.batch}, {'O+C' if c else 'O  '}: {t * 1e3:.1f} ms"
              + (f"  (x{t / base:.2f} of O alone)" if c else ""))


if __name__ == "__main__":
    main()
