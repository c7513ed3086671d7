"""The DAC-DETR comparison as one function: a learning-rate bracket x classification losses x seeds
trained as replicas, learning curves on held-out images, the learning rate chosen per arm on a
validation set, and on-distribution gather/disperse counts of the chosen models.

Design (Hu et al. 2023 compare at equal epochs with each method's own recipe; here both arms get the
same bracket and each keeps its best):

- replica (loss, lr, seed): the seed fixes the init and the image stream, so the arms "detr" (O-decoder
  only) and "dac-detr" (+ C-decoder) with one seed share weights at step 0 and every training image;
- at every checkpoint each replica's O-decoder (what inference uses) is scored by COCO AP on a
  validation set (choosing the learning rate) and on a disjoint evaluation set (reporting it);
- :func:`delta_ap`: per (loss, checkpoint), each arm at its own best learning rate (mean validation AP
  over seeds), dAP = AP_dac - AP_detr paired by seed with a t interval;
- the chosen models' queries at every sublayer boundary are read by probes fitted per boundary
  (:mod:`.probes`) and, for comparison, by the layers' own heads.

Tables are tidy DataFrames; nothing here writes files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import runtime
from .. import stats as S
from ..config import field
from ..engine.select import chosen_lr
from . import evaluate, metrics, probes, scenes
from . import train as detr_train
from .model import ModelSpec

SUBLAYERS = {"O": (("SA", "in", "sa"), ("CA", "sa", "ca"), ("FFN", "ca", "ffn")),
             "C": (("CA", "in", "ca"), ("FFN", "ca", "ffn"))}


@dataclasses.dataclass(frozen=True)
class StudySpec:
    lrs: tuple[float, ...] = field((1e-3, 2e-3, 4e-3), "peak learning rates: the bracket both arms train")
    cls_losses: tuple[str, ...] = field(("ia-bce", "focal"), "classification losses (ia-bce: the released IoU-aware "
                                        "BCE; focal: Deformable DETR's), each trained over the bracket")
    seeds: int = field(6, "paired seeds; seed i fixes init and image stream for both arms, every lr and loss")
    checkpoints: tuple[int, ...] = field((500, 1000, 2000), "steps at which AP is measured (learning curves)")
    eval_images: int = field(256, "fixed evaluation images (AP, gather counts)")
    val_images: int = field(128, "fixed validation images (learning-rate choice only)")
    probe_images: int = field(128, "fixed images the per-boundary probes are fitted on")
    thresholds: tuple[float, ...] = field((0.5, 0.6, 0.7), "IoU (affinity) thresholds t for queries per object")
    nms: float = field(0.8, "IoU of the class-aware NMS in the secondary AP (official NMSPostProcess: 0.8)")
    root: int = field(0, "root seed (SeedSequence)")


def replica_seed(root: int, i: int) -> int:
    """Seed i of a study (init + image stream, through :func:`train.seeds_for`): from a SeedSequence."""
    return int(runtime.seed_sequence(root, i, "detr-seed").generate_state(1)[0])


def image_set(n: int, spec: scenes.SceneSpec, root: int, purpose: str, device) -> tuple[scenes.Scenes, torch.Tensor]:
    sc = scenes.sample(n, spec, runtime.torch_generator(root, 0, purpose)).to(device)
    return sc, scenes.render(sc, spec)


def run(scene_spec: scenes.SceneSpec, model_spec: ModelSpec, opts: detr_train.TrainOptions, probe: probes.ProbeSpec,
        st: StudySpec, arm: str, bar: Callable | None = None) -> dict[str, pd.DataFrame]:
    """Train one arm ("detr" or "dac-detr"; opts.c_decoder must match) over the bracket; returns tables
    curve (arm, loss, lr, seed, step, ap_val, ap, ap50, ap75), final (AP details of every replica),
    counts (chosen models: arm, loss, seed, phase, decoder, stream, layer, point, affinity, t, qpo)."""
    dev = torch.device(opts.device)
    c_dec = arm == "dac-detr"
    ev, ev_img = image_set(st.eval_images, scene_spec, st.root, "eval", dev)
    va, va_img = image_set(st.val_images, scene_spec, st.root, "val", dev)
    pr, pr_img = image_set(st.probe_images, scene_spec, st.root, "probe", dev)
    grid = [(loss, lr, i) for loss in st.cls_losses for lr in st.lrs for i in range(st.seeds)]
    seeds = [replica_seed(st.root, i) for _, _, i in grid]
    models = [detr_train.build_model(model_spec, s, opts.device) for s in seeds]
    curve, counts = [], []
    for i in range(st.seeds):  # at init the heads read their own (untrained) states: the consistency check
        m = models[grid.index((st.cls_losses[0], st.lrs[0], i))].eval()
        for row in evaluate.gather_counts(m, va_img, va, st.thresholds, c_dec):
            counts.append({"arm": arm, "loss": st.cls_losses[0], "seed": i, "phase": "init", "decoder": "heads", **row})

    def on_checkpoint(step, r, m):
        loss, lr, i = grid[r]
        lg, bx = evaluate.final_predictions(m, va_img)
        row = {"arm": arm, "loss": loss, "lr": lr, "seed": i, "step": step,
               "ap_val": metrics.average_precision(lg, bx, va)["ap"]}
        lg, bx = evaluate.final_predictions(m, ev_img)
        ap = metrics.average_precision(lg, bx, ev)
        curve.append({**row, "ap": ap["ap"], "ap50": ap["ap50"], "ap75": ap["ap75"]})

    marks = tuple(s for s in st.checkpoints if s < opts.steps)
    logs = detr_train.train_replicas(models, scene_spec, opts, seeds, callback=on_checkpoint, every=marks, bar=bar,
                                     lrs=[lr for _, lr, _ in grid], cls_losses=[loss for loss, _, _ in grid])
    curve_df = pd.DataFrame(curve)
    final = []
    chosen = best_lr(curve_df[curve_df.step == opts.steps])
    for r, (loss, lr, i) in enumerate(grid):
        m = models[r].eval()
        row = {"arm": arm, "loss": loss, "lr": lr, "seed": i, "diverged_step": int(logs[r]["diverged_step"]),
               "final_loss_o": float(np.nanmean(logs[r]["loss_o"][-max(1, opts.steps // 10):])),
               "chosen": bool(chosen.get((arm, loss)) == lr)}
        if row["chosen"]:
            lg, bx = evaluate.final_predictions(m, ev_img)
            hits, dup = metrics.confident_hits(lg, bx, ev)
            row |= {"ap_nms": metrics.average_precision(lg, bx, ev, nms=st.nms)["ap"], "confident_hits": hits,
                    "duplicate_fraction": dup}
            keys = probes.boundary_keys(model_spec.layers, c_dec)
            x, ref = probes.boundary_states(m, pr_img, keys)
            w = probes.fit(m, keys, x, ref, pr, dataclasses.replace(probe, cls_loss=loss),
                           runtime.torch_generator(st.root, i, "probe-batches"))
            states = probes.boundary_states(m, ev_img, keys)
            for decoder, weights in (("probe", w), ("heads", None)):
                for c in evaluate.gather_counts(m, ev_img, ev, st.thresholds, c_dec, weights=weights, states=states):
                    counts.append({"arm": arm, "loss": loss, "seed": i, "phase": "trained", "decoder": decoder, **c})
        final.append(row)
    return {"curve": curve_df, "final": pd.DataFrame(final), "counts": pd.DataFrame(counts)}


def best_lr(curve: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(arm, loss) -> the learning rate of highest mean validation AP over seeds (the package's rule,
    :mod:`dynamics.engine.select`: ties to the smaller rate, a replica without a score counts as worst)."""
    return chosen_lr(curve, ["arm", "loss"], "ap_val", higher_is_better=True).to_dict()


def selected(curve: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, loss, step): the rows of the learning rate chosen at that step on the validation set."""
    parts = []
    for _, at in curve.groupby("step"):
        for (arm, loss), lr in best_lr(at).items():
            parts.append(at[(at.arm == arm) & (at.loss == loss) & (at.lr == lr)])
    return pd.concat(parts, ignore_index=True)


def delta_ap(curve: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (loss, step): AP_dac - AP_detr on the evaluation set, each arm at its validation-chosen
    learning rate, paired by seed: mean, t interval, n, and the chosen learning rates."""
    sel = selected(curve[curve.step > 0])
    rows = []
    for (loss, step), g in sel.groupby(["loss", "step"]):
        w = g.pivot_table(index="seed", columns="arm", values="ap")
        if not {"detr", "dac-detr"} <= set(w.columns):
            continue
        d = (w["dac-detr"] - w["detr"]).dropna().to_numpy()
        e = S.t_interval(d, level)
        lr = g.groupby("arm").lr.first()
        rows.append({"loss": loss, "step": int(step), "ap_detr": w["detr"].mean(), "ap_dac": w["dac-detr"].mean(),
                     "delta": e.value, "ci_low": e.low, "ci_high": e.high, "n": e.n,
                     "lr_detr": lr["detr"], "lr_dac": lr["dac-detr"]})
    return pd.DataFrame(rows)


def sublayer_deltas(counts: pd.DataFrame, key: Sequence[str] = ("arm", "loss", "seed", "phase", "decoder")) -> pd.DataFrame:
    """Per seed: change of queries per object across each sublayer (after - before), per layer,
    affinity and threshold."""
    key = list(key) + ["stream", "affinity", "t", "layer"]
    wide = counts.pivot_table(index=key, columns="point", values="queries_per_object").reset_index()
    rows = []
    for stream, subs in SUBLAYERS.items():
        w = wide[wide.stream == stream]
        if w.empty:
            continue
        for name, before, after in subs:
            part = w[key].copy()
            part["sublayer"] = name
            part["delta"] = (w[after] - w[before]).to_numpy()
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def per_layer(deltas: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (arm, loss, phase, decoder, stream, affinity, layer, sublayer): the change averaged over the
    thresholds per seed, then mean and t interval over seeds."""
    g = ["arm", "loss", "phase", "decoder", "stream", "affinity", "layer", "sublayer"]
    per_seed = deltas.groupby(g + ["seed"], sort=False).delta.mean().reset_index()
    rows = []
    for k, sub in per_seed.groupby(g, sort=False):
        e = S.t_interval(sub.delta.to_numpy(), level)
        rows.append(dict(zip(g, k)) | {"mean": e.value, "ci_low": e.low, "ci_high": e.high, "n": e.n})
    return pd.DataFrame(rows)
