"""Rank collapse in pure self-attention (Dong, Cordonnier & Loukas 2021) and its consequences for
training (Noci et al. 2022): the one experiment that owns their claims, computed with the one simulator
:mod:`dynamics.rank_collapse` (uniform-attention growth from :mod:`dynamics.depth_width.theory`).

* Dong et al., per layer: one softmax-attention layer maps a token residual eps to O(eps^3) (log-log
  slope 3); with a skip connection the map is linear (slope 1); a token-wise MLP after attention keeps
  the cubic exponent.  Depth then gives doubly-exponential decay, followed in ``digits``-digit
  arithmetic (the residual falls below float64 round-off after two layers).
* Dong et al., Thm. 2.2 with heads: multi-head pure SANs of every (depth, width) of ``san_depths`` x
  ``san_widths``, evaluated stably in centred float64 coordinates; successive log-decrements of the
  residual ratio grow by 3 per layer.
* Dong et al., at init in float64: the residual ratio after ``collapse_depth`` layers with skips, and
  with MLPs but no skip.
* Noci et al.: at a collapsed input the query/key gradients vanish; under uniform attention the
  token-mean energy grows as (1 + alpha^2)^L, bounded by e for alpha = 1/sqrt(L).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from dynamics import rank_collapse as rc
from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field, require
from dynamics.depth_width import theory
from dynamics.experiment import Experiment
from dynamics.stats import Band

NAME = "rank-collapse"
STREAMS = ("scaling", "trajectory", "exact", "san", "noci_growth", "noci_gradients")


@dataclasses.dataclass(frozen=True)
class RankCollapseConfig:
    seed: int = field(0, "root seed: every random stream is spawned from numpy.random.SeedSequence(seed)")
    tokens: int = field(16, "Dong/Noci: tokens n")
    dim: int = field(32, "Dong: feature dimension d")
    eps_min: float = field(1e-3, "Dong: smallest input residual scale (float64 round-off floor ~1e-14 at output)")
    eps_max: float = field(1e-1, "Dong: largest input residual scale")
    collapse_depth: int = field(12, "Dong: layers in the float64 trajectories")
    trials: int = field(8, "Dong: random networks per measurement")
    exact_depth: int = field(6, "Dong: layers followed in high-precision arithmetic")
    exact_trials: int = field(2, "Dong: networks followed in high-precision arithmetic")
    exact_size: int = field(8, "Dong: tokens n = features d of the high-precision networks")
    exact_eps: float = field(0.1, "Dong: input residual scale of the high-precision networks")
    digits: int = field(1200, "Dong: decimal digits of the high-precision arithmetic (mpmath)")
    san_depths: tuple[int, ...] = field((4, 8, 16, 24, 32), "Dong, multi-head: depths L of the pure SANs")
    san_widths: tuple[int, ...] = field((32, 64, 128, 256), "Dong, multi-head: widths d of the pure SANs")
    san_heads: int = field(4, "Dong, multi-head: heads (every width must be a multiple)")
    san_networks: int = field(6, "Dong, multi-head: random networks per (depth, width)")
    san_inputs: int = field(8, "Dong, multi-head: random inputs per network")
    san_tokens: int = field(32, "Dong, multi-head: tokens of the inputs")
    noci_dim: int = field(128, "Noci: feature dimension d")
    noci_depths: tuple[int, ...] = field((4, 16), "Noci: depths L")
    noci_trials: int = field(400, "Noci: Monte Carlo trials per (L, alpha)")

    def __post_init__(self):
        require(0 < self.eps_min < self.eps_max <= 1, "need 0 < eps_min < eps_max <= 1")
        require(self.tokens >= 2 and self.dim >= 1 and self.noci_dim >= 1, "tokens >= 2, dim >= 1")
        require(1 <= self.exact_depth <= 7, "exact_depth must be between 1 and 7 (3^7 digits of decay)")
        require(self.exact_trials >= 1 and self.exact_size >= 2, "exact_trials >= 1 and exact_size >= 2")
        require(0 < self.exact_eps <= 1, "exact_eps must be in (0, 1]")
        require(self.digits >= 50, "digits must be at least 50")
        require(self.collapse_depth >= 1 and self.trials >= 1 and self.noci_trials >= 2, "depths and trials >= 1")
        require(all(L >= 1 for L in self.noci_depths), "noci_depths must be >= 1")
        require(self.san_depths and all(L >= 3 for L in self.san_depths),
                "san_depths must be >= 3 (a decrement ratio needs three layers)")
        require(self.san_heads >= 1 and self.san_widths and all(d % self.san_heads == 0 for d in self.san_widths),
                f"every san_width must be a positive multiple of san_heads={self.san_heads}")
        require(self.san_networks >= 1 and self.san_inputs >= 1 and self.san_tokens >= 2,
                "san_networks, san_inputs >= 1 and san_tokens >= 2")


def run_batch(cfgs, ctx):
    return [run_one(cfg, ctx) for cfg in cfgs]


def run_one(cfg: RankCollapseConfig, ctx) -> dict:
    seq = dict(zip(STREAMS, np.random.SeedSequence(cfg.seed).spawn(len(STREAMS))))
    rng = {k: np.random.default_rng(s) for k, s in seq.items()}
    tables = {}

    eps = np.geomspace(cfg.eps_max, cfg.eps_min, 5)
    rows = []
    for v in rc.VARIANTS:
        y = rc.residual_scaling(eps, v, cfg.tokens, cfg.dim, rng["scaling"], cfg.trials)
        rows += [dict(variant=v, eps=e, out_residual=o, slope=rc.loglog_slope(eps, y)) for e, o in zip(eps, y)]
    tables["dong_scaling"] = pd.DataFrame(rows)

    rows = []
    with ctx.bar(len(rc.VARIANTS), "float64 trajectories") as bar:
        for v in rc.VARIANTS:
            tr = rc.trajectories(v, cfg.collapse_depth, cfg.tokens, cfg.dim, rng["trajectory"], cfg.trials)
            for t in range(tr.shape[0]):
                rows += [dict(variant=v, trial=t, layer=l, ratio=tr[t, l]) for l in range(tr.shape[1])]
            bar.update(1)
    tables["dong_trajectory"] = pd.DataFrame(rows)

    rows = []
    n = cfg.exact_size
    with ctx.bar(cfg.exact_trials, f"{cfg.digits}-digit SANs") as bar:
        for t, s in enumerate(seq["exact"].spawn(cfg.exact_trials)):
            r = np.random.default_rng(s)
            X0 = r.standard_normal(n) + cfg.exact_eps * r.standard_normal((n, n))
            net = rc.draw(cfg.exact_depth, n, 1, "san", r)
            logs = rc.forward(X0, net, precision="mp", digits=cfg.digits)
            rows += [dict(trial=t, layer=l, ln_residual=x) for l, x in enumerate(logs)]
            bar.update(1)
    tables["dong_exact"] = pd.DataFrame(rows)

    tables["san"] = _san_rows(cfg, seq["san"], ctx)

    rows = []
    for L in cfg.noci_depths:
        for label, alpha in (("1", 1.0), ("1/sqrt(L)", 1 / math.sqrt(L))):
            s = theory.simulate_uniform_attention(L, alpha, cfg.tokens, cfg.noci_dim, cfg.noci_trials,
                                                  rng["noci_growth"])
            rows.append(dict(L=L, alpha=label, alpha_value=alpha, predicted=theory.uniform_attention_growth(L, alpha),
                             mean=s.mean(), se=s.std(ddof=1) / math.sqrt(len(s)), trials=len(s)))
    tables["noci_growth"] = pd.DataFrame(rows)
    collapsed, generic = rc.qk_gradient_ratio(cfg.tokens, cfg.dim, rng["noci_gradients"])
    tables["noci_gradients"] = pd.DataFrame([dict(input="X = 1 x^T (collapsed)", qk_over_v=collapsed),
                                             dict(input="Gaussian X", qk_over_v=generic)])
    return tables


def _san_rows(cfg: RankCollapseConfig, seq: np.random.SeedSequence, ctx) -> pd.DataFrame:
    """Multi-head pure SANs: centred and direct log residual ratios and decrement ratios, tidy rows."""
    cells = [(L, d) for L in cfg.san_depths for d in cfg.san_widths]
    parts = []
    with ctx.bar(len(cells), "multi-head pure SANs") as bar:
        for (L, d), cell_seq in zip(cells, seq.spawn(len(cells))):
            for k, s in enumerate(cell_seq.spawn(cfg.san_networks)):
                r = np.random.default_rng(s)
                net = rc.draw(L, d, cfg.san_heads, "san", r)
                X0 = r.standard_normal((cfg.san_inputs, cfg.san_tokens, d))
                centred = rc.log_residual_centred(X0, net)
                direct = rc.log_residual_direct(X0, net)
                ratio = np.full_like(centred, np.nan)
                ratio[:, 1:-1] = rc.decrement_ratios(centred)  # layer l: Delta_{l+1} / Delta_l
                i, l = np.meshgrid(np.arange(cfg.san_inputs), np.arange(L + 1), indexing="ij")
                parts.append(pd.DataFrame({"depth": L, "width": d, "network": k, "input": i.ravel(),
                                           "layer": l.ravel(), "log_ratio": centred.ravel(),
                                           "log_ratio_direct": direct.ravel(), "decrement_ratio": ratio.ravel()}))
            bar.update(1)
    return pd.concat(parts, ignore_index=True)


def exact_exponent(exact: pd.DataFrame, below: float = math.log(1e-3)) -> float:
    """Slope of ln r_{l+1} against ln r_l over layers already in the collapsed regime (r_l < 1e-3)."""
    xs, ys = [], []
    for _, g in exact.groupby("trial"):
        v = g.sort_values("layer").ln_residual.to_numpy()
        for a, b in zip(v[:-1], v[1:]):
            if a < below:
                xs.append(a)
                ys.append(b)
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 else math.nan


def summarize(tables, base):
    dong = tables["dong_scaling"].groupby("variant", sort=False).slope.first()
    rows = [dict(quantity=f"per-layer residual exponent ({v}) (compare: theory)", value=s,
                 compare=3.0 if "skip" not in v else 1.0) for v, s in dong.items()]
    rows.append(dict(quantity=f"doubly-exponential exponent, {base.digits}-digit SAN (compare: theory)",
                     value=exact_exponent(tables["dong_exact"]), compare=3.0))
    ratios = tables["san"].decrement_ratio.dropna()
    rows.append(dict(quantity=f"median decrement ratio, {base.san_heads}-head SANs (compare: theory)",
                     value=ratios.median() if len(ratios) else math.nan, compare=3.0))
    tr = tables["dong_trajectory"]
    last = tr[tr.layer == tr.layer.max()].groupby("variant", sort=False).ratio.median()
    rows += [dict(quantity=f"residual ratio after {base.collapse_depth} layers ({v}), median", value=r,
                  compare=math.nan) for v, r in last.items()]
    ng = tables["noci_growth"]
    rows += [dict(quantity=f"energy growth L={r.L} alpha={r.alpha} (compare: (1+alpha^2)^L)", value=r.mean,
                  compare=r.predicted) for r in ng.itertuples()]
    gr = tables["noci_gradients"]
    rows += [dict(quantity=f"(|dW_Q| + |dW_K|) / |dW_V| at {r.input}", value=r.qk_over_v, compare=math.nan)
             for r in gr.itertuples()]
    table = pd.DataFrame(rows)
    out = dict(tables)
    out["table"] = table
    out["headline"] = table.round(6)
    return out


def plot(tables, cfg) -> dict:
    from dynamics.report.figures import subplots

    figs = {}
    tr = tables["dong_trajectory"]
    fig, axes = subplots(1, 2, figsize=(10, 3.6))
    for v, g in tr.groupby("variant", sort=False):
        m = g.groupby("layer").ratio.apply(lambda s: float(np.exp(np.log(np.maximum(s, 1e-300)).mean())))
        axes[0].semilogy(m.index, np.maximum(m.to_numpy(), 1e-17), "o-", ms=3, label=v)
    axes[0].axhline(1e-15, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="layer", ylabel="||res(X)|| / ||X||  (composite norm)",
                title="Dong et al.: collapse at init (float64 floor dotted)")
    axes[0].legend(fontsize=7)
    ex = tables["dong_exact"]
    for t, g in ex.groupby("trial"):
        axes[1].plot(g.layer, -g.ln_residual / math.log(10), "o-", ms=3, label=f"trial {t}")
    L = np.arange(ex.layer.max() + 1)
    axes[1].plot(L, 3.0**L, "k:", lw=1, label="$\\propto 3^l$")
    axes[1].set(yscale="log", xlabel="layer", ylabel="-log10 ||res||",
                title=f"pure SAN, {cfg.digits}-digit arithmetic")
    axes[1].legend(fontsize=7)
    figs["dong_collapse"] = fig

    san = tables["san"]
    fig, axes = subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    deepest = san[san.depth == san.depth.max()]
    for k, (w, g) in enumerate(deepest.groupby("width")):
        m = g.groupby("layer")[["log_ratio", "log_ratio_direct"]].median()
        axes[0].plot(m.index, m.log_ratio / np.log(10), color=f"C{k}", label=f"centred d={w}")
        axes[0].plot(m.index, m.log_ratio_direct / np.log(10), color=f"C{k}", ls=":", lw=0.8)
    axes[0].set(xlabel="layer l", ylabel="log10 residual ratio",
                title=f"{cfg.san_heads}-head pure attention (dotted: direct float64)", xlim=(0, 8))
    axes[0].legend(fontsize=7)
    ratios = san.decrement_ratio.dropna()
    axes[1].hist(ratios, bins=40, color="C0")
    axes[1].axvline(3, color="k", lw=0.8)
    med = f"{ratios.median():.3f}" if len(ratios) else "n/a"
    axes[1].set(xlabel="Delta_{l+1} / Delta_l", title=f"successive log-decrement ratios (median {med})")
    figs["pure_attention_rank_collapse"] = fig
    return figs


_DONG = ("trials", "tokens", "dim", "eps_min", "eps_max", "seed")
_SAN = ("san_depths", "san_widths", "san_heads", "san_networks", "san_inputs", "san_tokens", "seed")
CLAIMS = (
    ClaimSpec("dong-cubic-per-layer", "consistency",
              "One pure softmax-attention layer maps a token residual eps to O(eps^3): log-log slope 3 +- 5% (the "
              "Taylor order of the layer the code builds).",
              "Dong et al. 2021, per-layer bound behind the 3^L exponent", Band.around(3.0, 0.05), _DONG),
    ClaimSpec("dong-skip-linear", "consistency",
              "With a skip connection the layer is linear in the residual (slope 1 +- 5%).",
              "Dong et al. 2021: skip connections stop the degeneration", Band.around(1.0, 0.05), _DONG),
    ClaimSpec("dong-mlp-keeps-cubic", "consistency",
              "A token-wise MLP after attention (no skip) keeps the cubic per-layer exponent (slope 3 +- 5%).",
              "Dong et al. 2021: bound with the MLP Lipschitz constant in the base (recalled, not checked against "
              "the PDF)", Band.around(3.0, 0.05), _DONG),
    ClaimSpec("dong-doubly-exponential", "consistency",
              "In 1200-digit arithmetic, ln r_(l+1) against ln r_l over collapsed layers (r_l < 1e-3) has slope 3 "
              "+- 5%: ||res|| ~ c^((3^l-1)/2) eps^(3^l).", "Dong et al. 2021, pure-SAN bound: exponent 3^L",
              Band.around(3.0, 0.05),
              ("exact_depth", "exact_trials", "exact_size", "exact_eps", "digits", "seed")),
    ClaimSpec("dong-skip-no-collapse", "reproduction",
              "With skip connections the residual ratio after collapse_depth layers stays above 0.1: per network, "
              "log10 of the ratio; t over networks; > -1.",
              "Dong et al. 2021: skip connections stop the output from degeneration", Band.above(-1.0),
              _DONG + ("collapse_depth",)),
    ClaimSpec("dong-mlp-no-collapse", "reproduction",
              "With MLPs (no skip) the residual ratio after collapse_depth layers stays above 0.1 (the issue's reading "
              "of Dong et al.'s abstract): per network, log10 of the ratio; t over networks; > -1.",
              "Dong et al. 2021 abstract: 'skip connections and MLPs stop the output from degeneration'",
              Band.above(-1.0), _DONG + ("collapse_depth",)),
    ClaimSpec("pure-attention-doubly-exponential", "consistency",
              "Pure self-attention (no skip/MLP/LN): successive log-decrements of the token residual grow by a factor "
              "near 3 (median ratio in [2, 4], residual <= 1e-2 and >= 1e-150, exact centred float64): the Taylor "
              "order of the layer the code builds.", "Dong, Cordonnier & Loukas 2021, Thm. 2.2", Band.between(2.0, 4.0),
              _SAN),
    *(ClaimSpec(f"noci-growth-L{L}-alpha-{a}", "consistency",
                f"Uniform attention, residual scale alpha={'1' if a == '1' else '1/sqrt(L)'}, L={L}: the Monte Carlo "
                "mean of the token-mean energy growth divided by (1+alpha^2)^L, a closed form derived from the same "
                "uniform-attention approximation the simulation uses; t over trials, in [0.95, 1.05].",
                "Noci et al. 2022 (uniform-attention approximation; derivation in the reference notes)",
                Band.between(0.95, 1.05), ("noci_trials", "seed"))
      for L in (4, 16) for a in ("1", "invsqrtL")),
    ClaimSpec("noci-qk-gradients-vanish", "consistency",
              "At a collapsed input X = 1 x^T the query and key gradients vanish: (||dW_Q|| + ||dW_K||) / ||dW_V|| = 0 "
              "to float64 round-off (an algebraic identity).",
              "Noci et al. 2022: rank collapse makes query/key gradients vanish", Band.below(1e-12)),
)


def claims(tables, cfg):
    out: dict = {}
    sc = tables["dong_scaling"].groupby("variant").slope.first()
    out["dong-cubic-per-layer"] = (S.exact(sc["san"]), f"eps in [{cfg.eps_min:g}, {cfg.eps_max:g}], {cfg.trials} "
                                   f"networks, n={cfg.tokens}, d={cfg.dim}")
    out["dong-skip-linear"] = S.exact(sc["san+skip"])
    out["dong-mlp-keeps-cubic"] = S.exact(sc["san+mlp"])
    out["dong-doubly-exponential"] = S.exact(exact_exponent(tables["dong_exact"]))
    tr = tables["dong_trajectory"]
    last = tr[tr.layer == tr.layer.max()]
    log_ratio = lambda v: S.t_interval(np.log10(np.maximum(last[last.variant == v].ratio.to_numpy(), 1e-300)))  # noqa: E731
    out["dong-skip-no-collapse"] = log_ratio("san+skip")
    out["dong-mlp-no-collapse"] = (log_ratio("san+mlp"),
                                   "an MLP without a skip is token-wise and Lipschitz, so it cannot undo the cubic "
                                   "contraction (dong-mlp-keeps-cubic); at standard init (He, width 4d) the collapse "
                                   "proceeds like pure attention. Dong et al.'s own analysis says MLPs only slow the "
                                   "collapse through their Lipschitz constant; the abstract's wording overstates it.")
    ratios = tables["san"].decrement_ratio.dropna()
    out["pure-attention-doubly-exponential"] = (
        (S.exact(ratios.median()), f"{len(ratios)} ratios; 10-90% range {ratios.quantile(0.1):.3f}-"
         f"{ratios.quantile(0.9):.3f}") if len(ratios) else None)
    declared = {c.id for c in CLAIMS}
    for r in tables["noci_growth"].itertuples():
        cid = f"noci-growth-L{r.L}-alpha-{'1' if r.alpha == '1' else 'invsqrtL'}"
        if cid in declared:  # depths other than the registered 4 and 16 are shown in the table only
            # the saved table holds the trial mean and its s.e.: the t interval on mean/predicted, df = trials - 1
            out[cid] = S.t_from_summary(r.mean / r.predicted, r.se / r.predicted, int(r.trials))
    gr = tables["noci_gradients"].set_index("input").qk_over_v
    out["noci-qk-gradients-vanish"] = (S.exact(gr.iloc[0]), f"same ratio at a Gaussian input: {gr.iloc[1]:.3g}")
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="Dong rank collapse (per-layer cube, 3^L, multi-head SANs, skips/MLPs) and Noci (QK gradients, (1+a^2)^L)",
    reference="Dong, Cordonnier & Loukas 2021 (Thm. 2.2); Noci et al. 2022",
    config=RankCollapseConfig,
    run_batch=run_batch,
    quick={"trials": 3, "collapse_depth": 6, "exact_depth": 4, "digits": 400, "noci_trials": 200,
           "san_depths": (4, 8), "san_widths": (32, 64), "san_networks": 3, "san_inputs": 4},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
)
