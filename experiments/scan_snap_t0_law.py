"""Theorem 4's transition time t_0 = 2 K ln M / eta_Y over 9 (K, M) pairs: the exponents of K, ln M and
eta_Y fitted separately, each with a bootstrap interval over seeds.

scan-snap-phase tests t_0 with two (K, M) pairs, whose K and M move together, so its slope against
K ln M / eta_Y is carried by eta_Y.  Here K and M vary independently:

    K in {2, 4, 8}          num_last in {1, 2, 4} queries with 2 next tokens each
    M in {48, 300, 2000}    the data model's own tokens (4 common, 4 distinct per class; 48 tokens at K = 8)
                            plus inert vocabulary tokens that never occur as keys: M is the size of the
                            decoder softmax, the M of Eqs. 44-45 (h' = eta_Y / ((M-1) + e^{M h}))
    eta_Y in {0.2, 0.4, 0.8, 1.6},  eta_Z = eta_Y / 10 (Assumption 1c)

Each cell trains ``seeds`` runs of plain SGD (no momentum, zero init, T = 256, batch 32) and measures the
transition step t_hat as scan-snap-phase does (the record at which the growth rate of the dominant
distinct logit peaks; :func:`experiments.scan_snap_phase.transition_step`, reused unchanged).  The fit is

    ln t_hat = a + b_K ln K + b_M ln ln M + b_eta ln eta_Y        (cell medians over seeds)

with percentile intervals from resampling seeds (a seed fixes the sample stream of every cell of a data
model, so seeds are the independent units).  Predictions: the paper's asymptotic law gives b_K = 1,
b_M = 1, b_eta = -1.  The exact peak of gamma(t) (Eq. 85 with Eq. 45, :func:`theory.gamma_peak_time`),
fitted with the same regression at the same cells, gives b_K = 1, b_eta = -1 and a *smaller* b_M
(about 0.8 for M in 48...2000: ln M is the large-M limit of a slower function of M).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from dynamics import stats
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.experiment import Experiment
from dynamics.runtime import log_record_steps, threads
from dynamics.scan_snap import data
from dynamics.scan_snap import theory as th
from dynamics.scan_snap.train import TrainOptions, train
from dynamics.stats import Band

from .scan_snap_phase import dominant_logit, transition_step

NAME = "scan-snap-t0-law"
REF = "Tian et al. 2023, Thm. 4 (t_0 = 2 K ln M / eta_Y)"


@dataclasses.dataclass(frozen=True)
class T0Config:
    num_last: int = field(1, "query tokens, 2 next tokens each: K = 2 num_last (grid 1, 2, 4)")
    M: int = field(300, "decoder vocabulary: data tokens plus inert tokens (grid 48, 300, 2000)")
    eta_y: float = field(1.6, "decoder learning rate (grid 0.2, 0.4, 0.8, 1.6)")
    ratio: float = field(10.0, "eta_Y / eta_Z")
    num_common: int = field(4, "common tokens")
    num_unique_per_next: int = field(4, "distinct tokens per class")
    horizon: float = field(3.5, "the run lasts horizon x t_0 of the smallest eta_Y of the grid")
    eta_y_floor: float = field(0.2, "smallest eta_Y the run must cover")
    records: int = field(72, "log-spaced record steps (transition resolution about 12%)")
    batch: int = field(32, "SGD batch size")
    T: int = field(256, "sequence length including the query")
    seeds: int = field(6, "seeds per cell")
    seed: int = field(0, "root seed")
    threads: int = field(1, "torch intra-op threads")

    def __post_init__(self) -> None:
        require(self.num_last >= 1 and self.num_common >= 1 and self.num_unique_per_next >= 2,
                "need num_last >= 1, num_common >= 1, num_unique_per_next >= 2")
        require(self.M >= self.natural_M, f"M must be at least the data model's {self.natural_M} tokens, got {self.M}")
        require(self.eta_y > 0 and self.ratio > 0 and self.eta_y_floor > 0, "learning rates must be positive")
        require(self.records >= 10 and self.batch >= 1 and self.T >= 2 and self.seeds >= 1, "bad sizes")
        require(self.n_steps >= 2 * self.t0, f"eta_y={self.eta_y} needs at least 2 t_0 = {2 * self.t0:.0f} steps; "
                "lower eta_y_floor")

    @property
    def K(self) -> int:
        return 2 * self.num_last

    @property
    def natural_M(self) -> int:
        return self.num_common + self.K * self.num_unique_per_next + self.num_last + self.K

    @property
    def t0(self) -> float:
        return float(th.transition_time(self.K, self.M, self.eta_y).t0)

    @property
    def n_steps(self) -> int:
        return math.ceil(self.horizon * th.transition_time(self.K, self.M, self.eta_y_floor).t0)


def classes_of(cfg: T0Config) -> data.SequenceClasses:
    base = data.build_classes(data.SyntheticSpec(num_last=cfg.num_last, num_next_per_last=2, num_common=cfg.num_common,
                                                 num_unique_per_next=cfg.num_unique_per_next))
    probs = np.pad(base.probs, ((0, 0), (0, cfg.M - base.M)))  # inert tokens: never keys, still decoder outputs
    return data.from_probs(probs, base.query, base.next)


def batch_key(cfg: T0Config):
    return dataclasses.replace(cfg, eta_y=cfg.eta_y_floor)


def run_batch(cfgs, ctx):
    first = cfgs[0]
    classes = classes_of(first)
    S, steps = first.seeds, first.n_steps
    record = log_record_steps(steps, first.records)
    eta_y = np.repeat([c.eta_y for c in cfgs], S)
    opts = TrainOptions(steps=steps, batch=first.batch, T=first.T, optimizer="sgd", momentum=0.0, init="zero",
                        normalize=True, residual=False, dtype="float32", root_seed=first.seed)
    with threads(first.threads):
        traj = train(classes, eta_y.tolist(), (eta_y / first.ratio).tolist(),
                     np.tile(np.arange(S), len(cfgs)).tolist(), opts, record, bar=ctx.bar)
    t_hat = transition_step(record, dominant_logit(traj, classes))
    out = []
    for i, cfg in enumerate(cfgs):
        r = slice(i * S, (i + 1) * S)
        out.append({"runs": pd.DataFrame({
            "seed_index": np.arange(S), "K": cfg.K, "t_hat": t_hat[r], "diverged_step": traj.diverged[r],
            "t0": cfg.t0, "gamma_peak": float(th.gamma_peak_time(cfg.K, cfg.M, cfg.eta_y)), "steps": steps})})
    return out


# ---------------------------------------------------------------------------------------------
# the fit
# ---------------------------------------------------------------------------------------------
EXPONENTS = ("b_K", "b_lnM", "b_eta")


def design(cells: pd.DataFrame) -> np.ndarray:
    return np.column_stack([np.ones(len(cells)), np.log(cells.K), np.log(np.log(cells.M)), np.log(cells.eta_y)])


def fit(cells: pd.DataFrame | np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b_K, b_lnM, b_eta) of ln y on the design (the cells, or their design matrix)."""
    X = cells if isinstance(cells, np.ndarray) else design(cells)
    coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    return coef


def cell_frame(runs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Cells (K, M, eta_y) in a fixed order and t_hat as (seeds, cells); diverged runs are NaN."""
    runs = runs.assign(t_hat=np.where(runs.diverged_step >= 0, np.nan, runs.t_hat))
    wide = runs.pivot_table(index="seed_index", columns=["K", "M", "eta_y"], values="t_hat", dropna=False)
    cells = pd.DataFrame(list(wide.columns), columns=["K", "M", "eta_y"])
    return cells, wide.to_numpy()


def summarize(tables, base):
    runs = tables["runs"]
    cells, cube = cell_frame(runs)
    cells["t_hat_median"] = np.nanmedian(cube, 0)
    first = runs.groupby(["K", "M", "eta_y"]).first().reset_index()
    cells = cells.merge(first[["K", "M", "eta_y", "t0", "gamma_peak", "steps"]], on=["K", "M", "eta_y"])
    cells["t_hat_over_t0"] = cells.t_hat_median / cells.t0
    cells["K_lnM_over_eta"] = cells.K * np.log(cells.M) / cells.eta_y
    measured = fit(cells, cells.t_hat_median.to_numpy())
    exact = fit(cells, cells.gamma_peak.to_numpy())
    rows = []
    X = design(cells)
    for k, name in enumerate(EXPONENTS, start=1):
        est = stats.bootstrap(cube, lambda s, k=k: fit(X, np.nanmedian(s, 0))[k], n_boot=1000, seed=19)
        rows.append({"exponent": name, "measured": measured[k], "ci_low": est.low, "ci_high": est.high,
                     "paper": [1.0, 1.0, -1.0][k - 1], "exact_gamma_peak": exact[k]})
    fits = pd.DataFrame(rows)
    resid = np.log(cells.t_hat_median) - design(cells) @ measured
    fits["rms_log_residual"] = float(np.sqrt(np.mean(resid ** 2)))
    return {"table": cells, "headline": fits, "fits": fits, "runs": runs}


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    cells, fits = tables["table"], tables["fits"].set_index("exponent")
    b = fits.measured
    fig, axes = subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    # partial-residual plots: t_hat with the other two factors divided out at their fitted exponents
    terms = {"b_K": np.log(cells.K), "b_lnM": np.log(np.log(cells.M)), "b_eta": np.log(cells.eta_y)}
    y = np.log(cells.t_hat_median)
    for ax, (name, label) in zip(axes, [("b_K", "K"), ("b_lnM", "ln M"), ("b_eta", "$\\eta_Y$")]):
        part = y - sum(b[o] * terms[o] for o in terms if o != name)
        x = np.exp(terms[name])
        ax.scatter(x, np.exp(part), c=np.log(cells.M), s=16, cmap="viridis")
        xs = np.geomspace(x.min(), x.max(), 20)
        c = float(np.mean(part - b[name] * terms[name]))
        ax.plot(xs, np.exp(c + b[name] * np.log(xs)), "k-", lw=1,
                label=f"fit {b[name]:.3f} [{fits.ci_low[name]:.3f}, {fits.ci_high[name]:.3f}]")
        ax.plot(xs, np.exp(c + fits.paper[name] * np.log(xs) + (b[name] - fits.paper[name]) * np.log(xs).mean()),
                color="grey", ls=":", lw=1, label=f"paper {fits.paper[name]:g}")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="$\\hat t$, other factors divided out",
               title=f"exponent of {label}")
        ax.legend(fontsize=7)
    figs = {"t0_law_partials": fig}
    fig, ax = subplots(figsize=(4.6, 4.0), layout="constrained")
    sc = ax.scatter(cells.K_lnM_over_eta, cells.t_hat_median, c=cells.K, s=16, cmap="plasma")
    xs = np.geomspace(cells.K_lnM_over_eta.min(), cells.K_lnM_over_eta.max(), 20)
    ax.plot(xs, 2 * xs, "k:", lw=1, label="$t_0 = 2K\\ln M/\\eta_Y$")
    ax.set(xscale="log", yscale="log", xlabel="$K\\ln M/\\eta_Y$", ylabel="measured $\\hat t$ (median over seeds)")
    fig.colorbar(sc, ax=ax, label="K")
    ax.legend(fontsize=7)
    figs["t0_law_scatter"] = fig
    return figs


INPUTS = ("seeds", "batch", "T", "ratio", "horizon", "records", "num_common", "num_unique_per_next")
CLAIMS = (
    ClaimSpec("t0-exponent-K", "reproduction", "Exponent of K in the measured transition step (fit over the 9 (K, M) "
              "pairs x 4 eta_Y; bootstrap over seeds).", REF, Band.between(0.8, 1.2), INPUTS),
    ClaimSpec("t0-exponent-eta", "reproduction", "Exponent of eta_Y in the measured transition step.", REF,
              Band.between(-1.2, -0.8), INPUTS),
    ClaimSpec("t0-exponent-lnM", "reproduction", "Exponent of ln M in the measured transition step, against the "
              "paper's asymptotic ln M law (exponent 1).", REF, Band.between(0.8, 1.2), INPUTS),
    ClaimSpec("t0-exponent-lnM-exact", "reproduction", "Exponent of ln M in the measured transition step minus the "
              "exponent of the exact gamma peak (Eqs. 45, 85) fitted at the same cells: the finite-M form of the "
              "law.", "Tian et al. 2023, Thm. 1 / Eq. 85 (gamma(t) peaks where scanning ends)",
              Band.between(-0.2, 0.2), INPUTS),
)


def claims(tables, cfg):
    runs = tables["runs"]
    cells, cube = cell_frame(runs)
    if cells.K.nunique() < 2 or cells.M.nunique() < 2 or cells.eta_y.nunique() < 2:
        return {}
    exact = fit(cells, np.array([float(th.gamma_peak_time(k, m, e))
                                                   for k, m, e in zip(cells.K, cells.M, cells.eta_y)]))
    X = design(cells)
    boot = lambda k, shift=0.0: stats.bootstrap(cube, lambda s: fit(X, np.nanmedian(s, 0))[k] - shift,
                                                n_boot=1000, seed=19)
    return {"t0-exponent-K": boot(1), "t0-exponent-lnM": boot(2), "t0-exponent-eta": boot(3),
            "t0-exponent-lnM-exact": (boot(2, exact[2]), f"exact gamma-peak exponent {exact[2]:.3f}")}


EXPERIMENT = Experiment(
    name=NAME,
    summary="t_0 law over 9 (K, M) pairs: exponents of K, ln M and eta_Y fitted separately",
    reference="Tian et al. 2023, Thm. 4 (t_0 = 2 K ln M / eta_Y)",
    config=T0Config,
    run_batch=run_batch,
    grid={"num_last": (1, 2, 4), "M": (48, 300, 2000), "eta_y": (0.2, 0.4, 0.8, 1.6)},
    quick={"seeds": 3, "records": 40, "eta_y_floor": 0.8},
    quick_grid={"num_last": (1, 2), "M": (48, 300), "eta_y": (0.8, 1.6)},
    batch_key=batch_key,
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
