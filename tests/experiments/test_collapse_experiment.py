"""deepvit-collapse: a tiny grid run in process through the experiment's own functions (values
checked, fast), the --quick run through the Python API (slow tier), and bad input through the CLI
(exit 2, nothing written)."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pandas as pd
import pytest

import dynamics.api as api
from dynamics import stats as S
from dynamics.config import build
from dynamics.experiment import Context
from dynamics.experiments import get

TINY = {"seeds": 2, "init_seeds": 2, "lrs": (3e-3, 1e-2), "max_steps": 8, "eval_every": 4, "patience": 1,
        "n_train": 128, "n_test": 32, "probe_images": 4, "train_depths": (2, 3), "train_width": 8,
        "width_depths": (3,), "init_variants": ("vanilla", "reattn"), "map_depth": 3, "map_width": 8,
        "max_window": 1, "head_dim": 4, "taus": (0.5, 0.9)}


@dataclasses.dataclass
class Tiny:
    tables: dict
    claims: pd.DataFrame

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["table"]


@pytest.fixture(scope="module")
def tiny():
    """The 2 x 2 grid (depth 2, 3; width 4, 8) run cell by cell, then summarised and decided as the
    sweep runner does (grid values added as columns), without figures."""
    exp = get("deepvit-collapse")
    cells = [{"dataset": "relations", "depth": d, "width": w} for d in (2, 3) for w in (4, 8)]
    cfgs = [build(exp.config, {**TINY, **c}) for c in cells]  # flat names, as --set and --grid give them
    parts: dict[str, list] = {}
    for cell, out in zip(cells, exp.run_batch(cfgs, Context(bar=None))):
        for name, df in out.items():
            parts.setdefault(name, []).append(df.assign(**{k: v for k, v in cell.items() if k not in df}))
    tables = exp.summarize({n: pd.concat(d, ignore_index=True) for n, d in parts.items()}, cfgs[0])
    measured = exp.claims(tables, cfgs[0])
    rows = []
    for spec in exp.claim_specs:
        m = measured.get(spec.id)
        est = m[0] if isinstance(m, tuple) else m
        rows.append({"claim": spec.id, "method": getattr(est, "method", None),
                     "verdict": None if est is None else S.verdict(est, spec.band)})
    return Tiny(tables, pd.DataFrame(rows))


def test_tiny_sweep_tables_and_values(tiny):
    t = tiny.table
    assert set(t.study) == {"init", "trained"}
    trained = t[t.study == "trained"]
    # trained cells: both widths at depth 3 (a width depth), only train_width at depth 2
    assert set(map(tuple, trained[["depth", "width"]].drop_duplicates().to_numpy())) == {(2, 8), (3, 4), (3, 8)}
    assert trained.acc_test_mean.between(0, 1).all() and (trained.n_seeds == 2).all()
    assert set(trained.lr) <= {3e-3, 1e-2}
    # the bracket: every (lr, seed) replica once per trained model, one learning rate selected
    br = tiny.tables["bracket"]
    per_model = br.groupby(["depth", "width", "variant"])
    assert (per_model.size() == 4).all() and (per_model.selected.sum() == 2).all()
    assert (br.best_step <= br.stop_step).all() and (br.stop_step <= 8).all()
    # the chosen lr has the highest mean validation accuracy of its bracket (test accuracy plays no part)
    for _, g in per_model:
        means = g.groupby("lr").val_acc.mean()
        assert g[g.selected].lr.iloc[0] == means.idxmax()
    # collapsed = similar (raw M) and not dead: never more than either, never a dead block
    pr = tiny.tables["per_run"]
    assert (pr.n_collapsed <= pr.n_similar_raw).all() and (pr.n_collapsed <= pr.depth - 1).all()
    st = tiny.tables["block_states"]
    assert not (st.collapsed & st.dead).any()
    np.testing.assert_array_equal(st.dead, st.entropy >= 0.9)
    assert set(tiny.tables["headline"].depth) == {2, 3}


def test_tiny_claims(tiny):
    claims = tiny.claims.set_index("claim")
    assert claims.loc["reattention-bn-removes-uniform-component"].verdict == "PASS"  # exact at any size
    for cid in ("reattention-beats-vanilla-at-deepest", "vanilla-accuracy-saturates",
                "reattention-accuracy-keeps-improving", "similar-blocks-grow-with-depth"):
        assert cid in claims.index
    assert claims.loc["reattention-beats-vanilla-at-deepest"].method == "paired-t"


@pytest.mark.slow
def test_quick_run_through_the_api():
    res = api.run("deepvit-collapse", quick=True, workers=1)
    trained = res.table[res.table.study == "trained"]
    assert trained.acc_test_mean.between(0, 1).all() and (trained.n_seeds == 2).all()
    assert set(res.tables["headline"].depth) == {2, 4}
    claims = res.claims.set_index("claim")
    assert claims.loc["reattention-bn-removes-uniform-component"].verdict == "PASS"
    for name in ("accuracy_vs_depth", "similar_vs_dead_blocks", "similarity_ratio_per_block", "learning_curves"):
        assert name in res.figures


def test_config_composes_the_vit_spec():
    """The ViT is a nested ViTSpec; the flat names (grid keys, table columns, flat manifests) still
    resolve, heads follows width / head_dim, and the data and variant fields are set per cell."""
    from dynamics import config as C
    from dynamics.collapse import data
    from dynamics.collapse.vit import ViTSpec

    exp = get("deepvit-collapse")
    cls = exp.config
    flat_names = ("depth", "width", "mlp_ratio", "init", "temperature", "attn_drop", "transform_scale")
    assert {C.resolve(cls, n).name for n in flat_names} == {f"vit.{n}" for n in flat_names}
    assert {C.short_name(cls, f"vit.{n}") for n in flat_names} == set(flat_names)
    assert not {"vit.heads", "vit.n_patches", "vit.patch_dim", "vit.n_classes", "vit.attention"} & set(C.keys(cls))
    # a flat config, as results written before the move store it
    flat = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls) if f.name != "vit"}
    flat.update(depth=4, width=16, temperature=0.25)
    cfg = C.build(cls, flat)
    assert (cfg.depth, cfg.width, cfg.heads, cfg.vit.temperature) == (4, 16, 4, 0.25)
    assert C.build(cls, dataclasses.asdict(cfg)) == cfg
    split = data.relations(16, 8, seed=0)
    spec = importlib.import_module(cls.__module__)._spec(cfg, split, "reattn")
    assert spec == ViTSpec(depth=4, width=16, heads=4, n_patches=16, patch_dim=16, n_classes=split.n_classes,
                           attention="reattn", temperature=0.25)


def test_cell_cost_weighs_training_cells_for_the_eta():
    """The progress ETA weighs cells by cell_cost: in the default grid the depth-16 training cell is the
    largest and an init-only cell is under 1% of it; cost grows with depth at fixed width."""
    from dynamics import config as C
    from dynamics.sweep.grid import expand

    exp = get("deepvit-collapse")
    cfgs = [C.build(exp.config, cell) for cell in expand(dict(exp.grid))]
    cost = {(c.depth, c.width, c.trained): exp.cost(c) for c in cfgs}
    assert max(cost, key=cost.get) == (16, 32, True)
    assert cost[(16, 16, False)] < 0.01 * cost[(16, 32, True)]
    assert cost[(2, 32, True)] < cost[(4, 32, True)] < cost[(8, 32, True)] < cost[(16, 32, True)]


@pytest.mark.parametrize("sets, message", [
    (["width=30"], "not divisible by head_dim"),
    (["patch=3"], "does not divide the image size 16"),
    (["dataset=digits", "patch=3"], "does not divide the image size 8"),
    (["tau=1.5"], "tau must be in [0, 1]"),
    (["dead_entropy=1.5"], "dead_entropy must be in [0, 1]"),
    (["tau=0.85"], "must be one of taus"),
    (["window=5"], "window must be in"),
    (["init_variants=vanilla,talking"], "unknown variant"),
    (["hops=0"], "hops must be at least 1"),
    (["n_placed=3", "max_distinct=5"], "relations needs"),
    (["temperature=0"], "temperature must be positive"),
    (["vit.attn_drop=1"], "attn_drop must be in [0, 1)"),
    (["heads=2"], "unknown config key 'heads'"),
])
def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, sets, message):
    out = tmp_path / "bad"
    args = [a for s in sets for a in ("--set", s)]
    code, stdout, err = cli("run", "deepvit-collapse", *args, "--out", str(out))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
