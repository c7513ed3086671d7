"""The replica toy DETR (dynamics.detr.train.replica_forward) equals each ToyDETR run alone, and a seed
trained among others equals it trained alone."""

from __future__ import annotations

import numpy as np
import torch

from dynamics.detr import scenes
from dynamics.detr import train as T
from dynamics.detr.model import ModelSpec
from dynamics.engine import ReplicaParams

SPEC = ModelSpec(d=16, heads=2, layers=2, queries=6, ffn=24, canvas=16, patch=4)
SCENE = scenes.SceneSpec(16, 3, 1, 3, 0.2, 0.5)


def test_replica_forward_equals_each_model():
    models = [T.build_model(SPEC, s).double() for s in (0, 1, 2)]
    params = ReplicaParams.from_tensors({n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
                                         for n, _ in models[0].named_parameters()}, lambda n, t: True)
    imgs = [scenes.render(scenes.sample(4, SCENE, torch.Generator().manual_seed(s)), SCENE).double() for s in range(3)]
    with torch.no_grad():
        out = T.replica_forward(params, SPEC, torch.stack(imgs), models[0].cells, models[0].mpos, c_decoder=True)
        for r, m in enumerate(models):
            ref = m(imgs[r], c_decoder=True)
            for a, b in ((out.o_logits[r], ref.o_logits), (out.o_boxes[r], ref.o_boxes),
                         (out.c_logits[r], ref.c_logits), (out.c_boxes[r], ref.c_boxes)):
                assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_seed_in_batch_equals_seed_alone():
    opts = T.TrainOptions(steps=3, batch=4, warmup=1, c_decoder=True)
    both = T.train_replicas([T.build_model(SPEC, s) for s in (3, 4)], SCENE, opts, [3, 4])
    alone = T.train(T.build_model(SPEC, 4), SCENE, opts, 4)
    np.testing.assert_allclose(both[1]["loss_o"], alone["loss_o"], rtol=1e-5)
    np.testing.assert_allclose(both[1]["loss_c"], alone["loss_c"], rtol=1e-5)
