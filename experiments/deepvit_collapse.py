"""DeepViT (Zhou et al. 2021): attention collapse and re-attention's accuracy claim, on a task where
depth pays, with converged training; collapse separated from dead (uniform) blocks.

Reference: Zhou et al. 2021 (DeepViT, arXiv 2103.11886) Fig. 1 (top-1 accuracy vs depth: ViT saturates
at 24 blocks and declines at 32; DeepViT keeps improving), Eq. 2 and Fig. 3 (cross-layer similarity,
similar blocks: 5/11/15 for ViT-16/24/32, 0 for DeepViT), Sec. 4.1 (a wider embedding reduces similar
blocks); official ``models/layers.py`` ``ReAttention``.  Issue 17.

Task: the distinct-glyphs task (``dynamics.collapse.data.relations``): ``n_placed`` glyphs on a 4x4 grid
of 4x4-pixel cells, one cell per patch token; the label is the number of different glyph types, a
function of the equality relation between all pairs of occupied patches (docs/deepvit.md says why).

One cell = one (dataset, depth, width); heads = width / ``head_dim`` (fixed head dimension).  Each cell

* ``init``: the attention variants at random init (context: uniform-ish maps at init, not trained
  collapse), probed in training mode (BN batch statistics);
* ``trained`` (depth in ``train_depths`` at ``train_width``; the other grid widths only at ``width_depths``):
  vanilla and re-attention ViTs, each a bracket of ``lrs`` x ``seeds`` replicas on the batched engine,
  trained to a validation plateau with early stopping (``dynamics.collapse.converge``); the learning
  rate is chosen per (variant, depth, width) on validation accuracy, test accuracy is reported for it;
  the chosen models' attention maps are measured in eval mode on held-out probe images;
* ``bn``: how exactly re-attention's BN removed the uniform component (float64, batch statistics).

Similar blocks (DeepViT Fig. 3; thresholds unpublished, all parameters, fixed before the run):
frac_{p,q}(tau) = share of (image, head, token) with M^{p,q}_{h,t} > tau; r_p = mean of frac_{p,p-j}
over j = 1..k; block p is similar when r_p >= block_thr (raw M, the paper's Eq. 2; centred M reported
beside).  A block is *dead* when the mean normalised entropy of its softmax maps is >= dead_entropy
(near-uniform attention, which gives raw M = 1 between any two such blocks without any shared pattern);
a *collapsed* block is similar and not dead: the claims count collapsed blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pandas as pd
import torch

from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.collapse import analysis, data, vit
from dynamics.collapse import converge as cv
from dynamics.collapse.attention import VARIANTS
from dynamics.collapse.vit import ViTSpec, check_patch, init_params
from dynamics.config import field, require
from dynamics.experiment import Experiment
from dynamics.runtime import torch_dtype, torch_generator
from dynamics.stats import Band

NAME = "deepvit-collapse"
REF = "Zhou et al. 2021 (DeepViT)"
TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
BLOCK_THRS = (0.5, 0.7, 0.8, 0.9, 0.95)
RUN_KEYS = ["dataset", "depth", "width", "study", "variant", "seed"]
TRANSFORMS = ("reattn", "reattn-nonorm", "bn-only", "drop")  # variants whose effective map is not the softmax


@dataclasses.dataclass(frozen=True)
class CollapseConfig:
    """Composed from the library's :class:`~dynamics.collapse.vit.ViTSpec` (``vit.depth``, ``vit.width``,
    ...; bare where unique: ``depth``, ``width``, ``mlp_ratio``, ``init``, ``temperature``, ``attn_drop``,
    ``transform_scale``, so grid keys, table columns and claim inputs keep their names).  One key per
    quantity: ``vit.heads`` is ``width // head_dim`` (set here), the data's ``n_patches``, ``patch_dim``,
    ``n_classes`` and the variant's ``attention`` are set per cell (:func:`_spec`); none is a key."""

    dataset: Literal["relations", "arrows", "glyphs", "digits"] = field(
        "relations", "relations (distinct glyphs, issue 17), arrows (arrow chasing), glyphs (majority glyph) or digits")
    vit: ViTSpec = field(ViTSpec(depth=8, width=32, heads=8, n_patches=16, patch_dim=16, n_classes=5),
                         "the ViT (depth grid: 2, 4, 8, 16; width grid: 16, 32); heads from head_dim, n_patches, "
                         "patch_dim, n_classes from the data, attention from the variant",
                         derived=("heads", "n_patches", "patch_dim", "n_classes", "attention"))
    head_dim: int = field(4, "per-head width d_h; heads = width / head_dim, so heads grow with width")
    patch: int = field(0, "patch size in pixels; 0 = 2 for digits (8x8), 4 for the glyph tasks (16x16)")
    hops: int = field(3, "arrows: moves to follow from the start cell")
    n_placed: int = field(8, "relations: glyphs per image")
    min_distinct: int = field(2, "relations: fewest distinct glyph types (class 0)")
    max_distinct: int = field(6, "relations: most distinct glyph types (last class)")
    noise: float = field(0.35, "arrows/relations: standard deviation of the Gaussian pixel noise (ink is 0.6 to 1)")
    n_train: int = field(6000, "arrows/relations: training images (validation and test: n_test each)")
    n_test: int = field(500, "arrows/relations: validation images and test images (each)")
    init_variants: tuple[str, ...] = field(("vanilla", "reattn", "reattn-nonorm", "bn-only"),
                                           "attention variants analysed at random init")
    train_variants: tuple[str, ...] = field(("vanilla", "reattn"), "attention variants trained")
    train_depths: tuple[int, ...] = field((2, 4, 8, 16), "depths at which models are trained")
    train_width: int = field(32, "the width trained at every train depth (the accuracy claims' width)")
    width_depths: tuple[int, ...] = field((8,), "depths at which the other grid widths are trained too")
    seeds: int = field(5, "trained seeds per (variant, depth, width, learning rate), batched as replicas")
    init_seeds: int = field(4, "random-init seeds per (variant, depth, width)")
    lrs: tuple[float, ...] = field((1e-3, 3e-3, 1e-2), "peak learning-rate bracket (chosen on validation)")
    max_steps: int = field(3000, "AdamW steps at most (cosine schedule to 0 at max_steps)")
    min_steps: int = field(1500, "no replica stops early before this step (seeds can sit on the chance "
                                "plateau for hundreds of steps)")
    eval_every: int = field(50, "steps between validation evaluations (early stopping)")
    patience: int = field(6, "evaluations without a better validation loss before a replica stops")
    batch: int = field(32, "images per AdamW step per replica")
    weight_decay: float = field(0.05, "AdamW weight decay on weight matrices")
    probe_images: int = field(32, "held-out images whose attention maps are measured")
    tau: float = field(0.9, "per-element threshold: M > tau counts as similar (must be one of taus)")
    taus: tuple[float, ...] = field(TAUS, "per-element thresholds stored for the sensitivity table")
    window: int = field(1, "k: a block is compared with the k blocks before it")
    max_window: int = field(2, "largest k stored for the sensitivity table")
    block_thr: float = field(0.9, "a block is similar when its similarity ratio >= this")
    dead_entropy: float = field(0.9, "a block is dead when its softmax maps' mean normalised entropy >= this")
    map_depth: int = field(16, "depth whose attention-map grid is stored")
    map_width: int = field(32, "width whose attention-map grid is stored")
    seed: int = field(0, "root seed")
    dtype: Literal["float32", "float64"] = field("float32", "ViT precision (metrics are float64)")
    device: str = field("cpu", "torch device, e.g. cpu or cuda")
    threads: int = field(1, "torch CPU threads during the run (0 = torch's default; 1 is robust on a shared "
                            "machine, where 2 spinning OpenMP threads ran 5x slower)")

    def __post_init__(self) -> None:
        require(self.head_dim >= 1 and self.width % self.head_dim == 0,
                f"width {self.width} is not divisible by head_dim {self.head_dim}")
        # the derived field (module docstring of dynamics.config); replace validates the spec
        object.__setattr__(self, "vit", dataclasses.replace(self.vit, heads=self.width // self.head_dim))
        check_patch(data.image_size(self.dataset), self.patch_size)
        for name in ("tau", "block_thr", "dead_entropy"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        require(all(0 <= t <= 1 for t in self.taus), f"taus must be in [0, 1], got {self.taus}")
        require(self.tau in self.taus, f"tau={self.tau} must be one of taus={self.taus}")
        require(1 <= self.window <= self.max_window,
                f"window must be in [1, max_window={self.max_window}], got {self.window}")
        for name in ("init_variants", "train_variants"):
            bad = [v for v in getattr(self, name) if v not in VARIANTS]
            require(not bad, f"{name}: unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
        for name in ("seeds", "init_seeds", "max_steps", "batch", "probe_images", "eval_every", "patience",
                     "n_train", "n_test", "hops"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        require(len(self.lrs) >= 1 and all(lr > 0 for lr in self.lrs), f"lrs must be positive, got {self.lrs}")
        require(self.min_steps >= 0, f"min_steps must be at least 0, got {self.min_steps}")
        require(1 <= self.min_distinct <= self.max_distinct <= min(self.n_placed, len(data.GLYPHS))
                and self.n_placed <= 16, "relations needs 1 <= min_distinct <= max_distinct <= min(n_placed, 6) "
                f"and n_placed <= 16, got {self.min_distinct}, {self.max_distinct}, {self.n_placed}")
        require(self.noise >= 0, f"noise must be >= 0, got {self.noise}")
        require(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"unknown device {self.device!r}")

    @property
    def depth(self) -> int:
        return self.vit.depth

    @property
    def width(self) -> int:
        return self.vit.width

    @property
    def heads(self) -> int:
        return self.vit.heads

    @property
    def transform_scale(self) -> bool:
        return self.vit.transform_scale

    @property
    def patch_size(self) -> int:
        return self.patch or {"digits": 2}.get(self.dataset, 4)

    @property
    def trained(self) -> bool:
        return self.depth in self.train_depths and (self.width == self.train_width or self.depth in self.width_depths)


# ------------------------------------------------------------------------------------------------
# One cell


def _spec(cfg: CollapseConfig, split: data.Split, variant: str) -> ViTSpec:
    """The config's ViT with the fields the data and the variant set (``n_patches``, ``patch_dim``,
    ``n_classes``, ``attention``)."""
    p = cfg.patch_size
    return dataclasses.replace(cfg.vit, n_patches=(split.image_size // p) ** 2, patch_dim=split.channels * p * p,
                               n_classes=split.n_classes, attention=variant)


def _bracket(cfg: CollapseConfig) -> cv.BracketOptions:
    return cv.BracketOptions(lrs=cfg.lrs, max_steps=cfg.max_steps, batch=cfg.batch, weight_decay=cfg.weight_decay,
                             eval_every=cfg.eval_every, patience=cfg.patience, min_steps=cfg.min_steps,
                             patch=cfg.patch_size,
                             root_seed=cfg.seed, dtype=cfg.dtype, device=cfg.device)


def load_split(cfg: CollapseConfig) -> data.Split:
    """The cell's data; the arrows and relations tasks carry their own validation split."""
    if cfg.dataset == "arrows":
        return data.arrows(cfg.n_train, cfg.n_test, hops=cfg.hops, noise=cfg.noise, seed=cfg.seed)
    if cfg.dataset == "relations":
        return data.relations(cfg.n_train, cfg.n_test, n_placed=cfg.n_placed, min_distinct=cfg.min_distinct,
                              max_distinct=cfg.max_distinct, noise=cfg.noise, seed=cfg.seed)
    return data.load(cfg.dataset, seed=cfg.seed)


def _pair_rows(frac: np.ndarray, mean: np.ndarray, cfg: CollapseConfig, study: str, variant: str,
               seeds) -> pd.DataFrame:
    """Tidy rows (study, variant, seed, block, lag, centred, mean_M, frac_<tau>...) for p - lag >= 1."""
    R, L, K = frac.shape[:3]
    r, p, j, cen = np.meshgrid(np.arange(R), np.arange(L), np.arange(K), np.arange(2), indexing="ij")
    keep = np.isfinite(mean).ravel()
    pairs = pd.DataFrame({"study": study, "variant": variant, "seed": np.asarray(seeds)[r.ravel()][keep],
                          "block": p.ravel()[keep] + 1, "lag": j.ravel()[keep] + 1,
                          "centred": cen.ravel()[keep].astype(bool), "mean_M": mean.ravel()[keep]})
    flat = np.moveaxis(frac, 3, -1).reshape(-1, frac.shape[3])[keep]  # (R, L, K, 2, n_tau) -> rows
    for i, t in enumerate(cfg.taus):
        pairs[f"frac_{t:g}"] = flat[:, i]
    return pairs


def _block_rows(c: analysis.Collapse, study: str, variant: str, seeds) -> pd.DataFrame:
    R, L = c.entropy.shape
    rb, pb = np.meshgrid(np.arange(R), np.arange(L), indexing="ij")
    return pd.DataFrame({"study": study, "variant": variant, "seed": np.asarray(seeds)[rb.ravel()],
                         "block": pb.ravel() + 1, "entropy": c.entropy.ravel(),
                         "row_identity": c.row_identity_softmax.ravel(),
                         "row_identity_effective": c.row_identity_effective.ravel(),
                         "token_residual": c.token_residual[:, 1:].ravel(), "dc_abs": c.dc_abs.ravel()})


def _measure_rows(rec, cfg: CollapseConfig, study: str, variant: str, seeds) -> dict[str, pd.DataFrame]:
    """pairs (effective maps), blocks, and pairs_softmax (the softmax maps under a transform) rows."""
    c = analysis.measure(rec, cfg.taus, cfg.max_window)
    out = {"pairs": _pair_rows(c.pair_frac, c.pair_mean, cfg, study, variant, seeds),
           "blocks": _block_rows(c, study, variant, seeds)}
    if variant in TRANSFORMS:
        frac, mean = analysis.pair_stats(analysis.stack(rec.softmax), cfg.taus, cfg.max_window)
        out["pairs_softmax"] = _pair_rows(frac, mean, cfg, study, variant, seeds)
    return out


def _map_rows(rec, study: str, variant: str) -> pd.DataFrame:
    """Head-averaged effective map of probe image 0, seed index 0, every block: (block, i, j, value)."""
    maps = torch.stack([E[0, 0].mean(0) for E in rec.effective]).to(torch.float64).cpu().numpy()  # (L, T, T)
    L, T, _ = maps.shape
    b, i, j = np.meshgrid(np.arange(L), np.arange(T), np.arange(T), indexing="ij")
    return pd.DataFrame({"study": study, "variant": variant, "block": b.ravel() + 1, "i": i.ravel(),
                         "j": j.ravel(), "value": maps.ravel()})


def _float64(params: dict, buffers: dict) -> tuple[dict, dict]:
    return ({k: v.detach().to(torch.float64) for k, v in params.items()},
            {k: v.detach().to(torch.float64).clone() for k, v in buffers.items()})


def _bn_rows(spec, params, buffers, x, study, seeds, scale, max_runs: int = 2) -> list[dict]:
    """The DC identity with batch statistics in float64, and the eval-mode (running statistics) offset.

    The identity is exact, so the first ``max_runs`` runs suffice (float64 passes are the slow part).
    """
    seeds = list(seeds)[:max_runs]
    params = {k: v[:max_runs] for k, v in params.items()}
    buffers = {k: v[:max_runs] for k, v in buffers.items()}
    p64, b64 = _float64(params, buffers)
    rec = vit.probe(p64, b64, spec, x.to(torch.float64), train=True)
    exact = analysis.bn_identity_errors(rec, p64, scale)
    rec_eval = vit.probe(p64, b64, spec, x.to(torch.float64), train=False)
    running = analysis.bn_identity_errors(rec_eval, p64, scale)
    return [{"study": study, "variant": spec.attention, "seed": s, "dc_dev_batch_stats": exact["dc_dev"][i],
             "closed_form_rel_err": exact["closed_form"][i], "dc_dev_running_stats": running["dc_dev"][i]}
            for i, s in enumerate(seeds)]

def run_cell(cfg: CollapseConfig, ctx) -> dict[str, pd.DataFrame]:
    split = load_split(cfg)
    ctx.notes[f"data_{cfg.dataset}"] = {"sha256_16": split.digest, "n_train": len(split.y_train),
                                        "n_test": len(split.y_test)}
    dtype = torch_dtype(cfg.dtype)
    x_probe = cv.tokens(split.x_test, cfg.patch_size, dtype, torch.device(cfg.device))
    x_probe = x_probe[: cfg.probe_images]
    parts: dict[str, list[pd.DataFrame]] = {}
    bn: list[dict] = []

    def add(rows: dict[str, pd.DataFrame]) -> None:
        for name, df in rows.items():
            parts.setdefault(name, []).append(df)

    store_maps = cfg.depth == cfg.map_depth and cfg.width == cfg.map_width
    gen = torch_generator(cfg.seed, 0, "init-probe-dropout", cfg.device)  # the drop variant's masks

    init_seeds = list(range(cfg.init_seeds))
    for variant in cfg.init_variants:
        spec = _spec(cfg, split, variant)
        params, buffers = init_params(spec, init_seeds, cfg.seed, dtype, cfg.device)
        rec = vit.probe(params, buffers, spec, x_probe, train=True, generator=gen)
        add(_measure_rows(rec, cfg, "init", variant, init_seeds))
        add({"runs": pd.DataFrame({"study": "init", "variant": variant, "seed": init_seeds})})
        if store_maps and variant == "vanilla":
            add({"maps": _map_rows(rec, "init", variant)})
        if variant == "reattn":
            bn += _bn_rows(spec, params, buffers, x_probe, "init", init_seeds, _scale(cfg))
        del rec

    if cfg.trained:
        seeds = list(range(cfg.seeds))
        for variant in cfg.train_variants:
            spec = _spec(cfg, split, variant)
            fit = cv.train_bracket(spec, split, seeds, _bracket(cfg), bar=ctx.bar)
            sel = fit.selected()
            params = {k: v[sel] for k, v in fit.params.items()}
            buffers = {k: v[sel].clone() for k, v in fit.buffers.items()}
            chosen = fit.runs.iloc[sel]
            rec = vit.probe(params, buffers, spec, x_probe, train=False)
            add(_measure_rows(rec, cfg, "trained", variant, seeds))
            add({"runs": pd.DataFrame({"study": "trained", "variant": variant, "seed": seeds,
                                       "acc_test": chosen.test_acc.to_numpy(), "acc_val": chosen.val_acc.to_numpy(),
                                       "acc_train": chosen.train_acc.to_numpy(), "lr": chosen.lr.to_numpy(),
                                       "best_step": chosen.best_step.to_numpy(),
                                       "stop_step": chosen.stop_step.to_numpy(),
                                       "stopped_early": chosen.stopped_early.to_numpy(),
                                       "diverged_step": chosen.diverged_step.to_numpy()}),
                 "bracket": fit.runs.assign(variant=variant),
                 "curves": fit.curves.assign(variant=variant)})
            if store_maps:
                add({"maps": _map_rows(rec, "trained", variant)})
            if variant == "reattn":
                bn += _bn_rows(spec, params, buffers, x_probe, "trained", seeds, _scale(cfg))
            del rec, fit, params, buffers

    out = {name: pd.concat(dfs, ignore_index=True) for name, dfs in parts.items()}
    if bn:
        out["bn"] = pd.DataFrame(bn)
    return out


def _scale(cfg: CollapseConfig) -> float:
    return cfg.head_dim ** -0.5 if cfg.transform_scale else 1.0


def cell_cost(cfg: CollapseConfig) -> float:
    """A cell's work in forward passes of one image through one block of width 1 (for the progress ETA):
    training costs three forwards per image (backward included) plus the validation forwards; the
    random-init probes are one forward of ``probe_images``.  In the default grid the depth-16 training
    cell counts about 37,000 times the depth-16 init-only cell.  In session 11's full run the training
    cells' times, read off the heartbeat, were within a factor of 2 of these ratios (the per-operation
    overhead that dominates small cells is not in it): enough for an ETA, not a performance model."""
    per_image = cfg.depth * cfg.width
    probes = len(cfg.init_variants) * cfg.init_seeds * cfg.probe_images
    if not cfg.trained:
        return per_image * probes
    replicas = len(cfg.train_variants) * len(cfg.lrs) * cfg.seeds
    images = cfg.max_steps * (3 * cfg.batch + cfg.n_test / cfg.eval_every)
    return per_image * (probes + replicas * images)


def run_batch(cfgs, ctx):
    before = torch.get_num_threads()
    if cfgs[0].threads:
        torch.set_num_threads(cfgs[0].threads)
    try:
        return [run_cell(cfg, ctx) for cfg in cfgs]
    finally:
        torch.set_num_threads(before)  # leave the process as we found it (``dynamics verify`` runs several)


# ------------------------------------------------------------------------------------------------
# Similar-block counts from the stored pair fractions


def block_ratio_table(pairs: pd.DataFrame, tau: float, k: int) -> pd.DataFrame:
    """r_p(tau, k) per run, centring and block: the mean of frac_{p,p-j}(tau) over j = 1..k."""
    col = f"frac_{tau:g}"
    sub = pairs[pairs.lag <= k]
    return sub.groupby(RUN_KEYS + ["centred", "block"], sort=False)[col].mean().rename("ratio").reset_index()


def count_table(ratios: pd.DataFrame, block_thr: float) -> pd.DataFrame:
    """Per run and centring: number (and share of the L - 1 comparable blocks) of blocks with r_p >= thr."""
    keys = RUN_KEYS + ["centred"]
    out = (ratios.ratio >= block_thr).groupby([ratios[k] for k in keys], sort=False).sum()
    out = out.rename("n_similar").reset_index()
    out["frac_similar"] = out.n_similar / (out.depth - 1)
    return out


def similar_counts(pairs: pd.DataFrame, tau: float, k: int, block_thr: float) -> pd.DataFrame:
    """Per run and centring: DeepViT's number of similar blocks at (tau, k, block_thr)."""
    return count_table(block_ratio_table(pairs, tau, k), block_thr)


def block_curves(pairs: pd.DataFrame, tau: float, k: int) -> pd.DataFrame:
    """DeepViT Fig. 3a: the similarity ratio r_p of each block, mean and std over seeds."""
    r = block_ratio_table(pairs, tau, k)
    keys = ["dataset", "depth", "width", "study", "variant", "centred", "block"]
    return r.groupby(keys, sort=True).ratio.agg(ratio_mean="mean", ratio_std="std", n_seeds="count").reset_index()


def _t(values) -> tuple[float, float, float, int]:
    """(mean, standard error, t = mean/se, n); t = 0 when every value is 0 and +-inf for a constant."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = v.mean()
    se = v.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    if not se or not np.isfinite(se):
        t = 0.0 if mean == 0 else (np.inf * np.sign(mean) if n > 1 else np.nan)
    else:
        t = mean / se
    return float(mean), float(se), float(t), n


def _codes(*keys: np.ndarray) -> np.ndarray:
    """One integer per distinct combination of the key arrays."""
    ints = np.stack([pd.factorize(np.asarray(k))[0] for k in keys], 1)
    return np.unique(ints, axis=0, return_inverse=True)[1].ravel()


def _slopes(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x within each group (groups with a single x value are dropped)."""
    n = np.bincount(groups).astype(float)
    sx, sy = np.bincount(groups, x), np.bincount(groups, y)
    sxx, sxy = np.bincount(groups, x * x), np.bincount(groups, x * y)
    den = n * sxx - sx ** 2
    ok = (n > 1) & (den > 1e-9 * np.maximum(n * sxx, 1e-300))
    return (n * sxy - sx * sy)[ok] / den[ok]


def _trend_stats(depth, width, seed, variant, n_similar, frac_similar) -> dict[str, tuple]:
    """(mean, se, t, n) of each trend of :func:`_trend_values`; all arguments are aligned arrays (one per run)."""
    return {k: _t(v) for k, v in _trend_values(depth, width, seed, variant, n_similar, frac_similar).items()}


def _trend_values(depth, width, seed, variant, n_similar, frac_similar) -> dict[str, np.ndarray]:
    """Per independent unit: depth slopes per (width, seed), minus width slopes per (depth, seed), and the
    vanilla - re-attention differences paired by (depth, width, seed)."""
    van = variant == "vanilla"
    d_slopes = _slopes(depth[van].astype(float), frac_similar[van], _codes(width[van], seed[van]))
    w_slopes = _slopes(np.log2(width[van].astype(float)), n_similar[van].astype(float), _codes(depth[van], seed[van]))
    # Pair vanilla and re-attention runs with the same (depth, width, seed): they share their init weights.
    re = variant == "reattn"
    key = lambda m: depth[m].astype(np.int64) * 10**9 + width[m].astype(np.int64) * 10**4 + seed[m].astype(np.int64)
    kv, kr = key(van), key(re)
    common, iv, ir = np.intersect1d(kv, kr, return_indices=True)
    diffs = n_similar[van][iv].astype(float) - n_similar[re][ir].astype(float)
    return {"depth": d_slopes, "width": -w_slopes, "reattn": diffs}


# ------------------------------------------------------------------------------------------------
# Summaries


def block_states(pairs: pd.DataFrame, blocks: pd.DataFrame, base: CollapseConfig) -> pd.DataFrame:
    """Per run and block: similar (raw M, the paper's Eq. 2), similar (centred M), dead (softmax maps'
    mean normalised entropy >= dead_entropy) and collapsed (similar under raw M and not dead)."""
    r = block_ratio_table(pairs, base.tau, base.window)
    wide = r.pivot_table(index=RUN_KEYS + ["block"], columns="centred", values="ratio").reset_index()
    wide = wide.rename(columns={False: "ratio_raw", True: "ratio_centred"})
    out = blocks[RUN_KEYS + ["block", "entropy"]].merge(wide, on=RUN_KEYS + ["block"], how="left")
    out["similar_raw"] = out.ratio_raw.fillna(-1) >= base.block_thr  # block 1 has no predecessor: never similar
    out["similar_centred"] = out.ratio_centred.fillna(-1) >= base.block_thr
    out["dead"] = out.entropy >= base.dead_entropy
    out["collapsed"] = out.similar_raw & ~out.dead
    return out


def run_counts(states: pd.DataFrame) -> pd.DataFrame:
    """Per run: counts of similar (raw, centred), dead and collapsed blocks; frac_collapsed = share of the
    L - 1 blocks that have a predecessor."""
    cols = ["similar_raw", "similar_centred", "dead", "collapsed"]
    out = states.groupby(RUN_KEYS, sort=False)[cols].sum().reset_index()
    out = out.rename(columns={c: f"n_{c}" for c in cols})
    out["frac_collapsed"] = out.n_collapsed / (out.depth - 1).clip(lower=1)
    return out


def _half(x) -> float:
    e = S.t_interval(x)
    return (e.high - e.low) / 2 if e.has_interval else np.nan


def summarize(tables, base: CollapseConfig):
    pairs, blocks, runs = tables["pairs"], tables["blocks"], tables["runs"]
    states = block_states(pairs, blocks, base)
    counts = run_counts(states)
    mean_entropy = blocks.groupby(RUN_KEYS).entropy.mean().rename("entropy_mean").reset_index()
    adj = pairs[(pairs.lag == 1)].groupby(RUN_KEYS + ["centred"]).mean_M.mean().unstack("centred")
    adj.columns = ["mean_adjacent_M_raw", "mean_adjacent_M_centred"]
    per_run = (runs.merge(counts, on=RUN_KEYS, how="left").merge(mean_entropy, on=RUN_KEYS, how="left")
               .merge(adj.reset_index(), on=RUN_KEYS, how="left"))
    keys = ["dataset", "study", "variant", "depth", "width"]
    agg = {"n_seeds": ("seed", "count"),
           "collapsed_mean": ("n_collapsed", "mean"), "collapsed_std": ("n_collapsed", "std"),
           "similar_raw_mean": ("n_similar_raw", "mean"), "similar_raw_std": ("n_similar_raw", "std"),
           "similar_centred_mean": ("n_similar_centred", "mean"), "dead_mean": ("n_dead", "mean"),
           "dead_std": ("n_dead", "std"), "entropy_mean": ("entropy_mean", "mean"),
           "adjacent_M_raw": ("mean_adjacent_M_raw", "mean"), "adjacent_M_centred": ("mean_adjacent_M_centred", "mean")}
    if "acc_test" in per_run:
        agg |= {"acc_test_mean": ("acc_test", "mean"), "acc_test_ci": ("acc_test", _half),
                "acc_val_mean": ("acc_val", "mean"), "acc_train_mean": ("acc_train", "mean"),
                "lr": ("lr", "first"), "best_step_mean": ("best_step", "mean"),
                "stopped_early_share": ("stopped_early", "mean"), "diverged": ("diverged_step", lambda s: (s >= 0).sum())}
    table = per_run.groupby(keys, sort=True).agg(**agg).reset_index()
    out = {"table": table, "per_run": per_run, "block_states": states, "pairs": pairs, "blocks": blocks,
           "runs": runs, "curves_fig3": block_curves(pairs, base.tau, base.window)}
    sens = sensitivity(pairs, base)
    if len(sens):  # empty when neither vanilla nor re-attention was measured (e.g. a bn-only run)
        out["sensitivity"] = sens
    for name in ("pairs_softmax", "bn", "maps", "curves", "bracket"):
        if name in tables:
            out[name] = tables[name]
    out["headline"] = headline(table, base)
    return out


def headline(table: pd.DataFrame, base: CollapseConfig) -> pd.DataFrame:
    """Per trained (dataset, depth) at the accuracy claims' width: test accuracy (mean ± 95% t half-width
    over seeds) of both variants, and collapsed / dead / raw-similar blocks of both."""
    t = table[(table.study == "trained") & (table.width == base.train_width)]
    if t.empty:
        return pd.DataFrame()
    rows = []

    def first(g: pd.DataFrame, variant: str) -> pd.Series:
        s = g[g.variant == variant]
        return s.iloc[0] if len(s) else pd.Series(np.nan, index=g.columns)  # variant not trained (a profile)

    for (ds, depth), g in t.groupby(["dataset", "depth"]):
        van, re = first(g, "vanilla"), first(g, "reattn")
        rows.append({"dataset": ds, "depth": depth, "width": base.train_width,
                     "acc vanilla": f"{van.acc_test_mean:.3f} ± {van.acc_test_ci:.3f}",
                     "acc reattn": f"{re.acc_test_mean:.3f} ± {re.acc_test_ci:.3f}",
                     "lr vanilla": van.lr, "lr reattn": re.lr,
                     "collapsed vanilla": van.collapsed_mean, "dead vanilla": van.dead_mean,
                     "similar(raw) vanilla": van.similar_raw_mean, "similar(centred) vanilla": van.similar_centred_mean,
                     "collapsed reattn": re.collapsed_mean, "dead reattn": re.dead_mean})
    return pd.DataFrame(rows)


def sensitivity(pairs: pd.DataFrame, base: CollapseConfig) -> pd.DataFrame:
    """The three trends' t statistics for every (tau, k, block_thr, centring), per dataset and study."""
    rows = []
    sub = pairs[pairs.variant.isin(["vanilla", "reattn"])]
    keys = RUN_KEYS + ["centred"]
    for tau in base.taus:
        for k in range(1, base.max_window + 1):
            ratios = block_ratio_table(sub, tau, k)
            code = _codes(*(ratios[c].to_numpy() for c in keys))
            runs = ratios.groupby(code, sort=True)[keys].first()  # one row per run and centring, in code order
            arrays = {c: runs[c].to_numpy() for c in keys}
            for thr in sorted(set(BLOCK_THRS) | {base.block_thr}):
                n_sim = np.bincount(code, (ratios.ratio >= thr).to_numpy(float), minlength=len(runs))
                frac = n_sim / (arrays["depth"] - 1)
                for (dataset, study, centred), idx in runs.groupby(["dataset", "study", "centred"]).indices.items():
                    t = _trend_stats(arrays["depth"][idx], arrays["width"][idx], arrays["seed"][idx],
                                     arrays["variant"][idx], n_sim[idx], frac[idx])
                    van = arrays["variant"][idx] == "vanilla"
                    rows.append({"dataset": dataset, "study": study, "centred": centred, "tau": tau, "k": k,
                                 "block_thr": thr, "t_depth": t["depth"][2], "t_width": t["width"][2],
                                 "t_reattn": t["reattn"][2], "mean_similar_vanilla": n_sim[idx][van].mean()})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Figures


# ------------------------------------------------------------------------------------------------
# Figures


def plot(tables, cfg: CollapseConfig) -> dict:
    from matplotlib import colormaps

    from dynamics.report.figures import subplots

    table = tables["table"]
    paths = {}
    datasets = sorted(table.dataset.unique())
    widths = sorted(table.width.unique())
    colors = {w: colormaps['viridis'](i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}
    vcolor = {"vanilla": "C0", "reattn": "C3"}
    styles = {"vanilla": "-", "reattn": "--", "reattn-nonorm": ":", "bn-only": "-.", "temperature": (0, (3, 1, 1, 1)),
              "drop": (0, (1, 2))}
    trained = table[table.study == "trained"]

    # 1. Accuracy vs depth (DeepViT Fig. 1), 95% t intervals over seeds.
    if not trained.empty:
        fig, axes = subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.4), squeeze=False, layout="constrained")
        for ax, ds in zip(axes[0], datasets):
            for (variant, w), line in trained[trained.dataset == ds].groupby(["variant", "width"]):
                main = w == cfg.train_width
                ax.errorbar(line.depth + (0.3 if variant == "reattn" else -0.3), line.acc_test_mean,
                            yerr=line.acc_test_ci, color=vcolor.get(variant, "k"), ls=styles[variant], marker="o",
                            ms=4 if main else 3, capsize=3, alpha=1.0 if main else 0.45,
                            label=f"{variant} d={w} ({w // cfg.head_dim} heads)")
            ax.set(title=f"{ds}: test accuracy (lr chosen on validation)", xlabel="depth L", ylabel="accuracy")
            ax.legend(fontsize=7)
        fig.suptitle("Accuracy vs depth (cf. DeepViT Fig. 1): mean and 95% t interval over seeds, early-stopped "
                     "best-validation checkpoints")
        paths["accuracy_vs_depth"] = fig

        # 2. Collapsed (similar, not dead) vs dead blocks per depth, trained.
        fig, axes = subplots(1, 3, figsize=(13, 3.4), layout="constrained")
        for (variant, w), line in trained.groupby(["variant", "width"]):
            kw = {"color": colors[w], "ls": styles[variant], "marker": "o", "ms": 3, "capsize": 2,
                  "label": f"{variant} d={w}"}
            axes[0].errorbar(line.depth, line.collapsed_mean, yerr=line.collapsed_std, **kw)
            axes[1].errorbar(line.depth, line.dead_mean, yerr=line.dead_std, **kw)
            axes[2].plot(line.depth, line.similar_centred_mean, **{k: v for k, v in kw.items() if k != "capsize"})
        axes[0].set(title="collapsed: similar (raw M) and not dead", xlabel="depth L", ylabel="# blocks")
        axes[1].set(title=f"dead: softmax entropy >= {cfg.dead_entropy:g}", xlabel="depth L", ylabel="# blocks")
        axes[2].set(title="similar under centred M", xlabel="depth L", ylabel="# blocks")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Trained models: similar blocks (tau={cfg.tau:g}, k={cfg.window}, block_thr={cfg.block_thr:g}) "
                     "next to dead blocks; mean ± sd over seeds")
        paths["similar_vs_dead_blocks"] = fig

    # 3. Per-block similarity ratio (DeepViT Fig. 3a) and entropy, deepest trained models.
    curves = tables["curves_fig3"]
    st = tables["block_states"]
    sub = curves[(curves.study == "trained") & curves.variant.isin(["vanilla", "reattn"])]
    if not sub.empty:
        fig, axes = subplots(1, 3, figsize=(13, 3.2), sharex=True, layout="constrained")
        L = sub.depth.max()
        for ax, cen in zip(axes[:2], (False, True)):
            s = sub[(sub.depth == L) & (sub.centred == cen)]
            for (variant, w), line in s.groupby(["variant", "width"]):
                ax.plot(line.block, line.ratio_mean, color=colors[w], ls=styles[variant], label=f"{variant} d={w}")
                ax.fill_between(line.block, line.ratio_mean - line.ratio_std.fillna(0),
                                line.ratio_mean + line.ratio_std.fillna(0), color=colors[w], alpha=0.15)
            ax.axhline(cfg.block_thr, color="grey", lw=0.8)
            ax.set(title=f"trained L={L}, {'centred' if cen else 'raw'} M", xlabel="block p",
                   ylabel=f"similarity ratio r_p (tau={cfg.tau:g})")
        e = st[(st.study == "trained") & (st.depth == L)].groupby(["variant", "width", "block"]).entropy.mean()
        for (variant, w), line in e.groupby(level=[0, 1]):
            axes[2].plot(line.index.get_level_values("block"), line.to_numpy(), color=colors[w], ls=styles[variant],
                         label=f"{variant} d={w}")
        axes[2].axhline(cfg.dead_entropy, color="grey", lw=0.8)
        axes[2].set(title="normalised entropy of the softmax maps", xlabel="block p", ylabel="entropy / log T")
        axes[0].legend(fontsize=7)
        fig.suptitle("Per-block similarity with the previous block (cf. DeepViT Fig. 3a) and attention entropy")
        paths["similarity_ratio_per_block"] = fig

    # 4. Learning curves of the chosen learning rates (validation accuracy at each evaluation).
    if "curves" in tables and "bracket" in tables:
        cur, br = tables["curves"], tables["bracket"]
        chosen = br[br.selected][["dataset", "depth", "width", "variant", "lr"]].drop_duplicates()
        cur = cur.merge(chosen, on=["dataset", "depth", "width", "variant", "lr"])
        cur = cur[cur.width == cfg.train_width]
        depths = sorted(cur.depth.unique())
        if depths:
            fig, axes = subplots(1, len(depths), figsize=(3.2 * len(depths), 3.0), squeeze=False, sharey=True,
                                 layout="constrained")
            for ax, L in zip(axes[0], depths):
                for variant, g in cur[cur.depth == L].groupby("variant"):
                    m = g.groupby("step").val_acc.mean()
                    ax.plot(m.index, m.to_numpy(), color=vcolor.get(variant, "k"), ls=styles[variant], label=variant)
                ax.set(title=f"L={L}, d={cfg.train_width}", xlabel="step", ylabel="validation accuracy")
            axes[0][0].legend(fontsize=7)
            fig.suptitle("Validation accuracy of the chosen learning rate (mean over seeds; a replica's curve ends "
                         "when it stops early)")
            paths["learning_curves"] = fig

    # 5. Attention-map grids.
    if "maps" in tables:
        maps = tables["maps"]
        for ds in datasets:
            sub = maps[maps.dataset == ds] if "dataset" in maps else maps
            models = [m for m in [("init", "vanilla"), ("trained", "vanilla"), ("trained", "reattn")]
                      if ((sub.study == m[0]) & (sub.variant == m[1])).any()]
            if not models:
                continue
            L = int(sub.block.max())
            show = list(range(1, L + 1, max(1, L // 12)))
            fig, axes = subplots(len(models), len(show),
                                     figsize=(1.1 * len(show), 1.25 * len(models)), squeeze=False, layout="constrained")
            for r, (study, variant) in enumerate(models):
                m = sub[(sub.study == study) & (sub.variant == variant)]
                for ax, b in zip(axes[r], show):
                    blk = m[m.block == b]
                    T = int(blk.i.max()) + 1
                    img = np.zeros((T, T))
                    img[blk.i.to_numpy(), blk.j.to_numpy()] = blk.value.to_numpy()
                    ax.imshow(img, cmap="viridis")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if r == 0:
                        ax.set_title(f"block {b}", fontsize=7)
                axes[r][0].set_ylabel(f"{study}\n{variant}", fontsize=7)
            fig.suptitle(f"{ds}: head-averaged attention map of one test image (L={L}, d={cfg.map_width}, seed 0; "
                         "rows = queries, columns = keys; re-attention shows the map after BN)", fontsize=8)
            paths[f"attention_maps_{ds}"] = fig


    # 6. Random-init context: similar, dead blocks and entropy per variant.
    init = table[(table.study == "init") & (table.dataset == datasets[0])]
    fig, axes = subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    w0 = cfg.map_width if cfg.map_width in init.width.values else init.width.min()
    for variant, g in init[init.width == w0].groupby("variant"):
        for ax, col in zip(axes, ("similar_raw_mean", "similar_centred_mean", "entropy_mean")):
            ax.plot(g.depth, g[col], ls=styles.get(variant, "-"), marker="o", ms=3, label=variant)
    axes[0].set(xlabel="depth L", ylabel="# similar blocks (raw M)", title=f"random init, d={w0}")
    axes[1].set(xlabel="depth L", ylabel="# similar blocks (centred M)")
    axes[2].set(xlabel="depth L", ylabel="mean normalised softmax entropy")
    axes[0].legend(fontsize=7)
    paths["init_variants"] = fig

    # 7. Threshold sensitivity of the three trends (trained, raw M, first dataset, k = window).
    sens = tables.get("sensitivity")
    s = None if sens is None else sens[(sens.study == "trained") & (~sens.centred) & (sens.k == cfg.window)
                                      & (sens.dataset == datasets[0])]
    if s is not None and not s.empty:
        fig, axes = subplots(1, 3, figsize=(12, 3.2), layout="constrained")
        for ax, col in zip(axes, ["t_depth", "t_width", "t_reattn"]):
            grid = s.pivot_table(index="block_thr", columns="tau", values=col)
            vals = np.clip(grid.to_numpy(), -6, 6)
            im = ax.imshow(vals, origin="lower", cmap="RdBu", vmin=-6, vmax=6, aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [f"{t:g}" for t in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [f"{t:g}" for t in grid.index])
            for (i, j), v in np.ndenumerate(grid.to_numpy()):
                ax.text(j, i, "nan" if not np.isfinite(v) else f"{v:.1f}", ha="center", va="center", fontsize=6)
            ax.set(title=f"{col} ({datasets[0]}, trained, raw M, k={cfg.window})", xlabel="tau", ylabel="block_thr")
        fig.colorbar(im, ax=axes, fraction=0.02)
        fig.suptitle("t statistics of the trends (PASS needs t >= 2)")
        paths["threshold_sensitivity"] = fig
    return paths



# ------------------------------------------------------------------------------------------------
# Claims (pre-registered before the full run of issue 17)


_THR = ("tau", "window", "block_thr", "dead_entropy")
_TRAIN = ("seeds", "seed", "lrs", "max_steps", "eval_every", "patience", "batch", "train_depths", "train_width",
          "width_depths", "head_dim", "hops", "n_placed", "min_distinct", "max_distinct", "noise", "n_train",
          "n_test")

CLAIMS = (
    ClaimSpec("similar-blocks-grow-with-depth", "reproduction",
              "Trained vanilla ViTs: the share of collapsed blocks (similar under raw M, DeepViT Eq. 2, and not "
              "dead) grows with depth: per (width, seed), the least-squares slope of the share against depth; "
              "t interval over those groups, predicted positive.",
              f"{REF}, Fig. 3b and README table (5/16, 11/24, 15/32 similar blocks)", Band.above(0.0), _TRAIN + _THR),
    ClaimSpec("reattention-fewer-similar-blocks", "reproduction",
              "Trained: re-attention has fewer collapsed blocks than vanilla attention: vanilla minus re-attention "
              "count, paired by (depth, width, seed) (shared init); paired t, predicted positive.",
              f"{REF}, README table (DeepViT: 0 similar blocks)", Band.above(0.0), _TRAIN + _THR),
    ClaimSpec("similar-blocks-fall-with-width", "reproduction",
              "Trained vanilla ViTs at fixed head dimension (heads grow with width): collapsed blocks fall as "
              "width grows: per (depth, seed) at the width_depths, minus the slope of the count against log2 "
              "width; t over groups, predicted positive.",
              f"{REF}, Sec. 4.1 (embedding 256 -> 768 reduces similar blocks)", Band.above(0.0), _TRAIN + _THR),
    ClaimSpec("vanilla-accuracy-saturates", "reproduction",
              "Vanilla ViT test accuracy stops improving with depth: accuracy at the deepest trained depth minus "
              "accuracy at the second deepest (train_width, chosen learning rates), Welch interval over seeds, "
              "predicted <= +0.005 (no gain beyond half a percentage point).",
              f"{REF}, Fig. 1 (ViT saturates at 24 blocks, declines at 32)", Band.below(0.005), _TRAIN),
    ClaimSpec("reattention-accuracy-keeps-improving", "reproduction",
              "Re-attention ViT test accuracy still improves at the deepest step: accuracy at the deepest trained "
              "depth minus at the second deepest (train_width), Welch interval over seeds, predicted positive.",
              f"{REF}, Fig. 1 and Table 3 (DeepViT-16/24/32 keep improving)", Band.above(0.0), _TRAIN),
    ClaimSpec("reattention-beats-vanilla-at-deepest", "reproduction",
              "Headline: at the deepest trained depth (train_width), re-attention minus vanilla test accuracy, "
              "paired by seed (shared init); paired t, predicted positive.",
              f"{REF}, Fig. 1, Table 3 (DeepViT-32 vs ViT-32)", Band.above(0.0), _TRAIN),
    ClaimSpec("reattention-fewer-similar-blocks-at-init", "consistency",
              "Context, at random init (all depths, widths): re-attention has fewer similar blocks (raw M) than "
              "vanilla attention (paired t over (depth, width, seed), predicted positive): the consequence of BN's "
              "removal of the uniform component, i.e. of the construction; about near-uniform maps at init, not "
              "trained collapse.",
              "Re-attention BN identity (docs/deepvit.md); Wang et al. 2022", Band.above(0.0),
              ("init_seeds", "seed", "init_variants", "tau", "window", "block_thr")),
    ClaimSpec("reattention-bn-removes-uniform-component", "consistency",
              "With batch statistics, every image's re-attention map (BN(Theta^T A + b)) has uniform component exactly "
              "beta_g: max |DC - beta| / rms over all runs, blocks, images, heads (float64) <= 1e-10 (an algebraic "
              "identity).", "Official ReAttention (Conv2d + BatchNorm2d); identity in docs/deepvit.md",
              Band.below(1e-10)),
)


def claims(tables, cfg: CollapseConfig) -> dict:
    out: dict = {}
    per_run = tables["per_run"]
    tr_runs = per_run[per_run.study == "trained"]
    if len(tr_runs):
        v = _trend_values(tr_runs.depth.to_numpy(), tr_runs.width.to_numpy(), tr_runs.seed.to_numpy(),
                          tr_runs.variant.to_numpy(), tr_runs.n_collapsed.to_numpy(), tr_runs.frac_collapsed.to_numpy())
        van = tr_runs[tr_runs.variant == "vanilla"]
        note = (f"vanilla collapsed blocks {van.n_collapsed.mean():.2f}, similar (raw M) {van.n_similar_raw.mean():.2f}, "
                f"similar (centred M) {van.n_similar_centred.mean():.2f}, dead {van.n_dead.mean():.2f} per model "
                f"(mean over all trained cells)")
        out["similar-blocks-grow-with-depth"] = (S.t_interval(v["depth"]), note)
        out["reattention-fewer-similar-blocks"] = (dataclasses.replace(S.t_interval(v["reattn"]), method="paired-t"),
                                                   note)
        out["similar-blocks-fall-with-width"] = (S.t_interval(v["width"]), note)
        depths = sorted(tr_runs[tr_runs.width == cfg.train_width].depth.unique())
        if len(depths) >= 2:
            L, prev = depths[-1], depths[-2]
            acc = {(var, d): analysis.trained_accuracy(per_run, var, d, cfg.train_width) for var in ("vanilla", "reattn") for d in (L, prev)}
            gains = {var: S.welch(acc[(var, L)], acc[(var, prev)]) for var in ("vanilla", "reattn")}
            means = {k: a.mean() for k, a in acc.items()}
            for var, cid in (("vanilla", "vanilla-accuracy-saturates"), ("reattn", "reattention-accuracy-keeps-improving")):
                out[cid] = (gains[var], f"{var}: L={prev} {means[(var, prev)]:.4f} -> L={L} {means[(var, L)]:.4f}")
            van, re = acc[("vanilla", L)], acc[("reattn", L)]
            common = van.index.intersection(re.index)
            out["reattention-beats-vanilla-at-deepest"] = (
                S.paired(re[common].to_numpy(), van[common].to_numpy()),
                f"L={L}, d={cfg.train_width}: reattn {re.mean():.4f}, vanilla {van.mean():.4f}")
    counts = similar_counts(tables["pairs"], cfg.tau, cfg.window, cfg.block_thr)
    init = counts[(~counts.centred) & (counts.study == "init")]
    if len(init):
        seed = init.seed.to_numpy() + 1000 * _codes(init.dataset.to_numpy())
        v = _trend_values(init.depth.to_numpy(), init.width.to_numpy(), seed, init.variant.to_numpy(),
                          init.n_similar.to_numpy(), init.frac_similar.to_numpy())
        if len(v["reattn"]):
            out["reattention-fewer-similar-blocks-at-init"] = dataclasses.replace(S.t_interval(v["reattn"]),
                                                                                  method="paired-t")
    if "bn" in tables:
        bn = tables["bn"]
        trained_bn = bn[bn.study == "trained"]
        running = trained_bn.dc_dev_running_stats.median() if len(trained_bn) else float("nan")
        out["reattention-bn-removes-uniform-component"] = (
            S.exact(bn.dc_dev_batch_stats.max()),
            f"closed form Theta^T(A - 11^T/T) gamma/sigma + beta: max rel. error {bn.closed_form_rel_err.max():.2g}; "
            f"with running statistics (eval mode) the DC offset is {running:.2g} (median, trained): exact only in "
            "training mode")
    return out


EXPERIMENT = Experiment(
    name=NAME,
    summary="DeepViT on a task where depth pays: converged accuracy vs depth, collapse vs dead blocks, re-attention",
    reference="Zhou et al. 2021 (DeepViT) Fig. 1, Fig. 3 / README table",
    config=CollapseConfig,
    run_batch=run_batch,
    grid={"dataset": ("relations",), "depth": (16, 8, 4, 2), "width": (32, 16)},  # deepest first: the longest cells start first,
    quick={"seeds": 2, "init_seeds": 2, "max_steps": 40, "min_steps": 20, "eval_every": 10, "patience": 2, "lrs": (3e-3, 1e-2),
           "n_train": 512, "n_test": 128, "probe_images": 8, "train_depths": (2, 4), "width_depths": (4,),
           "train_width": 16, "init_variants": ("vanilla", "reattn"), "map_depth": 4, "map_width": 16,
           "max_window": 1},
    quick_grid={"dataset": ("relations",), "depth": (2, 4), "width": (8, 16)},
    summarize=summarize,
    plot=plot,
    claims=claims,
    claim_specs=CLAIMS,
    cost=cell_cost,
)
