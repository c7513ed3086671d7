"""The DAC-DETR comparison's pieces through the Python API: batched replica losses, per-boundary
probes, the learning-rate choice and the paired dAP, building specs by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from dynamics import stats as S
from dynamics.detr import assign, probes, scenes, study
from dynamics.detr import train as T
from dynamics.detr.model import ModelSpec

SPEC = ModelSpec(d=16, heads=2, layers=2, queries=12, ffn=16)
SCENE = scenes.SceneSpec(min_objects=3, max_objects=8, min_size=0.06, max_size=0.2)


def test_replica_losses_in_one_call_equal_each_replica_alone():
    """Three replicas with mixed classification losses, one call == three single-model calls."""
    models = [T.build_model(SPEC, s) for s in (0, 1, 2)]
    kinds = ["ia-bce", "focal", "ia-bce"]
    g = torch.Generator().manual_seed(3)
    scs = [scenes.sample(3, SCENE, g) for _ in models]
    outs = [m(scenes.render(sc, SCENE), c_decoder=True) for m, sc in zip(models, scs)]
    stacked = T.Output(*(torch.stack([getattr(o, f) for o in outs]) for f in ("o_logits", "o_boxes", "c_logits", "c_boxes")))
    sc = scenes.Scenes(*(torch.stack([getattr(s, f) for s in scs]) for f in ("boxes", "labels", "valid")))
    opts = T.TrainOptions(c_decoder=True)
    o, c = T.replica_loss_terms(stacked, sc, opts, kinds)
    for r in range(3):
        o1, c1 = T.loss_terms(outs[r], scs[r], dataclasses.replace(opts, cls_loss=kinds[r]))
        torch.testing.assert_close(o[r], o1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c[r], c1, rtol=1e-5, atol=1e-6)
    assert (o > 0).all() and (c > 0).all()


def test_top_per_column_equals_a_full_stable_sort():
    s = torch.rand(4, 20, 5, generator=torch.Generator().manual_seed(0))
    n = torch.randint(0, 7, (4, 5), generator=torch.Generator().manual_seed(1))
    rank = s.argsort(dim=-2, descending=True, stable=True).argsort(dim=-2)
    assert torch.equal(assign.top_per_column(s, n, 6), rank < n[:, None, :])


def test_replicas_with_one_seed_see_the_same_images_and_do_not_interact():
    """Same seed and lr listed twice: identical losses; replica 0's losses do not depend on the
    others in the program (a second seed and another lr added)."""
    opts = T.TrainOptions(steps=3, batch=2, warmup=1)
    alone = T.train_replicas([T.build_model(SPEC, 5)], SCENE, opts, [5], lrs=[2e-3])
    many = T.train_replicas([T.build_model(SPEC, s) for s in (5, 5, 6)], SCENE, opts, [5, 5, 6], lrs=[2e-3, 2e-3, 8e-3])
    np.testing.assert_allclose(many[0]["loss_o"], many[1]["loss_o"], rtol=0, atol=0)
    np.testing.assert_allclose(many[0]["loss_o"], alone[0]["loss_o"], rtol=1e-5)
    assert not np.allclose(many[0]["loss_o"][1:], many[2]["loss_o"][1:])


def test_probe_from_heads_reproduces_the_heads_and_fitting_lowers_its_loss():
    model = T.build_model(SPEC, 0).eval()
    sc = scenes.sample(8, SCENE, torch.Generator().manual_seed(1))
    img = scenes.render(sc, SCENE)
    keys = probes.boundary_keys(SPEC.layers, c_decoder=False)
    x, ref = probes.boundary_states(model, img, keys)
    assert x.shape == (len(keys), 8, SPEC.queries, SPEC.d) and len(keys) == 8
    w = probes.head_weights(model, keys)
    k = keys.index(("O", 1, "ffn"))
    logits, boxes = probes.decode({n: t[k:k + 1] for n, t in w.items()}, x[k:k + 1], ref[k:k + 1])
    out = model(img)
    torch.testing.assert_close(logits[0], out.o_logits[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(boxes[0], out.o_boxes[1], rtol=1e-5, atol=1e-5)
    streams = [key[0] for key in keys]
    before = float(probes.probe_loss(*probes.decode(w, x, ref), sc, streams, "ia-bce"))
    fitted = probes.fit(model, keys, x, ref, sc, probes.ProbeSpec(steps=30, batch=8, lr=3e-3),
                        torch.Generator().manual_seed(0))
    after = float(probes.probe_loss(*probes.decode(fitted, x, ref), sc, streams, "ia-bce"))
    assert after < 0.9 * before


def _curve():
    """Two arms x two lrs x 4 seeds at one step: detr best at lr 1 (validation), dac best at lr 2."""
    rows = []
    gain = [0.01, 0.03, 0.02, 0.04]
    for i in range(4):
        for arm, lr, val, ap in (("detr", 1.0, 0.30, 0.20 + 0.01 * i), ("detr", 2.0, 0.20, 0.90),
                                 ("dac-detr", 1.0, 0.10, 0.90), ("dac-detr", 2.0, 0.40, 0.20 + 0.01 * i + gain[i])):
            rows.append({"arm": arm, "loss": "ia-bce", "lr": lr, "seed": i, "step": 100, "ap_val": val, "ap": ap})
    return pd.DataFrame(rows), np.array(gain)


def test_delta_ap_pairs_by_seed_at_each_arms_validation_best_lr():
    curve, gain = _curve()
    assert study.best_lr(curve) == {("dac-detr", "ia-bce"): 2.0, ("detr", "ia-bce"): 1.0}
    d = study.delta_ap(curve).iloc[0]
    e = S.t_interval(gain)
    assert (d.lr_detr, d.lr_dac, d.n) == (1.0, 2.0, 4)
    np.testing.assert_allclose([d.delta, d.ci_low, d.ci_high], [e.value, e.low, e.high], rtol=1e-12)


def test_sublayer_deltas_and_per_layer_interval():
    rows = []
    for seed, (a, b) in enumerate(((1.0, 3.0), (2.0, 3.0), (1.0, 4.0))):
        for point, v in (("in", a), ("sa", a - 0.5), ("ca", b), ("ffn", b)):
            rows.append({"arm": "detr", "loss": "ia-bce", "seed": seed, "phase": "trained", "decoder": "probe",
                         "stream": "O", "layer": 0, "point": point, "affinity": "iou", "t": 0.5,
                         "queries_per_object": v})
    g = study.per_layer(study.sublayer_deltas(pd.DataFrame(rows)))
    ca = g[g.sublayer == "CA"].iloc[0]
    e = S.t_interval(np.array([2.5, 1.5, 3.5]))
    np.testing.assert_allclose([ca["mean"], ca.ci_low, ca.ci_high], [e.value, e.low, e.high])
    assert g[g.sublayer == "SA"].iloc[0]["mean"] == -0.5
