"""Smoke runs of the four depth-width experiments through the CLI, and bad input."""

from __future__ import annotations

import pandas as pd
import pytest

RANK_TINY = ["--set", "widths=1,2", "--set", "depths=1,2", "--set", "max_side=64", "--set", "heads=1",
             "--set", "positions=2", "--set", "residual=false", "--set", "equiv_max_width=3"]


def test_rank_smoke(cli, tmp_path):
    code, out, err = cli("run", "depth-width-rank", *RANK_TINY, "--out", str(tmp_path))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "table.csv")
    for col in ("d_x", "L", "heads", "positions", "residual", "templates", "rank", "prime"):
        assert col in table.columns
    main = table[table.role == "main"].set_index(["d_x", "L"])["rank"]
    assert main[(1, 2)] == 5 and main[(2, 2)] == 15
    assert (tmp_path / "rank_vs_depth.png").exists() and (tmp_path / "claims.csv").exists()


def test_rank_one_cell_profile(cli, tmp_path, monkeypatch):
    """A one-cell profile (one width, one depth: no depth increments to fit) summarises without error,
    says where its template growth is, and start_rank only moves where that growth starts, not the rank."""
    monkeypatch.setenv("DYNAMICS_HEARTBEAT_S", "0")
    sets = ["widths=3", "depths=2", "positions=4", "max_side=200", "seeds=1", "primes=268435399",
            "equiv_max_width=1", "start_rank=45", "points=grid"]
    code, out, err = cli("run", "depth-width-rank", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path))
    assert code == 0, err
    assert "N=4 d_x=3 L=2: K=" in err and "rank 49" in err
    ranks = pd.read_csv(tmp_path / "ranks.csv")
    assert ranks["rank"].tolist() == [49] and ranks.status.tolist() == ["exact"]  # (d+1)(d+4)(d^2+d+2)/8 at d = 3


def test_rank_random_points_profile(cli, tmp_path, monkeypatch):
    """points=random: an N = 6 cell whose rank equals N = 4's at d_x = 4 ((d+1)(d+4)(d^2+d+2)/8 = 110),
    with progress in random points; a bad points value is one line and exit 2."""
    monkeypatch.setenv("DYNAMICS_HEARTBEAT_S", "0")
    sets = ["widths=4", "depths=2", "positions=6", "max_side=300", "seeds=1", "primes=268435399",
            "points=random", "start_rank=100"]
    code, out, err = cli("run", "depth-width-rank", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path))
    assert code == 0, err
    assert "random points a side" in err and "rank 110" in err
    ranks = pd.read_csv(tmp_path / "ranks.csv")
    assert ranks["rank"].tolist() == [110] and ranks.points.tolist() == ["random"]
    code, out, err = cli("run", "depth-width-rank", "--set", "points=lattice", "--out", str(tmp_path / "bad"))
    assert code == 2 and "points='lattice'" in err and "Traceback" not in err


def test_theory_smoke(cli, tmp_path):
    sets = ["input_ranks=1", "wies_widths=1,2", "wies_depths=1", "max_side=64"]
    code, out, err = cli("run", "depth-width-theory", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path))
    assert code == 0, err
    claims = pd.read_csv(tmp_path / "claims.csv")
    expected = {"fit-1T-depth", "wies-depth-still-helps"}
    assert expected <= set(claims.claim)
    assert not any(c.startswith(("dong-", "noci-")) for c in claims.claim)  # owned by rank-collapse


def test_budget_smoke_ses(cli, tmp_path):
    sets = ["task=ses", "budget=600", "depth=1", "steps=3", "eval_every=3", "ses_test=32", "batch=4", "warmup=1"]
    code, out, err = cli("run", "depth-width-budget", *sum((["--set", s] for s in sets), []), "--out", str(tmp_path))
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "runs.csv")
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(runs) == 2 and len(trials) == 6 and trials.selected.sum() == 2  # 2 seeds x 3 learning rates
    assert runs.params.iloc[0] == 12 * runs.width.iloc[0] ** 2 + 13 * runs.width.iloc[0]


def test_budget_smoke_wikitext(cli, tmp_path):
    data = tmp_path / "wt"
    data.mkdir()
    text = "\n".join(" ".join(f"w{(i * 7 + j) % 23}" for j in range(12)) for i in range(60)) + "\n"
    (data / "valid.txt").write_text(text)
    (data / "test.txt").write_text(text.replace("w1 ", "w2 "))
    sets = ["task=wikitext", "budget=600", "depth=1", "steps=2", "eval_every=2", "batch=2", "context=8",
            "eval_tokens=64", "warmup=1", f"data_dir={data}"]
    code, out, err = cli("run", "depth-width-budget", *sum((["--set", s] for s in sets), []),
                         "--out", str(tmp_path / "res"))
    assert code == 0, err
    assert "trained on valid" in (tmp_path / "res" / "manifest.json").read_text()


TRAINED_TINY = ["--set", "seeds=2", "--set", "teachers=2x1", "--set", "vocab=6", "--set", "student_widths=1,2",
                "--set", "ts_steps=3", "--set", "ts_batch=8", "--set", "hop_depths=1,2", "--set", "hop_widths=4",
                "--set", "hop_steps=3", "--set", "hop_batch=4", "--set", "hop_eval=8", "--set", "hop_n=3",
                "--set", "claim_width=4", "--set", "warmup=1"]


def test_trained_smoke(cli, tmp_path):
    code, out, err = cli("sweep", "depth-width-trained", *TRAINED_TINY, "--grid", "part=teacher-linear,khop-2",
                         "--out", str(tmp_path))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "table.csv")
    assert set(table.task) == {"teacher-student", "k-hop"}
    need = pd.read_csv(tmp_path / "ts_needed.csv")
    assert len(need) == 2 and (need.predicted_width == 4).all()  # d_x = 1, L_T = 2: rank 5 -> width 4
    solve = pd.read_csv(tmp_path / "khop_solve.csv")
    assert sorted(solve.depth) == [1, 2] and (solve.seeds == 2).all()
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    assert claims.loc["ts-linear-above-rank-floor", "verdict"] == "PASS"
    assert (tmp_path / "needed_width.png").exists() and (tmp_path / "khop_solve_rate.png").exists()


def test_trained_bad_input(cli, tmp_path):
    code, _, err = cli("run", "depth-width-trained", "--set", "teachers=2y3", "--out", str(tmp_path / "x"))
    assert code == 2 and "teacher '2y3'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("setting,message", [
    ("widths=0,2", "each d_x must be between 1 and 64"),
    ("depths=1,9", "each L must be between 1 and 8"),
    ("max_side=100000", "GiB"),
    ("primes=268435400", "not prime"),
    ("heads=4", "divides none of widths"),
])
def test_rank_bad_input(cli, tmp_path, setting, message):
    out = tmp_path / "never"
    code, _, err = cli("run", "depth-width-rank", *RANK_TINY[:2], "--set", setting, "--out", str(out))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_budget_bad_input(cli, tmp_path):
    code, _, err = cli("run", "depth-width-budget", "--set", "budget=10", "--out", str(tmp_path / "x"))
    assert code == 2 and "budget=10" in err


def test_budget_missing_corpus_is_a_user_error(cli, tmp_path):
    out = tmp_path / "never"
    code, _, err = cli("run", "depth-width-budget", "--set", "task=wikitext", "--set", "budget=600", "--set", "depth=1",
                       "--set", f"data_dir={tmp_path / 'nowhere'}", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not out.exists()
