"""On-distribution read-out of queries at every sublayer boundary: one trained head per boundary.

Why: a decoder layer's heads (class W_c x + b, box sigmoid(logit(r_l) + MLP_l(x))) are trained on its
post-FFN states only.  Decoding the pre-SA, post-SA and post-CA states with them reads states the heads
never saw, so a change of "queries per object" across a sublayer mixes what the sublayer did with
how far off-distribution its output is.  Here every boundary (stream, layer l, point) gets its own
probe of the heads' form, initialised from layer l's trained heads and fine-tuned on that boundary's
states of held-out images (the model frozen) with the loss the stream's heads are trained with:

    O-stream boundaries: one-to-one Hungarian set loss (assign.hungarian, losses.set_loss_per_image)
    C-stream boundaries: the one-to-many rule (assign.one_to_many) on the probe's own scores

so every boundary is decoded by a head fitted to its own distribution, and the "ffn" boundary by one
that differs from the layer's heads only by the extra fine-tuning all probes get.

Shapes: K boundaries are K replicas of one program (:func:`dynamics.engine.ops.linear` over a
leading K axis): states (K, N, Q, d), references (K, N, Q, 4), probe weights (K, ...).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import field
from ..engine import ops
from . import assign, losses, scenes
from .model import ToyDETR, inverse_sigmoid

POINTS = {"O": ("in", "sa", "ca", "ffn"), "C": ("in", "ca", "ffn")}


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    steps: int = field(150, "Adam steps of each probe")
    batch: int = field(16, "images per probe step, drawn from the probe-training images")
    lr: float = field(1e-3, "probe learning rate (Adam)")
    cls_loss: str = field("ia-bce", "the classification loss the model was trained with")

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or not self.lr > 0:
            from ..errors import UserError

            raise UserError(f"probe steps >= 0, batch >= 1 and lr > 0 are required, got {self}")


def boundary_keys(layers: int, c_decoder: bool) -> list[tuple[str, int, str]]:
    return [(s, l, p) for s in (("O", "C") if c_decoder else ("O",)) for l in range(layers) for p in POINTS[s]]


@torch.no_grad()
def boundary_states(model: ToyDETR, images: torch.Tensor, keys, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """States (K, N, Q, d) and references (K, N, Q, 4) of the frozen model at the given boundaries."""
    c_dec = any(k[0] == "C" for k in keys)
    xs, refs = [], []
    for i in range(0, images.shape[0], chunk):
        pr = model(images[i:i + chunk], c_decoder=c_dec, probe=True).probes
        xs.append(torch.stack([pr[k][0] for k in keys]))
        refs.append(torch.stack([pr[k][1] for k in keys]))
    return torch.cat(xs, 1), torch.cat(refs, 1)


def head_weights(model: ToyDETR, keys) -> dict[str, torch.Tensor]:
    """Layer l's class and box heads for every key (stream, l, point), stacked (K, d_in, d_out)."""
    out: dict[str, list] = {}
    for _, l, _ in keys:
        ch, bh = model.class_heads[l], model.box_heads[l]
        for name, lin in (("cls", ch), ("box0", bh[0]), ("box1", bh[2]), ("box2", bh[4])):
            out.setdefault(name + "_w", []).append(lin.weight.detach().T)
            out.setdefault(name + "_b", []).append(lin.bias.detach())
    return {n: torch.stack(v).clone() for n, v in out.items()}


def decode(w: dict[str, torch.Tensor], x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads' form per probe: logits (K, N, Q, C), boxes sigmoid(logit(ref) + MLP(x)) (K, N, Q, 4)."""
    logits = ops.linear(x, w["cls_w"], w["cls_b"])
    h = torch.relu(ops.linear(x, w["box0_w"], w["box0_b"]))
    h = torch.relu(ops.linear(h, w["box1_w"], w["box1_b"]))
    return logits, (inverse_sigmoid(ref) + ops.linear(h, w["box2_w"], w["box2_b"])).sigmoid()


def probe_loss(logits: torch.Tensor, boxes: torch.Tensor, sc: scenes.Scenes, streams: list[str],
               cls_loss: str) -> torch.Tensor:
    """Summed over probes: each probe's set loss on its images / number of objects.  logits (K, N, Q, C);
    sc tensors (N, G, ...) shared by all probes; streams[k] "O" (one-to-one) or "C" (one-to-many)."""
    K, N, Q, _ = logits.shape
    G = sc.valid.shape[-1]
    gt = scenes.Scenes(sc.boxes.expand(K, N, G, 4).reshape(K * N, G, 4), sc.labels.expand(K, N, G).reshape(K * N, G),
                       sc.valid.expand(K, N, G).reshape(K * N, G))
    lg, bx = logits.reshape(K * N, Q, -1), boxes.reshape(K * N, Q, 4)
    is_c = torch.tensor([s == "C" for s in streams], device=logits.device).repeat_interleave(N)
    with torch.no_grad():
        pos = torch.zeros(K * N, Q, G, dtype=torch.bool, device=logits.device)
        o = ~is_c
        if o.any():
            cost = assign.hungarian_cost(lg[o], bx[o], gt.boxes[o], gt.labels[o])
            pos[o] = losses.match_to_mask(assign.hungarian(cost, gt.valid[o]), Q)
        if is_c.any():
            score = assign.matching_score(lg[is_c], bx[is_c], gt.boxes[is_c], gt.labels[is_c])
            pos[is_c] = assign.one_to_many(score, gt.valid[is_c])
    per_image = losses.set_loss_per_image(lg, bx, gt, pos, cls_loss)
    return per_image.sum() / sc.valid.sum().clamp(min=1)


def fit(model: ToyDETR, keys, x: torch.Tensor, ref: torch.Tensor, sc: scenes.Scenes, spec: ProbeSpec,
        gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Probe weights (K, ...) fitted on states x (K, N, Q, d), references ref (K, N, Q, 4) of the
    scenes sc (N images); minibatches of spec.batch images drawn with ``gen``."""
    w = {n: t.requires_grad_(True) for n, t in head_weights(model, keys).items()}
    opt = torch.optim.Adam(list(w.values()), lr=spec.lr)
    streams = [k[0] for k in keys]
    N = x.shape[1]
    for _ in range(spec.steps):
        idx = torch.randperm(N, generator=gen)[:spec.batch].to(x.device)
        logits, boxes = decode(w, x[:, idx], ref[:, idx])
        loss = probe_loss(logits, boxes, sc.subset(idx), streams, spec.cls_loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {n: t.detach() for n, t in w.items()}
