"""The toy DETR's O/C decoders, its training loop, and the plane model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.detr import analytic, evaluate, scenes
from dynamics.detr import train as T
from dynamics.detr.model import ModelSpec

SPEC = ModelSpec(d=32, heads=2, layers=2, queries=8, ffn=32)
SCENE = scenes.SceneSpec()


def batch(n=4, seed=0):
    sc = scenes.sample(n, SCENE, torch.Generator().manual_seed(seed))
    return sc, scenes.render(sc, SCENE)


def test_c_decoder_adds_no_parameters_and_shares_modules():
    model = T.build_model(SPEC, 0)
    names = {n for n, _ in model.named_parameters()}
    assert not any("cdec" in n or "aux" in n for n in names)
    sc, img = batch()
    out = model(img, c_decoder=True, probe=True)
    assert out.o_logits.shape == out.c_logits.shape == (2, 4, 8, 3)
    assert out.c_boxes.shape == (2, 4, 8, 4)
    # the C-stream's layer-0 input is the O-stream's post-self-attention state (official lid == 0 rule)
    for a, b in zip(out.probes[("C", 0, "in")], out.probes[("O", 0, "sa")]):
        assert torch.equal(a, b)
    # same init from the same seed, with or without the C-decoder
    other = T.build_model(SPEC, 0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


def test_c_loss_trains_cross_attention_but_not_later_self_attention():
    model = T.build_model(SPEC, 0)
    sc, img = batch()
    out = model(img, c_decoder=True)
    _, c = T.loss_terms(out, sc, T.TrainOptions(c_decoder=True))
    c.backward()
    g = {n: p.grad for n, p in model.named_parameters()}
    assert g["layers.1.ca.q.weight"].abs().sum() > 0
    assert g["layers.1.lin1.weight"].abs().sum() > 0
    # layer 1's self-attention is not on the C path; layer 0's is (the C input is its output)
    assert g["layers.1.sa.in_proj_weight"] is None or g["layers.1.sa.in_proj_weight"].abs().sum() == 0
    assert g["layers.0.sa.in_proj_weight"].abs().sum() > 0


@pytest.mark.parametrize("cls_loss", ["focal", "ia-bce"])
def test_training_is_seeded_and_finite(cls_loss):
    opts = T.TrainOptions(steps=3, batch=4, c_decoder=True, cls_loss=cls_loss)
    logs = []
    for _ in range(2):
        m = T.build_model(SPEC, 7)
        logs.append(T.train(m, SCENE, opts, 7))
    assert np.isfinite(logs[0]["loss_o"]).all() and np.isfinite(logs[0]["loss_c"]).all()
    assert np.array_equal(logs[0]["loss_o"], logs[1]["loss_o"])
    assert int(logs[0]["diverged_step"]) == -1


def test_gather_counts_rows_cover_every_sublayer():
    model = T.build_model(SPEC, 0).eval()
    sc, img = batch(6)
    rows = evaluate.gather_counts(model, img, sc, [0.5, 0.7], c_decoder=True)
    o = {(r["layer"], r["point"]) for r in rows if r["stream"] == "O"}
    c = {(r["layer"], r["point"]) for r in rows if r["stream"] == "C"}
    assert o == {(l, p) for l in range(2) for p in ("in", "sa", "ca", "ffn")}
    assert c == {(l, p) for l in range(2) for p in ("in", "ca", "ffn")}
    assert all(r["queries_per_object"] >= 0 for r in rows)


def test_model_spec_rejects_zero_queries():
    from dynamics.errors import UserError
    with pytest.raises(UserError, match="queries must be at least 1"):
        ModelSpec(queries=0)


# ---------------------------------------------------------------- plane model

def test_plane_hard_limit_matches_small_temperature():
    s = analytic.PlaneSpec(trials=40, tau=1e-4)
    theory, sim = analytic.hard_limit_count(s, np.random.default_rng(0))
    rel = np.linalg.norm(sim.mean(1) - theory.mean(1)) / np.linalg.norm(theory.mean(1))
    assert rel < 0.05
    assert theory.mean(1)[-1] > theory.mean(1)[0]  # CA only gathers


def test_plane_self_attention_signs_on_a_close_pair():
    q = np.array([[[0.50, 0.5], [0.52, 0.5], [0.9, 0.9]]])
    gap = lambda x: np.linalg.norm(x[0, 0] - x[0, 1])
    assert gap(analytic.self_attention(q, 0.002, 0.5, repulsive=True)) > gap(q)
    assert gap(analytic.self_attention(q, 0.002, 0.5, repulsive=False)) < gap(q)


def test_plane_ca_only_ends_above_o_type():
    s = analytic.PlaneSpec(trials=30)
    _, c = analytic.run(s, "c", np.random.default_rng(1))
    _, o = analytic.run(s, "o-rep", np.random.default_rng(1))
    assert c.mean(1)[-1] > o.mean(1)[-1]


def test_plane_spec_rejects_bad_values():
    from dynamics.errors import UserError
    with pytest.raises(UserError, match="at least 1 query"):
        analytic.PlaneSpec(queries=0)
    with pytest.raises(UserError, match="objects must lie on the canvas"):
        analytic.PlaneSpec(high=1.5)
