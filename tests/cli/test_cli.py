"""The command line: bad input, determinism, resume, and the scan-snap experiments end to end."""

import json

import pandas as pd
import pytest


@pytest.mark.parametrize("args,message", [
    (["run", "scan-snap-fig7"], "unknown experiment 'scan-snap-fig7' (did you mean 'scan-snap-fig"),
    (["run", "scan-snap-fig6", "--set", "eta_zz=1"], "unknown config key 'eta_zz' (did you mean 'eta_z'?)"),
    (["run", "scan-snap-fig6", "--set", "steps=many"], "steps='many': expected int"),
    (["run", "scan-snap-fig6", "--set", "eta_z=0"], "eta_z must be positive, got 0.0"),
    (["run", "scan-snap-fig6", "--set", "ratio=-2"], "ratio (eta_Y/eta_Z) must be positive, got -2.0"),
    (["run", "scan-snap-fig6", "--set", "T=1"], "T must be at least 2"),
    (["run", "scan-snap-fig6", "--set", "batch=0"], "batch must be at least 1, got 0"),
    (["run", "scan-snap-fig6", "--set", "unique_unnormalized_min=3"], "inconsistent sizes"),
    (["run", "scan-snap-fig6", "--set", "init=gaussian"], "init='gaussian' is not one of zero, uniform"),
    (["run", "scan-snap-fig6", "--set", "eta_z"], "--set expects key=value, got 'eta_z'"),
    (["run", "scan-snap-fig6", "--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["sweep", "scan-snap-fig6", "--grid", "eta_z=1,-1"], "eta_z must be positive, got -1.0"),
    (["sweep", "scan-snap-fig6", "--grid", "lr=1,2"], "unknown config key 'lr'"),
    (["run", "scan-snap-fig6", "--bogus"], "No such option '--bogus'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    out = tmp_path / "out"
    code, stdout, err = cli(*args, "--out", str(out)) if args[0] in ("run", "sweep") else cli(*args)
    assert code == 2
    assert err.startswith("dynamics: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_table_of_missing_results_is_a_user_error(cli, tmp_path):
    code, _, err = cli("table", "scan-snap-fig6", "--dir", str(tmp_path / "nothing"))
    assert code == 2 and "no results in" in err


def test_list_and_describe(cli):
    code, out, _ = cli("list")
    assert code == 0 and "scan-snap-fig6" in out and "Fig. 6" in out
    code, out, _ = cli("describe", "scan-snap-fig6")
    assert code == 0 and "eta_z" in out and "num_last = 1,3,5,10" in out


def test_nested_keys_in_describe_and_set(cli, tmp_path):
    code, out, _ = cli("describe", "scan-snap-fig6")
    assert code == 0 and "data.num_last*" in out and "data.unique_unnormalized_max*" in out
    assert "written spec.key" in out
    code, _, err = cli("run", "scan-snap-fig6", "--set", "data.num_lst=3", "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown config key 'data.num_lst' (did you mean 'data.num_last'?)" in err


def test_run_help_names_the_experiments_keys(cli):
    code, out, _ = cli("run", "scan-snap-fig6", "--help")
    assert code == 0 and "Config keys of scan-snap-fig6" in out and "data.num_last*" in out
    code, out, _ = cli("sweep", "--help")
    assert code == 0 and "Config keys of" not in out


def test_an_ambiguous_bare_key_is_one_line_exit_2(cli, tmp_path, monkeypatch):
    import dataclasses

    from dynamics.config import field
    from dynamics.experiments import scan_snap_fig6 as fig6
    from dynamics.scan_snap.data import SyntheticSpec

    @dataclasses.dataclass(frozen=True)
    class TwoData(fig6.Fig6Config):
        test_data: SyntheticSpec = field(SyntheticSpec(), "a second data model")

    monkeypatch.setattr(fig6, "EXPERIMENT", dataclasses.replace(fig6.EXPERIMENT, config=TwoData))
    code, _, err = cli("run", "scan-snap-fig6", "--set", "num_last=3", "--out", str(tmp_path / "a"))
    assert code == 2 and err.count("\n") == 1
    assert err == ("dynamics: error: config key 'num_last' is ambiguous: write one of data.num_last, "
                   "test_data.num_last\n")
    assert not (tmp_path / "a").exists()


def test_every_command_has_help(cli):
    for cmd in ["list", "describe", "run", "sweep", "table", "plot", "verify", "readme"]:
        code, out, _ = cli(cmd, "--help")
        assert code == 0 and "Usage" in out and len(out.splitlines()) > 3


SMALL = ["--grid", "num_last=1", "--grid", "eta_z=1,2", "--grid", "ratio=1,10", "--seeds", "2",
         "--set", "steps=20", "--set", "batch=32"]


def test_fig6_sweep_is_deterministic_and_resumable(cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("sweep", "scan-snap-fig6", *SMALL, "--out", str(a))[0] == 0
    assert cli("sweep", "scan-snap-fig6", *SMALL, "--out", str(b))[0] == 0
    assert (a / "table.csv").read_bytes() == (b / "table.csv").read_bytes()
    table = pd.read_csv(a / "table.csv")
    assert list(table.columns[:7]) == ["num_last", "eta_z", "ratio", "entropy_mean", "entropy_std",
                                       "entropy_se", "n_seeds"]
    assert len(table) == 4 and (table.n_seeds == 2).all()
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["config"]["steps"] == 20 and manifest["grid"]["eta_z"] == [1.0, 2.0]
    assert {"git", "versions", "wall_time_s", "argv", "notes"} <= set(manifest)
    # resume: every cell is already finished, so none is recomputed and the table is unchanged
    assert cli("sweep", "scan-snap-fig6", *SMALL, "--out", str(a), "--resume")[0] == 0
    assert json.loads((a / "manifest.json").read_text())["resumed_cells"] == 4
    assert (a / "table.csv").read_bytes() == (b / "table.csv").read_bytes()


def test_divergent_cells_are_recorded_and_the_sweep_goes_on(cli, tmp_path):
    code, _, _ = cli("sweep", "scan-snap-fig6", "--grid", "num_last=1", "--grid", "eta_z=1,1e30",
                     "--set", "ratio=1", "--seeds", "2", "--set", "steps=10", "--out", str(tmp_path))
    assert code == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert (runs[runs.eta_z == 1].diverged_step == -1).all()
    assert (runs[runs.eta_z == 1e30].diverged_step > 0).all()
    table = pd.read_csv(tmp_path / "table.csv")
    assert table.set_index("eta_z").n_diverged.to_dict() == {1.0: 0, 1e30: 2}


def test_fig4_quick_end_to_end_with_table_plot_and_verify(cli, tmp_path):
    out = tmp_path / "scan-snap-fig4"
    assert cli("run", "scan-snap-fig4", "--quick", "--out", str(out))[0] == 0
    for name in ["table.csv", "table.md", "headline.md", "trajectory.csv", "fig4_attention.png", "claims.csv"]:
        assert (out / name).exists(), name
    code, text, _ = cli("table", "scan-snap-fig4", "--dir", str(out), "--format", "csv")
    assert code == 0 and text.startswith("optimizer,eta_z,ratio")
    (out / "fig4_attention.png").unlink()
    assert cli("plot", "scan-snap-fig4", "--dir", str(out))[0] == 0
    assert (out / "fig4_attention.png").exists()
    code, text, _ = cli("verify", "scan-snap-fig4", "--results", str(tmp_path))
    assert code in (0, 1) and "scan-snap-fig4" in text and "reproductions:" in text
    ver = pd.read_csv(tmp_path / "verification.csv")
    assert list(ver.columns)[:11] == ["experiment", "claim", "kind", "reference", "prediction", "estimate", "ci_low",
                                      "ci_high", "n", "verdict", "mde"]
    assert set(ver.verdict) <= {"PASS", "FAIL", "INCONCLUSIVE"} and (tmp_path / "VERIFICATION.md").exists()


def test_a_second_writer_is_refused(tmp_path):
    from dynamics.errors import UserError
    from dynamics.sweep.store import Store

    lock = Store(tmp_path).lock()
    try:
        with pytest.raises(UserError, match="being written by another run"):
            Store(tmp_path).lock(wait=False)
    finally:
        lock.release()


def test_data_dir_is_checked_before_anything_runs(cli, tmp_path):
    code, _, err = cli("run", "scan-snap-wikitext", "--quick", "--data-dir", str(tmp_path / "nowhere"),
                       "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()
    code, _, err = cli("run", "scan-snap-fig4", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "reads no data" in err


def test_results_root_comes_from_the_project_or_the_environment(monkeypatch, tmp_path):
    from dynamics import paths

    monkeypatch.delenv("DYNAMICS_RESULTS", raising=False)
    root = paths.project_root()
    assert root is not None and paths.results_root() == root / "results"
    monkeypatch.chdir(tmp_path)  # not from the current directory
    assert paths.results_root() == root / "results"
    monkeypatch.setenv("DYNAMICS_RESULTS", str(tmp_path / "r"))
    assert paths.results_root() == tmp_path / "r" and paths.runs_root() == tmp_path / "runs"
    assert paths.results_root("elsewhere") == type(tmp_path)("elsewhere")


def test_one_vocabulary_for_result_directories(cli, tmp_path):
    """--dir names one experiment's result directory everywhere (alias --out on run and sweep)."""
    code, _, err = cli("run", "scan-snap-fig4", "--quick", "--dir", str(tmp_path / "r"))
    assert code == 0, err
    for command in ("table", "plot"):
        code, _, err = cli(command, "scan-snap-fig4", "--dir", str(tmp_path / "r"))
        assert code == 0, err


def test_reproduce_reports_progress_across_experiments(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_RESULTS", str(tmp_path / "results"))
    code, _, err = cli("reproduce", "scan-snap-fig4")
    assert code == 0, err
    assert "== [1/1] scan-snap-fig4: elapsed 0:00:00, ETA unknown" in err
    assert (tmp_path / "results" / "scan-snap-fig4" / "manifest.json").is_file()
    code, _, err = cli("reproduce", "nope")
    assert code == 2 and "unknown experiment" in err
