"""Measurements on a fixed evaluation set: per-sublayer gather/disperse counts and detection AP."""

from __future__ import annotations

import torch

from . import metrics, probes, scenes
from .model import ToyDETR


@torch.no_grad()
def gather_counts(model: ToyDETR, images: torch.Tensor, sc: scenes.Scenes, thresholds, c_decoder: bool,
                  affinities=("iou", "score"), weights: dict[str, torch.Tensor] | None = None,
                  states: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[dict]:
    """Rows (stream, layer, point, order, affinity, t, queries_per_object) for every sublayer boundary.

    Each boundary's states are decoded with ``weights`` (probes.fit's per-boundary probes, in
    :func:`probes.boundary_keys` order) or, when None, with layer l's own heads (off-distribution
    before the FFN).  ``states``: the boundary states if already computed.  ``order`` numbers the
    points along the forward pass per stream, for plotting the sawtooth."""
    keys = probes.boundary_keys(model.spec.layers, c_decoder)
    x, ref = states if states is not None else probes.boundary_states(model, images, keys)
    w = probes.head_weights(model, keys) if weights is None else weights
    rows, order = [], {}
    for k, key in enumerate(keys):
        logits, boxes = probes.decode({n: t[k:k + 1] for n, t in w.items()}, x[k:k + 1], ref[k:k + 1])
        stream, layer, point = key
        i = order[stream] = order.get(stream, -1) + 1
        for kind in affinities:
            aff = metrics.affinity(logits[0], boxes[0], sc, kind)
            qpo = metrics.queries_per_object(aff, sc.valid, thresholds)
            rows += [{"stream": stream, "layer": layer, "point": point, "order": i, "affinity": kind,
                      "t": float(t), "queries_per_object": float(v)} for t, v in zip(thresholds, qpo)]
    return rows


@torch.no_grad()
def final_predictions(model: ToyDETR, images: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The O-decoder's last-layer logits (B, Q, C) and boxes (B, Q, 4): what inference uses."""
    lg, bx = [], []
    for i in range(0, images.shape[0], chunk):
        out = model(images[i:i + chunk])
        lg.append(out.o_logits[-1])
        bx.append(out.o_boxes[-1])
    return torch.cat(lg), torch.cat(bx)
