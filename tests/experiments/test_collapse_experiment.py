"""deepvit-collapse through the CLI: a tiny sweep end to end, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import pandas as pd
import pytest

TINY = ["--set", "steps=4", "--set", "seeds=2", "--set", "init_seeds=2", "--set", "probe_images=4",
        "--set", "train_depths=2,3", "--set", "train_widths=16",
        "--set", "init_variants=vanilla,reattn", "--set", "map_depth=3", "--set", "map_width=16"]


def test_tiny_sweep_writes_tables_figures_claims(cli, tmp_path):
    out = tmp_path / "dv"
    code, stdout, err = cli("sweep", "deepvit-collapse", "--quick", "--grid", "depth=2,3", "--grid", "width=16",
                            *TINY, "--out", str(out))
    assert code == 0, err
    for name in ("table.csv", "headline.md", "pairs.csv", "bn.csv", "sensitivity.csv", "claims.csv",
                 "manifest.json", "similar_blocks_vs_depth.png", "similarity_ratio_per_block.png",
                 "attention_maps_digits.png"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "table.csv")
    assert set(table.study) == {"init", "trained"}
    trained = table[table.study == "trained"]
    assert trained.acc_test_mean.between(0, 1).all() and (trained.n_seeds == 2).all()
    claims = pd.read_csv(out / "claims.csv")
    assert "reattention-bn-removes-uniform-component" in set(claims.claim)
    assert "pure-attention-doubly-exponential" not in set(claims.claim)  # owned by rank-collapse
    assert not (out / "san.csv").exists()
    bn = claims.set_index("claim").loc["reattention-bn-removes-uniform-component"]
    assert bn.verdict == "PASS"  # exact identity: holds at any size
    # A similar-block count can never exceed the L - 1 comparable blocks.
    per_run = pd.read_csv(out / "per_run.csv")
    assert (per_run.n_similar_raw <= per_run.depth - 1).all()


@pytest.mark.parametrize("sets, message", [
    (["width=30", "heads=4"], "not divisible by heads"),
    (["patch=3"], "does not divide the image size 8"),
    (["dataset=glyphs", "patch=5"], "does not divide the image size 16"),
    (["tau=1.5"], "tau must be in [0, 1]"),
    (["block_thr=-0.1"], "block_thr must be in [0, 1]"),
    (["taus=0.5,1.2", "tau=0.5"], "taus must be in [0, 1]"),
    (["tau=0.85"], "must be one of taus"),
    (["window=5"], "window must be in"),
    (["init_variants=vanilla,talking"], "unknown variant"),
])
def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, sets, message):
    out = tmp_path / "bad"
    args = [a for s in sets for a in ("--set", s)]
    code, stdout, err = cli("run", "deepvit-collapse", *args, "--out", str(out))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
