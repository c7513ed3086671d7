"""DAC-DETR (Hu et al., NeurIPS 2023): cross-attention gathers queries, self-attention disperses them.

Three cells (grid key ``model``):

- ``plane``: the 2-D particle model (:mod:`dynamics.detr.analytic`): queries per object within a
  radius after every sublayer for the O-type decoder with repulsive (learned) or averaging (untrained)
  self-attention and for the CA-only C-type decoder; one-at-a-time sweeps over the CA and SA
  temperatures, the step size and the numbers of queries and objects; the tau -> 0 closed form.
- ``detr``: the toy DETR trained with the O-decoder only (one-to-one Hungarian loss).
- ``dac-detr``: the same model, seeds, init and image stream, trained with the auxiliary C-decoder
  (no self-attention, shared CA/FFN/heads, one-to-many assignment) added to the loss.

Measured on a fixed evaluation set, at initialisation and after training: the average number of
queries per object whose decoded box has IoU > t with it (t in ``thresholds``), before and after every
self-attention, cross-attention and FFN (each state decoded with that layer's heads and reference
box), and COCO AP of the O-decoder's last layer (what inference uses).

Paper statements (README of huzhengdongcs/DAC-DETR and the abstract): CA gathers queries around each
object, SA disperses them; the C-decoder gives more queries per object and better AP (+3.4 AP on
Deformable-DETR at 12 epochs).  The exact affinity and the before/after protocol of the paper's
figure were not recoverable; IoU is the affinity of the claims, the matching score 0.7 IoU + 0.3 p is
reported alongside.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pandas as pd
import torch

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.detr import analytic, evaluate, metrics, scenes
from dynamics.detr import train as detr_train
from dynamics.detr.model import ModelSpec
from dynamics.experiment import Experiment
from dynamics.stats import Band

NAME = "dacdetr-gather"
REF = "Hu et al. 2023 (DAC-DETR), Sec. 1 / README fig. analyse"
SUBLAYERS = {"O": (("SA", "in", "sa"), ("CA", "sa", "ca"), ("FFN", "ca", "ffn")),
             "C": (("CA", "in", "ca"), ("FFN", "ca", "ffn"))}


@dataclasses.dataclass(frozen=True)
class DacConfig:
    model: Literal["plane", "detr", "dac-detr"] = field("detr", "cell: plane model, toy DETR, or toy DETR + C-decoder")
    # --- the plane model
    plane_objects: int = field(5, "plane: objects, uniform on [0.1, 0.9]^2")
    plane_queries: int = field(100, "plane: queries, uniform on [0, 1]^2")
    plane_background: int = field(50, "plane: background keys, uniform on [0, 1]^2")
    plane_layers: int = field(6, "plane: decoder layers")
    tau: float = field(0.01, "plane: CA temperature (squared canvas units)")
    tau_s: float = field(0.002, "plane: SA temperature")
    eta: float = field(0.5, "plane: step size of every sublayer, in (0, 1]")
    radius: float = field(0.05, "plane: a query counts for an object within this distance")
    plane_trials: int = field(200, "plane: independent scenes (vectorised)")
    hard_tau: float = field(1e-4, "plane: small CA temperature compared with the tau -> 0 closed form")
    sweep_tau: tuple[float, ...] = field((0.003, 0.01, 0.03), "plane sweep: CA temperatures")
    sweep_tau_s: tuple[float, ...] = field((0.0005, 0.002, 0.008), "plane sweep: SA temperatures")
    sweep_eta: tuple[float, ...] = field((0.25, 0.5, 0.75), "plane sweep: step sizes")
    sweep_queries: tuple[int, ...] = field((25, 50, 100, 200), "plane sweep: numbers of queries")
    sweep_objects: tuple[int, ...] = field((2, 5, 10), "plane sweep: numbers of objects")
    # --- scenes
    canvas: int = field(32, "image side in pixels")
    n_classes: int = field(3, "object classes")
    min_objects: int = field(1, "fewest boxes per image")
    max_objects: int = field(6, "most boxes per image")
    min_size: float = field(0.12, "smallest box side, fraction of the canvas")
    max_size: float = field(0.4, "largest box side, fraction of the canvas (<= 1: boxes stay on the canvas)")
    # --- model
    d: int = field(64, "model width")
    heads: int = field(4, "attention heads")
    layers: int = field(3, "decoder layers")
    queries: int = field(30, "object queries (learned content + reference box each)")
    ffn: int = field(128, "FFN hidden width")
    patch: int = field(4, "pixels per memory cell side (memory grid = canvas / patch)")
    # --- training
    steps: int = field(2000, "training steps, equal for detr and dac-detr")
    batch: int = field(32, "images per step")
    lr: float = field(2e-3, "AdamW peak learning rate (linear warmup, cosine decay)")
    warmup: int = field(100, "warmup steps")
    pos_threshold: float = field(0.4, "one-to-many: positive when 0.7 IoU + 0.3 p >= this")
    max_pos: int = field(6, "one-to-many: at most this many positives per object")
    iou_weight: float = field(0.7, "one-to-many score: weight of IoU (1 - it weights the class probability)")
    assign_boxes: Literal["o", "c"] = field("o", "one-to-many IoU from O-decoder boxes (official) or C-decoder boxes")
    cls_loss: Literal["focal", "ia-bce"] = field(
        "focal", "classification loss of both decoders: focal, hard targets (Deformable DETR) or ia-bce, IoU-aware "
                 "soft targets with rank weights (the released DAC-DETR code)")
    # --- measurement
    thresholds: tuple[float, ...] = field((0.5, 0.6, 0.7), "IoU thresholds t for queries per object")
    eval_images: int = field(512, "fixed evaluation images (same for every run)")
    curve_every: int = field(500, "learning-curve evaluation every this many steps (0: none)")
    nms: float = field(0.8, "IoU of the class-aware NMS in the secondary AP (official NMSPostProcess: 0.8)")
    seeds: int = field(4, "seeds per DETR cell; seed i fixes init and image stream for both variants")
    seed: int = field(0, "root seed (run i uses seed + i)")
    threads: int = field(1, "torch CPU threads (small tensors: 1 is fastest on a shared machine)")
    device: str = field("cpu", "torch device, e.g. cpu or cuda")

    def __post_init__(self) -> None:
        for name in ("thresholds", "sweep_tau", "sweep_tau_s", "sweep_eta", "sweep_queries", "sweep_objects"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # manifest.json stores them as lists
        for t in self.thresholds:
            require(0 <= t <= 1, f"threshold {t:g} is outside [0, 1] (IoU thresholds)")
        require(len(self.thresholds) >= 1, "thresholds must list at least one IoU threshold")
        for name in ("pos_threshold", "iou_weight", "nms"):
            v = getattr(self, name)
            require(0 <= v <= 1, f"{name}={v:g} is outside [0, 1]")
        require(self.queries >= 1, f"queries must be at least 1, got {self.queries}")
        require(self.queries >= self.max_objects,
                f"queries={self.queries} < max_objects={self.max_objects}: one-to-one matching needs a query per object")
        require(min(self.sweep_queries, default=1) >= 1, f"sweep_queries must be >= 1, got {self.sweep_queries}")
        require(min(self.sweep_objects, default=1) >= 1, f"sweep_objects must be >= 1, got {self.sweep_objects}")
        for v in self.sweep_tau + self.sweep_tau_s + (self.hard_tau,):
            require(v > 0, f"temperatures must be positive, got {v:g}")
        for v in self.sweep_eta:
            require(0 < v <= 1, f"sweep_eta values must be in (0, 1], got {v:g}")
        self.plane_spec()
        self.scene_spec()
        self.model_spec()
        require(self.steps >= 1 and self.batch >= 1 and self.warmup >= 0, "steps and batch must be >= 1")
        require(self.lr > 0, f"lr must be positive, got {self.lr:g}")
        require(self.max_pos >= 1, f"max_pos must be at least 1, got {self.max_pos}")
        require(self.eval_images >= 1 and self.seeds >= 1, "eval_images and seeds must be >= 1")
        require(self.curve_every >= 0, "curve_every must be >= 0")
        require(self.threads >= 1, "threads must be >= 1")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"unknown device {self.device!r}")

    def plane_spec(self, **over) -> analytic.PlaneSpec:
        return analytic.PlaneSpec(**{"objects": self.plane_objects, "queries": self.plane_queries,
                                     "background": self.plane_background, "layers": self.plane_layers,
                                     "tau": self.tau, "tau_s": self.tau_s, "eta": self.eta,
                                     "radius": self.radius, "trials": self.plane_trials, **over})

    def scene_spec(self) -> scenes.SceneSpec:
        return scenes.SceneSpec(self.canvas, self.n_classes, self.min_objects, self.max_objects,
                                self.min_size, self.max_size)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.n_classes, self.canvas, self.d, self.heads, self.layers, self.queries,
                         self.ffn, self.patch)

    def train_options(self) -> detr_train.TrainOptions:
        return detr_train.TrainOptions(steps=self.steps, batch=self.batch, lr=self.lr, warmup=self.warmup,
                                       c_decoder=self.model == "dac-detr", assign_boxes=self.assign_boxes,
                                       pos_threshold=self.pos_threshold, max_pos=self.max_pos,
                                       iou_weight=self.iou_weight, cls_loss=self.cls_loss, device=self.device)


# ------------------------------------------------------------------------------------------ plane

SWEEPS = {"tau": "sweep_tau", "tau_s": "sweep_tau_s", "eta": "sweep_eta", "queries": "sweep_queries",
          "objects": "sweep_objects"}


def _se_arr(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def _plane_signs(spec: analytic.PlaneSpec, seed: int) -> list[dict]:
    """Per kind: final count, summed CA and SA changes, fraction of CA (SA) sublayers that raise (lower) it."""
    rows = []
    for k, kind in enumerate(analytic.KINDS):
        points, counts = analytic.run(spec, kind, np.random.default_rng([seed, k]))
        m = counts.mean(1)
        d = {p: [] for p in ("sa", "ca")}
        for i, (_, point) in enumerate(points):
            if point in d:
                d[point].append(m[i] - m[i - 1])
        rows.append({"kind": kind, "final": m[-1], "initial": m[0],
                     "sum_dCA": float(np.sum(d["ca"])), "sum_dSA": float(np.sum(d["sa"])) if d["sa"] else np.nan,
                     "frac_CA_up": float(np.mean(np.array(d["ca"]) > 0)),
                     "frac_SA_down": float(np.mean(np.array(d["sa"]) < 0)) if d["sa"] else np.nan,
                     "frac_SA_not_down": float(np.mean(np.array(d["sa"]) >= 0)) if d["sa"] else np.nan})
    return rows


def run_plane(cfg: DacConfig, ctx) -> dict[str, pd.DataFrame]:
    spec = cfg.plane_spec()
    rows = []
    for _k, kind in enumerate(analytic.KINDS):  # the same scenes for every kind (same rng stream)
        points, counts = analytic.run(spec, kind, np.random.default_rng([cfg.seed, 0]))
        delta = np.diff(counts, axis=0, prepend=counts[:1])  # (P, trials): change across the sublayer
        for i, (layer, point) in enumerate(points):
            rows.append({"kind": kind, "layer": layer, "point": point, "order": i,
                         "count_mean": counts[i].mean(), "count_se": _se_arr(counts[i]),
                         "delta_mean": delta[i].mean(), "delta_se": _se_arr(delta[i])})
    sweep_rows = []
    settings = [(p, v) for p, attr in SWEEPS.items() for v in getattr(cfg, attr)]
    bar = ctx.bar(len(settings) + 3, "plane sweeps")
    for p, v in settings:
        for r in _plane_signs(dataclasses.replace(spec, **{p: v}), cfg.seed):
            sweep_rows.append({"parameter": p, "value": float(v), **r})
        bar.update(1)
    limit_rows = []
    for tau in sorted({cfg.tau, 1e-3, cfg.hard_tau}, reverse=True):
        theory, sim = analytic.hard_limit_count(dataclasses.replace(spec, tau=tau), np.random.default_rng([cfg.seed, 9]))
        for layer in range(theory.shape[0]):
            limit_rows.append({"tau": tau, "ca_layers": layer, "theory": theory[layer].mean(), "simulation": sim[layer].mean()})
        bar.update(1)
    bar.close()
    return {"plane": pd.DataFrame(rows), "plane_sweep": pd.DataFrame(sweep_rows), "plane_limit": pd.DataFrame(limit_rows)}


# ------------------------------------------------------------------------------------------- DETR

def run_detr(cfg: DacConfig, ctx) -> dict[str, pd.DataFrame]:
    scene_spec, model_spec, opts = cfg.scene_spec(), cfg.model_spec(), cfg.train_options()
    dev = torch.device(cfg.device)
    ev = scenes.sample(cfg.eval_images, scene_spec, torch.Generator().manual_seed(10_000 + cfg.seed)).to(dev)
    images = scenes.render(ev, scene_spec)
    curve_n = min(256, cfg.eval_images)
    c_dec = cfg.model == "dac-detr"
    counts, aps, curve = [], [], []
    seeds = [cfg.seed + s for s in range(cfg.seeds)]
    models = [detr_train.build_model(model_spec, seed, cfg.device) for seed in seeds]
    for seed, model in zip(seeds, models):
        model.eval()
        for r in evaluate.gather_counts(model, images, ev, cfg.thresholds, c_dec):
            counts.append({"seed": seed, "phase": "init", **r})

    def on_curve(step, r, m):
        lg, bx = evaluate.final_predictions(m, images[:curve_n])
        sub = ev.subset(slice(0, curve_n))
        qpo = metrics.queries_per_object(metrics.affinity(lg, bx, sub), sub.valid, cfg.thresholds)
        curve.append({"seed": seeds[r], "step": step, "ap": metrics.average_precision(lg, bx, sub)["ap"],
                      **{f"qpo_{t:g}": float(v) for t, v in zip(cfg.thresholds, qpo)}})

    # all seeds train as replicas of one program (dynamics.engine); each keeps its own init and images
    logs = detr_train.train_replicas(models, scene_spec, opts, seeds, callback=on_curve if cfg.curve_every else None,
                                     every=cfg.curve_every, bar=ctx.bar)
    for seed, model, log in zip(seeds, models, logs):
        model.eval()
        for r in evaluate.gather_counts(model, images, ev, cfg.thresholds, c_dec):
            counts.append({"seed": seed, "phase": "trained", **r})
        lg, bx = evaluate.final_predictions(model, images)
        ap = metrics.average_precision(lg, bx, ev)
        ap_nms = metrics.average_precision(lg, bx, ev, nms=cfg.nms)
        hits, dup = metrics.confident_hits(lg, bx, ev)
        tail = log["loss_o"][-max(1, cfg.steps // 10):]
        aps.append({"seed": seed, "ap": ap["ap"], "ap50": ap["ap50"], "ap75": ap["ap75"], "ap_nms": ap_nms["ap"],
                    "confident_hits": hits, "duplicate_fraction": dup,
                    "final_loss_o": float(np.nanmean(tail)), "diverged_step": int(log["diverged_step"])})
    out = {"counts": pd.DataFrame(counts), "ap": pd.DataFrame(aps)}
    if curve:
        out["curve"] = pd.DataFrame(curve)
    return out


def run_batch(cfgs, ctx):
    old = torch.get_num_threads()
    torch.set_num_threads(cfgs[0].threads)
    try:
        return [run_plane(c, ctx) if c.model == "plane" else run_detr(c, ctx) for c in cfgs]
    finally:
        torch.set_num_threads(old)


# -------------------------------------------------------------------------------------- summarize

def _se(x: pd.Series) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def sublayer_deltas(counts: pd.DataFrame) -> pd.DataFrame:
    """Per seed: change of queries per object across each sublayer (after - before)."""
    key = ["model", "seed", "phase", "stream", "affinity", "t", "layer"]
    wide = counts.pivot_table(index=key, columns="point", values="queries_per_object").reset_index()
    rows = []
    for stream, subs in SUBLAYERS.items():
        w = wide[wide.stream == stream]
        for name, before, after in subs:
            part = w[key].copy()
            part["sublayer"] = name
            part["delta"] = (w[after] - w[before]).to_numpy()
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def summarize(tables, base):
    out = {}
    if "counts" in tables:
        counts = tables["counts"]
        g = counts.groupby(["model", "phase", "stream", "affinity", "t", "layer", "point", "order"], sort=False)
        table = g.queries_per_object.agg(mean="mean", se=_se, n_seeds="count").reset_index()
        out["table"] = table[table.affinity == "iou"].drop(columns="affinity").reset_index(drop=True)
        out["counts_score"] = table[table.affinity == "score"].drop(columns="affinity").reset_index(drop=True)
        out["counts"] = counts
        d = sublayer_deltas(counts)
        out["deltas"] = d.groupby(["model", "phase", "stream", "affinity", "t", "layer", "sublayer"], sort=False
                                  ).delta.agg(mean="mean", se=_se, n_seeds="count").reset_index()
        ap = tables["ap"]
        out["ap"] = ap
        s = ap.groupby("model").agg(ap_mean=("ap", "mean"), ap_sd=("ap", "std"), ap50_mean=("ap50", "mean"),
                                    ap75_mean=("ap75", "mean"), ap_nms_mean=("ap_nms", "mean"),
                                    confident_hits=("confident_hits", "mean"),
                                    duplicate_fraction=("duplicate_fraction", "mean"),
                                    n_seeds=("ap", "count")).reset_index()
        out["ap_summary"] = s
        out["headline"] = headline(counts, ap, base)
    if "curve" in tables:
        out["curve"] = tables["curve"]
    for name in ("plane", "plane_sweep", "plane_limit"):
        if name in tables:
            out[name] = tables[name].drop(columns=[c for c in ("model",) if c in tables[name].columns])
    if "table" not in out and "plane" in out:
        out["table"] = out["plane"]
    return out


def _paired_ap(ap: pd.DataFrame, col: str = "ap") -> np.ndarray:
    w = ap.pivot_table(index="seed", columns="model", values=col)
    if not {"detr", "dac-detr"} <= set(w.columns):
        return np.array([])
    return (w["dac-detr"] - w["detr"]).dropna().to_numpy()


def _totals(counts: pd.DataFrame, model: str, phase: str, stream: str, sublayer: str, affinity="iou",
            first_layer: int = 0) -> pd.DataFrame:
    """Per (seed, t): sublayer change summed over decoder layers >= first_layer."""
    d = sublayer_deltas(counts[(counts.model == model) & (counts.phase == phase) & (counts.stream == stream)
                               & (counts.affinity == affinity) & (counts.layer >= first_layer)])
    return d[d.sublayer == sublayer].groupby(["t", "seed"]).delta.sum().reset_index()


def _final(counts: pd.DataFrame, model: str, stream: str, phase="trained", affinity="iou") -> pd.DataFrame:
    last = counts.layer.max()
    c = counts[(counts.model == model) & (counts.stream == stream) & (counts.phase == phase)
               & (counts.affinity == affinity) & (counts.layer == last) & (counts.point == "ffn")]
    return c.set_index(["t", "seed"]).queries_per_object


def _fmt(series_by_t) -> str:
    return "; ".join(f"t={t:g}: {m:+.3f} ± {se:.3f}" for t, (m, se) in series_by_t.items())


def headline(counts, ap, base) -> pd.DataFrame:
    rows = []
    for t in base.thresholds:
        row = {"t": t}
        for model in ("detr", "dac-detr"):
            if (counts.model == model).any():
                for phase in ("init", "trained"):
                    for sub in ("SA", "CA"):
                        tot = _totals(counts, model, phase, "O", sub)
                        row[f"{model} {phase} ΣΔ{sub}"] = tot[tot.t == t].delta.mean()
        if (counts.model == "dac-detr").any() and (counts.model == "detr").any():
            row["O final (detr)"] = _final(counts, "detr", "O").xs(t).mean()
            row["O final (dac-detr)"] = _final(counts, "dac-detr", "O").xs(t).mean()
            row["C final (dac-detr)"] = _final(counts, "dac-detr", "C").xs(t).mean()
        rows.append(row)
    h = pd.DataFrame(rows)
    diff = _paired_ap(ap)
    s = ap.groupby("model").ap.agg(["mean", "std"])
    if diff.size:
        h["AP detr"] = s.loc["detr", "mean"]
        h["AP dac-detr"] = s.loc["dac-detr", "mean"]
        h["ΔAP (paired)"] = diff.mean()
    return h


# ------------------------------------------------------------------------------------------- plot

def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    written = {}
    if "plane" in tables:
        p = tables["plane"]
        fig, ax = subplots(figsize=(6.4, 3.2))
        for kind, sub in p.groupby("kind", sort=False):
            ax.errorbar(sub.order, sub.count_mean, yerr=sub.count_se, marker="o", ms=3, capsize=2, label=kind)
        ax.set(xlabel="sublayer boundary (in / sa / ca per layer)", ylabel=f"queries within r={cfg.radius:g} per object",
               title=f"Plane model: {cfg.plane_queries} queries, {cfg.plane_objects} objects, "
                     f"tau={cfg.tau:g}, tau_s={cfg.tau_s:g}, eta={cfg.eta:g}")
        ax.legend(fontsize=7)
        written["plane_sawtooth"] = fig
        sw = tables["plane_sweep"]
        params = list(dict.fromkeys(sw.parameter))
        fig, axes = subplots(2, len(params), figsize=(3.0 * len(params), 5.2), sharey="row", squeeze=False)
        for j, par in enumerate(params):
            part = sw[sw.parameter == par]
            for i, (kind, sub) in enumerate(part.groupby("kind", sort=False)):
                axes[0][j].plot(sub.value, sub.final, marker="o", ms=3, color=f"C{i}", label=kind)
                axes[1][j].plot(sub.value, sub.sum_dCA, marker="o", ms=3, color=f"C{i}", label=f"{kind} ΣΔCA")
                if kind != "c":
                    axes[1][j].plot(sub.value, sub.sum_dSA, marker="s", ms=3, ls="--", color=f"C{i}",
                                    label=f"{kind} ΣΔSA")
            for ax in axes[:, j]:
                values = sorted(part.value.unique())
                ax.set_xscale("log" if par in ("tau", "tau_s", "queries") else "linear")
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.minorticks_off()
            axes[1][j].axhline(0, color="k", lw=0.5)
            axes[1][j].set_xlabel(par)
        axes[0][0].set_ylabel("final queries per object")
        axes[1][0].set_ylabel("summed change across sublayers")
        axes[0][-1].legend(fontsize=7)
        axes[1][-1].legend(fontsize=6)
        fig.suptitle("Plane model sweeps (one parameter at a time, others at default)")
        written["plane_sweeps"] = fig
        lim = tables["plane_limit"]
        fig, ax = subplots(figsize=(4.2, 3.0))
        th = lim.groupby("ca_layers").theory.first()
        for tau, sub in lim.groupby("tau"):
            ax.plot(sub.ca_layers, sub.simulation, marker="o", ms=3, label=f"simulation tau={tau:g}")
        ax.plot(th.index, th.values, "k--", lw=1.5, zorder=3, label="tau -> 0 closed form")
        ax.set(xlabel="CA-only layers", ylabel="queries per object", title="C-type decoder: closed form vs simulation")
        ax.legend(fontsize=7)
        written["plane_limit"] = fig
    if "table" in tables and "model" in tables["table"].columns:
        tab = tables["table"]
        ts = sorted(tab.t.unique())
        fig, axes = subplots(1, len(ts), figsize=(4.0 * len(ts), 3.2), sharey=False, squeeze=False)
        styles = {("detr", "O"): ("C0", "-"), ("dac-detr", "O"): ("C1", "-"), ("dac-detr", "C"): ("C2", "-")}
        for ax, t in zip(axes[0], ts):
            for (model, stream), (col, _) in styles.items():
                for phase, ls in (("trained", "-"), ("init", ":")):
                    sub = tab[(tab.t == t) & (tab.model == model) & (tab.stream == stream) & (tab.phase == phase)]
                    if sub.empty:
                        continue
                    x = sub.layer + sub.point.map({"in": 0.0, "sa": 0.25, "ca": 0.5, "ffn": 0.75})
                    ax.errorbar(x, sub["mean"], yerr=sub.se, color=col, ls=ls, marker="o", ms=3, capsize=2,
                                label=f"{model} {stream}-stream ({phase})")
            ax.set(title=f"IoU > {t:g}", xlabel="layer l + (in 0, sa .25, ca .5, ffn .75)")
        axes[0][0].set_ylabel("queries per object")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle("Toy DETR: queries per object at every sublayer boundary (mean ± s.e. over seeds)", y=1.03)
        written["detr_sublayers"] = fig
        ap = tables["ap"]
        fig, axes = subplots(1, 2, figsize=(8.4, 3.0), squeeze=False)
        ax = axes[0][0]
        models = list(dict.fromkeys(ap.model))
        wide = ap.pivot_table(index="seed", columns="model", values="ap")[models]
        for _seed, row in wide.iterrows():  # paired design: one line per seed
            ax.plot(range(len(models)), row.to_numpy(), color="0.7", marker="o", ms=4, zorder=1)
        for i, model in enumerate(models):
            x = wide[model].dropna()
            ax.errorbar([i + 0.1], [x.mean()], yerr=[x.std(ddof=1) if len(x) > 1 else 0], fmt="ks", ms=4, capsize=3)
        ax.set_xticks(range(len(models)), models)
        ax.set_xlim(-0.4, len(models) - 0.6)
        ax.set(ylabel="COCO AP (O-decoder)", title="AP per seed (grey, paired) and mean ± sd")
        if "curve" in tables:
            ax = axes[0][1]
            cur = tables["curve"]
            for model, sub in cur.groupby("model", sort=False):
                m = sub.groupby("step").ap.mean()
                ax.plot(m.index, m.values, marker="o", ms=3, label=model)
            ax.set(xlabel="step", ylabel="AP (eval subset)", title="learning curves (mean over seeds)")
            ax.legend(fontsize=7)
        written["detr_ap"] = fig
    return written


# ------------------------------------------------------------------------------------------ claims

def _sig_fraction(tot: pd.DataFrame, thresholds, sign: int) -> tuple[float, dict]:
    """Fraction of thresholds at which sign * (mean +- 2 s.e. bound over seeds) clears 0, and the values."""
    vals, ok = {}, []
    for t in thresholds:
        x = tot[np.isclose(tot.t, t)].delta
        if x.empty:
            continue
        m, se = float(x.mean()), _se(x)
        vals[t] = (m, se)
        bound = m - 2 * se if sign > 0 else -(m + 2 * se)
        ok.append(bound > 0)
    return (float(np.mean(ok)) if ok else np.nan), vals


def _per_seed(tot: pd.DataFrame, thresholds) -> np.ndarray:
    """Per seed: the change averaged over the IoU thresholds (one number per independent seed)."""
    sub = tot[np.isclose(tot.t.to_numpy()[:, None], np.asarray(thresholds, float)[None, :]).any(1)]
    return sub.groupby("seed").delta.mean().to_numpy()


_PLANE = ("plane_trials", "plane_layers", "plane_queries", "plane_objects", "tau", "tau_s", "eta", "radius", "seed")
_DETR = ("seeds", "seed", "steps", "thresholds", "layers", "queries", "lr", "batch")
_PLANE_NOTE = " The plane model's repulsive SA and attractive CA are built in, so the sign is its construction."
CLAIMS = (
    ClaimSpec("plane-ca-gathers", "consistency",
              "Plane model, O-type decoder (repulsive SA): every CA sublayer raises the mean number of queries within "
              "r of an object (fraction of CA sublayers with mean - 2 s.e. > 0 over trials)." + _PLANE_NOTE,
              "collapse_detr.md D5/D7(e); DAC-DETR Sec. 1", Band.above(1.0), _PLANE),
    ClaimSpec("plane-sa-rep-disperses", "consistency",
              "Plane model, O-type decoder: every repulsive (learned) SA sublayer lowers the count (fraction of SA "
              "sublayers with mean + 2 s.e. < 0 over trials)." + _PLANE_NOTE,
              "collapse_detr.md D5/D7(e); DAC-DETR Sec. 1", Band.above(1.0), _PLANE),
    ClaimSpec("plane-sa-avg-no-disperse", "consistency",
              "Plane model: averaging (untrained) SA never significantly lowers the count (fraction of SA_avg sublayers "
              "with mean + 2 s.e. >= 0); untrained attention is attractive (Geshkovski et al. 2023).",
              "collapse_detr.md C5/D5", Band.above(1.0), _PLANE),
    ClaimSpec("plane-c-more-than-o", "consistency",
              "Plane model: the CA-only C-type decoder ends with more queries per object than the O-type decoder "
              "(ratio of final counts > 1)." + _PLANE_NOTE, "collapse_detr.md D5/D7(e)", Band.above(1.0), _PLANE),
    ClaimSpec("plane-ca-hard-limit", "consistency",
              "Plane model, CA only at hard_tau: the count per layer matches the tau -> 0 closed form q_L = k + "
              "(1 - eta)^L (q_0 - k) this package derives (relative l2 error over layers <= 0.05).",
              "this package (mean-shift limit)", Band.below(0.05), _PLANE + ("hard_tau",)),
    ClaimSpec("plane-sweep-signs", "consistency",
              "Plane model sweeps: fraction of (parameter, value) settings where the O-type decoder's CA sublayers "
              "gather (sum dN_CA > 0) and its SA sublayers disperse (sum dN_SA < 0)." + _PLANE_NOTE,
              "collapse_detr.md D5", Band.above(1.0), _PLANE + ("sweep_eta", "sweep_objects", "sweep_queries",
                                                                  "sweep_tau", "sweep_tau_s")),
    ClaimSpec("detr-ca-gathers", "reproduction",
              "Trained toy DETR (O-decoder only): CA raises queries per object (IoU > t), summed over layers: per "
              "seed, the change averaged over the thresholds t; t over seeds, predicted positive.", REF,
              Band.above(0.0), _DETR),
    ClaimSpec("detr-sa-disperses", "reproduction",
              "Trained toy DETR (O-decoder only): SA lowers queries per object, summed over layers: per seed, the "
              "change averaged over t; t over seeds, predicted negative.", REF, Band.below(0.0), _DETR),
    ClaimSpec("detr-sa-disperses-image-layers", "reproduction",
              "As detr-sa-disperses, summed over layers >= 1 only: layer 0's SA acts on the learned content queries, "
              "the same for every image, so its change measures the learned prior boxes rather than a response to "
              "the image.", REF, Band.below(0.0), _DETR),
    ClaimSpec("detr-sa-init-no-disperse", "consistency",
              "Toy DETR at initialisation: SA does not lower queries per object (fraction of t where sum dN_SA + 2 s.e. "
              ">= 0): untrained attention averages, a property of the construction.",
              "collapse_detr.md C5/D6", Band.above(1.0), _DETR),
    ClaimSpec("dac-c-stream-more-queries", "reproduction",
              "Trained with the C-decoder: the C-decoder's last layer has more queries per object than the O-decoder's: "
              "per seed, C - O averaged over t (same model, paired); t over seeds, predicted positive.",
              "Hu et al. 2023, Sec. 3 (one-to-many 'improves the gathering effect')", Band.above(0.0), _DETR),
    ClaimSpec("dac-raises-o-queries", "reproduction",
              "The O-decoder trained with the C-decoder has more queries per object (last layer) than the O-decoder "
              "trained alone, same seeds and steps: per seed, dac - detr averaged over t; paired t over seeds.",
              "DAC-DETR README, fig. analyse", Band.above(0.0), _DETR),
    ClaimSpec("dac-ap-gain", "reproduction",
              "AP of the O-decoder trained with the C-decoder minus without, equal steps, paired by seed: the mean "
              "gain is positive (paired t over seeds).",
              "Hu et al. 2023, Tables 1-2 (+3.4 AP, Deformable-DETR, 12 ep)", Band.above(0.0), _DETR + ("nms",)),
)


def claims(tables, cfg) -> dict:
    out: dict = {}
    if "plane" in tables:
        out |= plane_claims(tables, cfg)
    if "counts" in tables:
        out |= detr_claims(tables, cfg)
    return out


def plane_claims(tables, cfg) -> dict:
    p = tables["plane"]
    m = {kind: sub.set_index("order") for kind, sub in p.groupby("kind")}

    def deltas(kind, point):
        sub = m[kind][m[kind].point == point]
        return sub.delta_mean.to_numpy(), sub.delta_se.to_numpy()

    (d_ca, se_ca), (d_sa, se_sa), (d_avg, se_avg) = deltas("o-rep", "ca"), deltas("o-rep", "sa"), deltas("o-avg", "sa")

    def listing(d, se):
        return ", ".join(f"{v:+.3f}±{e:.3f}" for v, e in zip(d, se))

    lim = tables["plane_limit"]
    hard = lim[np.isclose(lim.tau, lim.tau.min())]
    rel = float(np.linalg.norm(hard.simulation - hard.theory) / np.linalg.norm(hard.theory))
    sw = tables["plane_sweep"]
    o = sw[sw.kind == "o-rep"]
    both = ((o.sum_dCA > 0) & (o.sum_dSA < 0)).to_numpy()
    bad = o[~both]
    final = {k: m[k].count_mean.iloc[-1] for k in m}
    sa_note = "per-layer dN_SA (± s.e.): " + listing(d_sa, se_sa) + (
        "" if np.all(d_sa + 2 * se_sa < 0) else
        "; the SA sublayers without a significant decrease come first: layer 0 acts on uniformly spread queries, "
        "where symmetric repulsion has no cluster to break up (expected change ~0); dispersal needs queries that a "
        "CA has gathered")
    return {
        "plane-ca-gathers": (S.exact(np.mean(d_ca - 2 * se_ca > 0)), "per-layer dN_CA (± s.e.): " + listing(d_ca, se_ca)),
        "plane-sa-rep-disperses": (S.exact(np.mean(d_sa + 2 * se_sa < 0)), sa_note),
        "plane-sa-avg-no-disperse": (S.exact(np.mean(d_avg + 2 * se_avg >= 0)),
                                     "per-layer dN_SA(avg) (± s.e.): " + listing(d_avg, se_avg)),
        "plane-c-more-than-o": (S.exact(final["c"] / final["o-rep"]), f"final counts: c {final['c']:.3f}, o-rep "
                                f"{final['o-rep']:.3f}, o-avg {final['o-avg']:.3f}"),
        "plane-ca-hard-limit": (S.exact(rel), "the limit holds once sqrt(tau) << radius; queries within ~sqrt(tau) of "
                                "a Voronoi boundary or of the radius circle are the only ones that can differ"),
        "plane-sweep-signs": (S.exact(both.mean()), "; ".join(
            f"{r.parameter}={r.value:g}: sum dCA {r.sum_dCA:+.2f}, sum dSA {r.sum_dSA:+.2f}" for r in bad.itertuples())
            or "all settings"),
    }


def detr_claims(tables, cfg) -> dict:
    counts, ap = tables["counts"], tables["ap"]
    ts = cfg.thresholds
    out: dict = {}
    if (counts.model == "detr").any():
        ca = _totals(counts, "detr", "trained", "O", "CA")
        sa = _totals(counts, "detr", "trained", "O", "SA")
        sa1 = _totals(counts, "detr", "trained", "O", "SA", first_layer=1)
        _, v_sa1s = _sig_fraction(_totals(counts, "detr", "trained", "O", "SA", "score", first_layer=1), ts, -1)
        _, v_sa0 = _sig_fraction(_totals(counts, "detr", "init", "O", "SA"), ts, -1)
        out["detr-ca-gathers"] = (S.t_interval(_per_seed(ca, ts)), f"sum dN_CA {_fmt(_sig_fraction(ca, ts, 1)[1])}")
        out["detr-sa-disperses"] = (S.t_interval(_per_seed(sa, ts)), f"sum dN_SA {_fmt(_sig_fraction(sa, ts, -1)[1])}")
        out["detr-sa-disperses-image-layers"] = (
            S.t_interval(_per_seed(sa1, ts)), f"sum dN_SA (layers >= 1) {_fmt(_sig_fraction(sa1, ts, -1)[1])}; the "
            f"same sum with the matching-score affinity 0.7 IoU + 0.3 p: {_fmt(v_sa1s)}")
        # at init "does not disperse" = no significant decrease: sign test on the upper bound
        ok0 = [m + 2 * se >= 0 for m, se in v_sa0.values()]
        out["detr-sa-init-no-disperse"] = (S.exact(np.mean(ok0)), f"sum dN_SA at init {_fmt(v_sa0)}") if ok0 else None
    if (counts.model == "dac-detr").any():
        c_fin, o_fin = _final(counts, "dac-detr", "C"), _final(counts, "dac-detr", "O")
        diff = (c_fin - o_fin).rename("delta").reset_index()
        out["dac-c-stream-more-queries"] = (S.t_interval(_per_seed(diff, ts)), f"C - O {_fmt(_sig_fraction(diff, ts, 1)[1])}")
        if (counts.model == "detr").any():
            diff = (o_fin - _final(counts, "detr", "O")).dropna().rename("delta").reset_index()
            out["dac-raises-o-queries"] = (S.t_interval(_per_seed(diff, ts)),
                                           f"dac - detr {_fmt(_sig_fraction(diff, ts, 1)[1])}")
            d = _paired_ap(ap)
            if d.size:
                dn = _paired_ap(ap, "ap_nms")
                d50, d75 = _paired_ap(ap, "ap50"), _paired_ap(ap, "ap75")
                g = ap.groupby("model")[["confident_hits", "duplicate_fraction"]].mean()
                out["dac-ap-gain"] = (S.t_interval(d), (
                    "per seed: " + ", ".join(f"{v:+.4f}" for v in d)
                    + (f"; with NMS@{cfg.nms:g}: {dn.mean():+.4f}" if dn.size else "")
                    + f"; dAP50 {d50.mean():+.4f}, dAP75 {d75.mean():+.4f}; confident hits per object (IoU > 0.5, "
                    f"p > 0.5) {g.loc['detr', 'confident_hits']:.3f} -> {g.loc['dac-detr', 'confident_hits']:.3f}, "
                    f"objects with >= 2 such hits {g.loc['detr', 'duplicate_fraction']:.3f} -> "
                    f"{g.loc['dac-detr', 'duplicate_fraction']:.3f}; diagnosis in docs/dacdetr.md"))
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="DAC-DETR: CA gathers / SA disperses queries (plane model + toy DETR with O- and C-decoders), AP with/without C",
    reference=REF,
    config=DacConfig,
    run_batch=run_batch,
    grid={"model": ("plane", "detr", "dac-detr")},
    quick={"seeds": 2, "steps": 200, "batch": 16, "eval_images": 96, "curve_every": 100, "plane_trials": 50,
           "sweep_queries": (50, 100), "sweep_objects": (2, 5)},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
