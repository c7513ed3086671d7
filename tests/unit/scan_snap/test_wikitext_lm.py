"""The Transformer LM (dynamics.scan_snap.lm) and the two WikiText experiments on a tiny corpus built here."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dynamics.scan_snap.lm import LMSpec, TransformerLM, attention_entropy, batchify, chunk, sinusoidal


def make_model(**kw) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(LMSpec(**({"vocab": 17, "d_model": 8} | kw)))


@pytest.mark.parametrize("kw", [{}, {"pos": "sinusoidal"}, {"pos": "learned", "norm": "pre", "d_ff": 12},
                                {"n_layers": 3, "n_heads": 2, "norm": "none", "residual": False}],
                         ids=["default", "sinusoidal", "pre-mlp", "deep-multihead"])
def test_shapes_causality_and_fused_equals_explicit_attention(kw):
    m = make_model(**kw)
    x = torch.randint(17, (3, 6))
    logits = m(x)
    assert logits.shape == (3, 6, 17)
    # changing a future token never changes earlier positions (causal mask)
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 17
    torch.testing.assert_close(m(x2)[:, :-1], logits[:, :-1])
    # the fused training path (scaled_dot_product_attention) equals the explicit-weights path
    hidden, maps = m.hidden(x, weights=True)
    torch.testing.assert_close(m.decoder(hidden), logits, rtol=1e-5, atol=1e-6)
    assert len(maps) == m.spec.n_layers and maps[0].shape == (3, m.spec.n_heads, 6, 6)
    a = maps[0].detach()
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
    assert float(a.triu(1).abs().max()) == 0.0


def test_token_logits_are_the_first_layer_attention_logits_without_positions():
    m = make_model()
    x = torch.tensor([[3, 5, 3, 9, 2]])
    a = m.attention(x)[0][0, 0]  # (L, L)
    z = m.token_logits(x[0], x[0])[0]  # (L, L): q(x_t) . k(x_s)
    for t in range(x.shape[1]):
        expect = torch.softmax(z[t, : t + 1], -1)
        torch.testing.assert_close(a[t, : t + 1], expect, rtol=1e-5, atol=1e-6)


def test_attention_entropy_and_sinusoidal_positions():
    L = 5
    uniform = torch.tril(torch.ones(L, L)) / torch.arange(1, L + 1)[:, None]
    expect = np.mean(np.log(np.arange(2, L + 1)))
    assert math.isclose(float(attention_entropy(uniform)), expect, rel_tol=1e-6)
    assert float(attention_entropy(torch.eye(L))) == pytest.approx(0.0, abs=1e-12)
    pe = sinusoidal(4, 6)
    assert pe[0, 0] == 0 and pe[0, 1] == 1 and pe[2, 2] == pytest.approx(math.sin(2 / 10000 ** (2 / 6)))


def test_batchify_and_chunk_give_next_token_targets():
    ids = torch.arange(23)
    src = batchify(ids, 3)  # 7 rows x 3 columns
    assert src.shape == (7, 3) and src[:, 1].tolist() == list(range(7, 14))
    x, y = chunk(src, 2, 4)
    assert x.shape == (3, 4) and torch.equal(y, x + 1)


def test_sgd_lowers_the_loss_on_a_repeating_text():
    m = make_model(vocab=5, d_model=16)
    ids = torch.arange(600) % 5
    src = batchify(ids, 4)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    x, y = chunk(src, 0, 8)
    before = m.loss(x, y).item()
    for _ in range(60):
        opt.zero_grad()
        m.loss(x, y).backward()
        opt.step()
    assert m.loss(x, y).item() < 0.5 * before


# -- the experiments on a tiny WikiText-like directory --------------------------------------------

SMALL_YZ = ["queries=1", "T=4", "min_support=10", "steps=6", "batch=8"]
SMALL_LM = ["queries=1", "bptt=4", "min_support=10", "iters=12", "eval_every=4", "map_every=4", "d_model=8",
            "batch=4", "eval_chunks=2", "max_vocab=0", "seeds=2"]


def _sets(items):
    return [a for kv in items for a in ("--set", kv)]


def test_scan_snap_wikitext_smoke(cli, tmp_path, monkeypatch, tiny_wikitext):
    monkeypatch.setenv("DYNAMICS_CACHE", str(tmp_path / "cache"))
    data = tiny_wikitext(tmp_path / "wt")
    out = tmp_path / "out"
    code, stdout, err = cli("run", "scan-snap-wikitext", "--quick", *_sets(SMALL_YZ + [f"data_dir={data}"]),
                            "--out", str(out))
    assert code == 0, err
    table = pd.read_csv(out / "table.csv")
    assert set(table["mode"]) == {"population", "windows"} and len(table) == 12
    assert table["data"].str.contains("training split absent: trained on valid, evaluated on test").all()
    co = pd.read_csv(out / "cooccurrence.csv")
    assert list(co["query"]) == ["q", "q"] and set(co["next"]) == {"A", "B"}
    claims = pd.read_csv(out / "claims.csv")
    assert len(claims) == 10 and set(claims.verdict) <= {"PASS", "FAIL", "INCONCLUSIVE"}
    for png in ("entropy_vs_eta.png", "entropy_over_training.png", "z_vs_cooccurrence.png"):
        assert (out / png).stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notes"]["wikitext_note"].startswith("training split absent")


def test_wikitext_attention_smoke(cli, tmp_path, monkeypatch, tiny_wikitext):
    monkeypatch.setenv("DYNAMICS_CACHE", str(tmp_path / "cache"))
    data = tiny_wikitext(tmp_path / "wt")
    out = tmp_path / "out"
    code, stdout, err = cli("run", "wikitext-attention", "--quick", *_sets(SMALL_LM + [f"data_dir={data}"]),
                            "--out", str(out))
    assert code == 0, err
    table = pd.read_csv(out / "table.csv")
    # the swept 1-layer model at every lr, the 3-layer one (every layer) at map_lr = 5 only
    assert list(zip(table.n_layers, table.layer, table.lr)) == [(1, 0, 1.5), (1, 0, 2.0), (1, 0, 3.0), (1, 0, 5.0),
                                                                (3, 0, 5.0), (3, 1, 5.0), (3, 2, 5.0)]
    assert (table.n_seeds == 2).all()
    maps = pd.read_csv(out / "maps.csv")
    assert sorted(maps["iter"].unique()) == [0, 4, 8, 12] and sorted(maps.n_layers.unique()) == [1, 3]
    assert np.allclose(maps.groupby(["n_layers", "iter", "query_pos"]).weight.sum(), 1.0)
    assert (out / "attention_maps.png").exists() and (out / "entropy.png").exists()
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims.claim) == {"entropy-falls-with-lr", "attention-sparsifies", "attention-freezes",
                                 "attention-sparsifies-deep", "attention-freezes-deep"}
    assert "order" in {p.stem for p in out.glob("*.csv")}  # the exploratory co-occurrence table


def test_wikitext_attention_window_measures_flag_convergence_and_stability():
    from dynamics.experiments.wikitext_attention import WikiAttnConfig, run_measures

    cfg = WikiAttnConfig()
    it = np.arange(0, 1001, 50.0)
    flat = 2.0 + 0.7 * np.exp(-it / 100)  # settles long before the last quarter
    m = run_measures(it, flat, flat + 2, cfg)  # quarter windows: 500-750 against 750-1000
    assert m["converged"] and m["stable"] and m["entropy_init"] == pytest.approx(2.7)
    assert m["entropy_final"] == pytest.approx(np.mean(flat[it > 900]))
    falling = 2.7 - 0.5 * it / 1000  # drifts 0.125 nats from one quarter to the next
    assert not run_measures(it, falling, flat + 2, cfg)["converged"]
    spike = (flat + 2).copy()
    spike[it > 900] += 1.0  # the loss jumps up at the end
    assert not run_measures(it, flat, spike, cfg)["stable"]


@pytest.mark.parametrize("exp", ["scan-snap-wikitext", "wikitext-attention"])
def test_missing_data_is_one_line_exit_2_and_writes_no_results(cli, tmp_path, exp):
    out = tmp_path / "out"
    code, stdout, err = cli("run", exp, "--quick", "--set", f"data_dir={tmp_path / 'nowhere'}", "--out", str(out))
    assert code == 2
    assert "does not exist" in err and "DYNAMICS_WIKITEXT" in err and len(err.strip().splitlines()) == 1
    assert not (out / "table.csv").exists()


@pytest.mark.parametrize("exp, kv, message", [
    ("scan-snap-wikitext", "next_per_query=1", "next_per_query must be >= 2"),
    ("scan-snap-wikitext", "outputs=1", "outputs must be 0"),
    ("wikitext-attention", "max_vocab=1", "max_vocab must be 0 or >= 2"),
    ("wikitext-attention", "lr=-1", "lr must be positive"),
])
def test_bad_config_values(cli, tmp_path, exp, kv, message):
    code, _, err = cli("run", exp, "--quick", "--set", kv, "--out", str(tmp_path / "o"))
    assert code == 2 and message in err
