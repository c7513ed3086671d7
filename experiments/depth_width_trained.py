"""Trained depth efficiency on tasks that provably need depth (issue 16, part 2).

(a) Teacher and student (:mod:`dynamics.depth_width.teacher`): random Levine-network teachers (linear or
    softmax attention, N = 2 positions over a vocabulary of V tokens, depth L_T, width d_x on both sides
    of 3^{L_T}); students of depth L_T (reference, width d_x) and L_T - 1 (widths d'); the width a
    one-layer-shallower student needs to reach twice the reference's error, against the exact-rank
    width-equivalence table of depth-width-rank (:func:`teacher.predicted_width`), and the Eckart-Young
    floor that the rank bound puts under every linear student.
(b) k-hop pointer chasing (:mod:`dynamics.depth_width.khop`): depth L >= floor(log2 k) + 1 suffices by
    pointer doubling; solve rates per (k, depth, width) with Wilson intervals, depth against the
    one-layer-shallower network with Newcombe intervals.

Every (seed, learning rate) pair of a cell trains as one replica on the batched engine; the rate is
chosen per cell on validation (k-hop: a held-out set; teacher-student: the grid loss, the population
itself, see the module) and the chosen rate's seeds are reported.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.depth_width import khop as K
from dynamics.depth_width import teacher as T
from dynamics.engine.select import choose_lr
from dynamics.experiment import Experiment
from dynamics.runtime import threads
from dynamics.stats import Band

NAME = "depth-width-trained"
PARTS = ("teacher-linear", "teacher-softmax", "khop-1", "khop-2", "khop-4")
TEACHERS = ("2x1", "2x2", "2x12", "3x2")  # L_T x d_x; 3^2 = 9 < 12: both sides of the threshold for L_T = 2


def _teachers(text: tuple[str, ...]) -> list[tuple[int, int]]:
    out = []
    for t in text:
        L, _, d = t.partition("x")
        require(L.isdigit() and d.isdigit() and 2 <= int(L) <= 4 and 1 <= int(d) <= 64,
                f"teacher {t!r}: write depth x width, e.g. 2x4 (depth 2..4, width 1..64)")
        out.append((int(L), int(d)))
    return out


@dataclasses.dataclass(frozen=True)
class TrainedConfig:
    part: str = field("teacher-linear", "teacher-linear, teacher-softmax (task a) or khop-K (task b, K hops)")
    seeds: int = field(10, "seeds per cell, trained together as replicas")
    seed: int = field(0, "root seed")
    # (a) teacher and student
    teachers: tuple[str, ...] = field(TEACHERS, "teachers as depth x width (L_T x d_x)")
    vocab: int = field(32, "teacher-student: tokens V (the grid has V^2 pairs; ranks cap at V)")
    student_widths: tuple[int, ...] = field((1, 2, 4, 8, 16, 32), "widths of the one-layer-shallower students")
    ts_lrs: tuple[float, ...] = field((3e-2, 1e-1, 3e-1), "teacher-student: peak learning rates (replicas)")
    ts_steps: int = field(1000, "teacher-student: Adam steps")
    ts_batch: int = field(128, "teacher-student: token pairs per step")
    match_factor: float = field(2.0, "a shallower student matches when its grid MSE <= factor x the reference's")
    # (b) k-hop
    hop_n: int = field(6, "k-hop: pairs per sequence (= sequence length, classes)")
    hop_depths: tuple[int, ...] = field((1, 2, 3), "k-hop: depths")
    hop_widths: tuple[int, ...] = field((8, 16), "k-hop: widths (one head)")
    hop_lrs: tuple[float, ...] = field((3e-3, 1e-2), "k-hop: peak learning rates (replicas)")
    hop_steps: int = field(1000, "k-hop: Adam steps")
    hop_batch: int = field(64, "k-hop: sequences per step")
    hop_eval: int = field(512, "k-hop: validation and test sequences (each)")
    solve_acc: float = field(0.9, "k-hop: a run solves when its per-token test accuracy is >= this")
    claim_width: int = field(16, "k-hop: the width at which the solve-rate claims are read")
    warmup: int = field(50, "linear warm-up steps")
    threads: int = field(1, "torch CPU threads")
    device: str = field("cpu", "torch device")

    def __post_init__(self):
        require(self.part in PARTS, f"part={self.part!r}: choose from {', '.join(PARTS)}")
        require(self.seeds >= 1 and self.vocab >= 2 and self.hop_n >= 2, "seeds >= 1, vocab >= 2, hop_n >= 2")
        _teachers(self.teachers)
        require(all(w >= 1 for w in self.student_widths + self.hop_widths), "widths must be >= 1")
        require(all(1 <= L <= 8 for L in self.hop_depths), "hop_depths in 1..8")
        require(all(lr > 0 for lr in self.ts_lrs + self.hop_lrs) and len(self.ts_lrs) and len(self.hop_lrs),
                "learning rates must be positive (at least one each)")
        require(min(self.ts_steps, self.hop_steps, self.ts_batch, self.hop_batch, self.hop_eval) >= 1,
                "steps, batches and eval sizes must be >= 1")
        require(self.match_factor >= 1 and 0 < self.solve_acc <= 1, "match_factor >= 1, solve_acc in (0, 1]")
        require(self.threads >= 1, "threads >= 1")

    @property
    def hops(self) -> int:
        return int(self.part.split("-")[1]) if self.part.startswith("khop") else 0


def run_batch(cfgs, ctx):
    out = []
    for cfg in cfgs:
        with threads(cfg.threads):
            out.append(_teacher_part(cfg, ctx) if cfg.part.startswith("teacher") else _khop_part(cfg, ctx))
    return out


def _teacher_part(cfg: TrainedConfig, ctx) -> dict:
    score = cfg.part.split("-")[1]
    cells = []
    for LT, dx in _teachers(cfg.teachers):
        cells.append((LT, dx, LT, dx))
        cells += [(LT, dx, LT - 1, w) for w in sorted(set(cfg.student_widths) | {dx})]  # incl. the teacher's width
    rows, spectra = [], []
    with ctx.bar(len(cells) * cfg.ts_steps, f"teacher-student ({score})") as bar:
        for LT, dx in _teachers(cfg.teachers):
            t = T.TeacherSpec(score, LT, dx, cfg.vocab)
            tables = T.teacher_tables(t, range(cfg.seeds), cfg.seed, device=cfg.device)
            sv = T.singular_values(tables)
            spectra.append(pd.DataFrame([dict(score=score, teacher_depth=LT, d_x=dx, seed=s, index=i, sv=v)
                                         for s in range(cfg.seeds) for i, v in enumerate(sv[s])]))
            for _, _, L, w in [c for c in cells if c[:2] == (LT, dx)]:
                run = T.StudentRun(L, w, cfg.seeds, tuple(cfg.ts_lrs), cfg.ts_steps, cfg.ts_batch, cfg.warmup,
                                   cfg.seed)
                df = T.train_students(t, run, tables, device=cfg.device, bar=bar)
                df["rank_floor"] = [T.rank_floor(sv[s], w, L) for s in df.seed]
                rows.append(df)
    return {"ts_trials": pd.concat(rows, ignore_index=True), "ts_spectra": pd.concat(spectra, ignore_index=True)}


def _khop_part(cfg: TrainedConfig, ctx) -> dict:
    rows = []
    cells = [(L, w) for L in cfg.hop_depths for w in cfg.hop_widths]
    with ctx.bar(len(cells) * cfg.hop_steps, f"k-hop (k={cfg.hops})") as bar:
        for L, w in cells:
            spec = K.KhopSpec(cfg.hops, cfg.hop_n, L, w, cfg.seeds, tuple(cfg.hop_lrs), cfg.hop_steps,
                              cfg.hop_batch, cfg.warmup, cfg.hop_eval, cfg.seed)
            rows.append(K.train_cell(spec, device=cfg.device, bar=bar))
    return {"khop_trials": pd.concat(rows, ignore_index=True)}


# -- summary ------------------------------------------------------------------------------------------


def summarize(tables, base):
    out = dict(tables)
    if "ts_trials" in tables:
        tr = tables["ts_trials"]
        runs = choose_lr(tr, ["score", "teacher_depth", "d_x", "depth", "width"], "grid_loss", False)
        need = T.needed_widths(runs, base.match_factor)
        out.update(ts_runs=runs, ts_needed=need, ts_summary=ts_summary(need, runs))
    if "khop_trials" in tables:
        runs = choose_lr(tables["khop_trials"], ["k", "n", "depth", "width"], "val_acc", True)
        out.update(khop_runs=runs, khop_solve=K.solve_table(runs, base.solve_acc))
    # the headline table: one row per teacher (task a) and per k-hop cell (task b)
    parts = [out[n].assign(task=t) for n, t in (("ts_summary", "teacher-student"), ("khop_solve", "k-hop"))
             if n in out]
    out["table"] = pd.concat(parts, ignore_index=True)[lambda d: ["task"] + [c for c in d.columns if c != "task"]]
    return out


def ts_summary(need: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per teacher: predicted width, seed-median needed width and its ratio to the prediction, the
    median reference loss and shallower losses, and the widest student's median Eckart-Young floor."""
    rows = []
    for (score, LT, dx), g in need.groupby(["score", "teacher_depth", "d_x"], sort=True):
        med = float(np.median(g.needed_width))
        pred = int(g.predicted_width.iloc[0])
        unc = T.predicted_width(int(dx), int(LT))
        sh = runs[(runs.score == score) & (runs.teacher_depth == LT) & (runs.d_x == dx) & (runs.depth == LT - 1)]
        fl = sh.groupby("width").rank_floor.median()
        rows.append(dict(score=score, teacher_depth=LT, d_x=dx, threshold_3L=3**LT, side="below" if dx < 3**LT
                         else "above", predicted_width=pred, predicted_width_unbounded_V=unc,
                         needed_width_median=med, ratio_to_predicted=med / pred,
                         matched_seeds=int(np.isfinite(g.needed_width).sum()), seeds=len(g),
                         ref_loss_median=float(g.ref_loss.median()),
                         shallow_same_width_median=float(g.shallow_loss_same_width.median()),
                         shallow_widest_median=float(g.shallow_loss_widest.median()),
                         floor_width_same=float(fl.get(dx, math.nan)),
                         floor_smallest_width=float(fl.iloc[0]) if len(fl) else math.nan))
    return pd.DataFrame(rows)


# -- figures ------------------------------------------------------------------------------------------


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    figs = {}
    if "ts_summary" in tables and len(tables["ts_summary"]):
        s = tables["ts_summary"]
        fig, ax = subplots(figsize=(5.6, 4.0))
        for score, g in s.groupby("score"):
            x = g.teacher_depth + (0.08 if score == "softmax" else -0.08)
            y = g.needed_width_median / g.d_x
            cap = g.needed_width_median.isin([np.inf])
            ax.plot(x[~cap], y[~cap], "o", label=f"{score}: measured (seed median)")
            ax.plot(x[cap], (cfg.student_widths[-1] * 2 / g.d_x)[cap], "^", label=f"{score}: > widest tried")
        ax.plot(s.teacher_depth, s.predicted_width / s.d_x, "k_", ms=14, mew=2, label="rank table (V-capped)")
        for _, r in s.drop_duplicates(["teacher_depth", "d_x"]).iterrows():
            ax.annotate(f"d_x={r.d_x}", (r.teacher_depth + 0.12, r.predicted_width / r.d_x), fontsize=7)
        ax.set(yscale="log", xlabel="teacher depth L_T (student L_T - 1: depth gap 1)",
               ylabel="needed width / teacher width", title="width a one-layer-shallower student needs")
        ax.legend(fontsize=7)
        figs["needed_width"] = fig
    if "khop_solve" in tables and len(tables["khop_solve"]):
        s = tables["khop_solve"]
        ks = sorted(s.k.unique())
        fig, axes = subplots(1, len(ks), figsize=(3.6 * len(ks), 3.2), squeeze=False)
        for ax, k in zip(axes[0], ks):
            g = s[s.k == k].pivot(index="depth", columns="width", values="rate")
            ax.imshow(g.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
            ax.set_xticks(range(len(g.columns)), [str(c) for c in g.columns])
            ax.set_yticks(range(len(g.index)), [str(i) for i in g.index])
            for i, L in enumerate(g.index):
                for j, w in enumerate(g.columns):
                    r = s[(s.k == k) & (s.depth == L) & (s.width == w)].iloc[0]
                    ax.text(j, i, f"{r.solved}/{r.seeds}", ha="center", va="center", color="w" if r.rate < 0.6
                            else "k", fontsize=8)
            ax.axhline(K.depth_needed(int(k)) - 1.5, color="r", lw=1)
            ax.set(xlabel="width", ylabel="depth", title=f"k = {k}: solve rate (line: floor(log2 k) + 1)")
        figs["khop_solve_rate"] = fig
    return figs


# -- claims -------------------------------------------------------------------------------------------

_TS = ("seeds", "seed", "teachers", "vocab", "student_widths", "ts_lrs", "ts_steps", "ts_batch", "match_factor")
_KH = ("seeds", "seed", "hop_n", "hop_depths", "hop_widths", "hop_lrs", "hop_steps", "hop_batch", "solve_acc",
       "claim_width")
LEVINE = "Levine et al. 2020: a shallower network needs a wider one (exact-rank width-equivalence, depth-width-rank)"
SANFORD = "Sanford, Hsu & Telgarsky 2024 (arXiv 2402.09268): k hops by pointer doubling in O(log k) layers"

CLAIMS = tuple(
    c for score in ("linear", "softmax") for c in (
        ClaimSpec(f"ts-{score}-width-ratio", "reproduction",
                  f"{score} teachers: the width a one-layer-shallower student needs (smallest width reaching "
                  "match_factor x the same-depth reference's grid MSE; seed median per teacher) divided by the "
                  "rank table's width (V-capped), geometric mean over teachers, is within a factor 2 of 1; "
                  "percentile bootstrap over seeds.", LEVINE, Band.between(0.5, 2.0), _TS),
        ClaimSpec(f"ts-{score}-shallower-loses-at-teacher-width", "reproduction",
                  f"{score} teachers: at the teacher's width, the one-layer-shallower student's grid MSE exceeds "
                  "the same-depth student's: per seed the mean over teachers of ln(MSE shallow / MSE same "
                  "depth), t over seeds, > 0.", LEVINE, Band.above(0.0), _TS),
    )
) + (
    ClaimSpec("ts-linear-above-rank-floor", "consistency",
              "every trained linear-attention student's grid MSE is at least its Eckart-Young floor (the "
              "teacher's singular-value tail beyond the student's proven N = 2 rank bound + 1), up to 1e-4: "
              "fraction of students.", "docs/depth_width.md N = 2 theorem; Eckart & Young 1936",
              Band.above(1.0), _TS),
) + tuple(
    ClaimSpec(f"khop-k{k}-solves-at-log-depth", "reproduction",
              f"k = {k}: at depth floor(log2 k) + 1 = {K.depth_needed(k)} and width claim_width, the solve rate "
              "(test accuracy >= solve_acc) is at least 0.5; Wilson interval over seeds.", SANFORD,
              Band.above(0.5), _KH) for k in (1, 2, 4)
) + tuple(
    ClaimSpec(f"khop-k{k}-depth-beats-shallower", "reproduction",
              f"k = {k}: at width claim_width, the solve rate at depth {K.depth_needed(k)} minus that at depth "
              f"{K.depth_needed(k) - 1} is positive; Newcombe interval.", SANFORD, Band.above(0.0), _KH)
    for k in (2, 4)
)


def _ratio_claim(need: pd.DataFrame, score: str):
    g = need[need.score == score]
    if not len(g):
        return None
    cube = g.pivot_table(index="seed", columns=["teacher_depth", "d_x"], values="needed_width")
    pred = g.groupby(["teacher_depth", "d_x"]).predicted_width.first().reindex(cube.columns).to_numpy(float)

    def stat(x):
        med = np.median(x, axis=0)
        return float(np.exp(np.mean(np.log(med / pred)))) if np.all(np.isfinite(med)) else math.nan

    est = S.bootstrap(cube.to_numpy(float), stat, seed=3)
    unmatched = {f"{L}x{d}": int((~np.isfinite(cube[(L, d)])).sum()) for L, d in cube.columns}
    return est, f"seeds with no matching width on the grid, per teacher: {unmatched}"


def claims(tables, cfg):
    out: dict = {}
    if "ts_needed" in tables:
        need, runs = tables["ts_needed"], tables["ts_runs"]
        for score in ("linear", "softmax"):
            g = need[need.score == score]
            if not len(g):
                continue
            out[f"ts-{score}-width-ratio"] = _ratio_claim(need, score)
            per_seed = np.log(g.shallow_loss_same_width / g.ref_loss).groupby(g.seed).mean()
            out[f"ts-{score}-shallower-loses-at-teacher-width"] = S.t_interval(per_seed.to_numpy())
        lin = runs[(runs.score == "linear") & runs.grid_loss.notna()]
        if len(lin):
            ok = float((lin.grid_loss >= lin.rank_floor - 1e-4).mean())
            out["ts-linear-above-rank-floor"] = (S.exact(ok), f"{len(lin)} students")
    if "khop_solve" in tables:
        s = tables["khop_solve"]
        for k in sorted(s.k.unique()):
            k = int(k)
            L = K.depth_needed(k)
            at = s[(s.k == k) & (s.width == cfg.claim_width)].set_index("depth")
            if L in at.index:
                out[f"khop-k{k}-solves-at-log-depth"] = S.wilson(int(at.loc[L, "solved"]), int(at.loc[L, "seeds"]))
            if k > 1 and L in at.index and L - 1 in at.index:
                a, b = at.loc[L], at.loc[L - 1]
                out[f"khop-k{k}-depth-beats-shallower"] = (
                    S.newcombe(int(a.solved), int(a.seeds), int(b.solved), int(b.seeds)),
                    f"depth {L}: {int(a.solved)}/{int(a.seeds)}, depth {L - 1}: {int(b.solved)}/{int(b.seeds)}")
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="trained depth efficiency: teacher-student width a shallower net needs; k-hop solve rates",
    reference="Levine et al. 2020 (width-equivalence); Sanford, Hsu & Telgarsky 2024 (k-hop, log depth)",
    config=TrainedConfig,
    run_batch=run_batch,
    grid={"part": PARTS},
    quick={"seeds": 3, "teachers": ("2x2", "3x1"), "student_widths": (1, 4, 16), "ts_steps": 60, "ts_batch": 64,
           "hop_depths": (1, 2), "hop_widths": (8,), "hop_steps": 40, "hop_batch": 16, "hop_eval": 64,
           "claim_width": 8, "warmup": 5},
    quick_grid={"part": ("teacher-linear", "teacher-softmax", "khop-2")},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
