"""Measurements on a fixed evaluation set: per-sublayer gather/disperse counts and detection AP."""

from __future__ import annotations

import torch

from . import metrics, scenes
from .model import ToyDETR

POINTS = {"O": ("in", "sa", "ca", "ffn"), "C": ("in", "ca", "ffn")}


@torch.no_grad()
def probe_outputs(model: ToyDETR, images: torch.Tensor, c_decoder: bool, chunk: int = 256):
    """{(stream, layer, point): (logits (B, Q, C), boxes (B, Q, 4))} over the whole set."""
    parts: dict = {}
    for i in range(0, images.shape[0], chunk):
        out = model(images[i:i + chunk], c_decoder=c_decoder, probe=True)
        for key, (lg, bx) in out.probes.items():
            parts.setdefault(key, []).append((lg, bx))
    return {k: (torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v])) for k, v in parts.items()}


@torch.no_grad()
def gather_counts(model: ToyDETR, images: torch.Tensor, sc: scenes.Scenes, thresholds, c_decoder: bool,
                  affinities=("iou", "score")) -> list[dict]:
    """Rows (stream, layer, point, order, affinity, t, queries_per_object) for every sublayer boundary.

    ``order`` numbers the points along the forward pass (0, 1, ...) per stream, for plotting the
    sawtooth."""
    probes = probe_outputs(model, images, c_decoder)
    rows = []
    for stream in ("O", "C") if c_decoder else ("O",):
        order = 0
        for layer in range(model.spec.layers):
            for point in POINTS[stream]:
                logits, boxes = probes[(stream, layer, point)]
                for kind in affinities:
                    aff = metrics.affinity(logits, boxes, sc, kind)
                    qpo = metrics.queries_per_object(aff, sc.valid, thresholds)
                    rows += [{"stream": stream, "layer": layer, "point": point, "order": order, "affinity": kind,
                              "t": float(t), "queries_per_object": float(v)} for t, v in zip(thresholds, qpo)]
                order += 1
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
