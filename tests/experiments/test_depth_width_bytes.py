"""depth-width-bytes: the byte corpus, the optimal-depth fit and the paper-fit prediction, a tiny CLI sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynamics.corpus import load_wikitext_bytes
from dynamics.depth_width import optimal_depth as OD
from dynamics.depth_width import theory
from dynamics.errors import UserError


def _corpus(tmp_path, n_lines=80):
    data = tmp_path / "wt"
    data.mkdir()
    text = "\n".join(" ".join(f"w{(i * 7 + j) % 23} é" for j in range(12)) for i in range(n_lines)) + "\n"
    (data / "valid.txt").write_text(text, encoding="utf-8")
    (data / "test.txt").write_text(text.replace("w1 ", "w2 "), encoding="utf-8")
    return data, text


def test_bytes_are_the_files_utf8_bytes(tmp_path):
    data, text = _corpus(tmp_path)
    c = load_wikitext_bytes(data)
    raw = text.encode("utf-8")
    assert c.V == 256 and c.vocab[65] == "A" and c.train.dtype == np.int64
    assert bytes(c.train.astype(np.uint8)) == raw and len(c.train) > len(text)  # é is two bytes
    assert (c.train_split, c.eval_split) == ("valid", "test") and "trained on valid" in c.note
    (data / "test.txt").write_bytes(b"\x1f\x8b junk")
    with pytest.raises(UserError, match="gzip"):
        load_wikitext_bytes(data)


def test_quadratic_minimiser_and_edges():
    L = np.arange(1, 7, dtype=float)
    x = np.log(L)
    assert OD.quadratic_minimiser(L, (x - math.log(2.5)) ** 2 + 1.0) == pytest.approx((2.5, ""))
    assert OD.quadratic_minimiser(L, x) == (1.0, "low")  # increasing in depth: the shallow edge
    assert OD.quadratic_minimiser(L, -(x - 1.0) ** 2) == (1.0, "low")  # concave: the lower end of the curve
    assert OD.quadratic_minimiser(L, -x) == (6.0, "high")


def test_paper_fit_depth_below_one_at_these_budgets():
    # the budget equation with the exact count and the fit together: L solves N = L (12 d^2 + 13 d), d = e^(a+bL)
    Ls = [theory.optimal_depth(n, biases=True) for n in (1e4, 3e4, 1e5, 3e5)]
    for n, L in zip((1e4, 3e4, 1e5, 3e5), Ls):
        assert theory.optimal_params(L, biases=True) == pytest.approx(n, rel=1e-9)
    assert all(L < 1 for L in Ls) and Ls == sorted(Ls)
    assert theory.optimal_params(1.0, biases=True) == pytest.approx(321_000, rel=0.01)


def test_slope_is_exactly_zero_when_every_optimum_is_clipped():
    rng = np.random.default_rng(0)
    rows = [dict(budget=b, depth=d, seed=s, width=10, test_loss=1.0 + 0.1 * d + 0.01 * rng.random())
            for b in (1e4, 1e5) for d in (1, 2, 3) for s in range(4)]
    est = OD.depth_slope(pd.DataFrame(rows))
    assert est.value == 0.0 and est.low == 0.0 and est.high == 0.0  # -> INCONCLUSIVE against ">= 0", not PASS


def test_bytes_tiny_sweep(cli, tmp_path):
    data, _ = _corpus(tmp_path)
    sets = ["seeds=3", "steps=2", "batch=2", "context=8", "eval_bytes=64", "warmup=1", f"data_dir={data}"]
    code, out, err = cli("sweep", "depth-width-bytes", "--grid", "budget=600,1200", "--grid", "depth=1,2,3",
                         *sum((["--set", s] for s in sets), []), "--out", str(tmp_path / "res"))
    assert code == 0, err
    res = tmp_path / "res"
    table, opt = pd.read_csv(res / "table.csv"), pd.read_csv(res / "optimal_depth.csv")
    assert len(table) == 6 and (table.n_seeds == 3).all()
    assert np.allclose(table.bpb, table.loss / math.log(2))
    assert (table.embed_params == (256 + 8) * table.width).all()
    assert list(opt.budget) == [600, 1200] and (opt.L_star.between(1, 3)).all() and (opt.paper_L < 1).all()
    claims = pd.read_csv(res / "claims.csv").set_index("claim")
    assert set(claims.index) == {"bytes-optimal-depth-not-decreasing", "bytes-optimal-depth-matches-paper-fit",
                                 "bytes-shallow-loses-largest-budget"}
    assert (claims.kind == "reproduction").all()
    assert "bytes; training split absent" in (res / "manifest.json").read_text()
    assert (res / "loss_vs_depth.png").exists()


def test_claims_read_back_from_csv_with_an_interior_optimum(tmp_path):
    """The saved optimal_depth.csv holds "" for an interior optimum, which reads back as NaN."""
    from dynamics.experiments import depth_width_bytes as E

    rng = np.random.default_rng(1)
    runs = pd.DataFrame([dict(budget=b, depth=d, seed=s, lr=3e-3, width=20 - 2 * d, params=b, diverged_step=-1,
                              test_loss=2 + (math.log(d) - math.log(2.2)) ** 2 + 0.01 * rng.random(),
                              val_loss=2 + (math.log(d) - math.log(2.2)) ** 2, train_loss=2.0)
                         for b in (600, 1200) for d in (1, 2, 3, 4) for s in range(3)])
    tables = E.summarize({"runs": runs, "trials": runs.assign(selected=True), "curves": runs}, E.BytesConfig())
    saved = {}
    for name, df in tables.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
        saved[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert saved["optimal_depth"].edge.isna().all()
    out = E.claims(saved, E.BytesConfig())
    assert "600: 2.2" in out["bytes-optimal-depth-not-decreasing"][1]
    assert out["bytes-optimal-depth-matches-paper-fit"][0].value == pytest.approx(1.2, abs=0.05)
