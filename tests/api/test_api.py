"""The Python API: experiments in memory, results equal to the CLI's, nothing written by default."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import dynamics as dyn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fig4():
    return dyn.run("scan-snap-fig4", quick=True)


def test_run_returns_frames_figures_claims_and_writes_nothing(fig4, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    assert isinstance(fig4.tables["table"], pd.DataFrame)
    assert set(fig4.figures) == {"fig4_attention", "fig4_dynamics"}
    assert all(isinstance(f, Figure) for f in fig4.figures.values())
    assert fig4.manifest["experiment"] == "scan-snap-fig4" and fig4.manifest["quick"] is True
    # values, not only shapes: the quick run still shows Fig. 4's early sparsification
    t = fig4.tables["table"].set_index("ratio")
    assert t.loc[1.0, "common_mass_init"] > t.loc[1.0, "common_mass_step10"]
    assert len(fig4.claims) >= 1


def test_run_in_a_directory_leaves_it_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dyn.run("scan-snap-fig6", quick=True, seeds=1, num_last=1)
    assert list(tmp_path.iterdir()) == []


def test_save_writes_what_the_cli_writes(fig4, tmp_path, cli):
    saved = fig4.save(tmp_path / "api")
    code, _, err = cli("run", "scan-snap-fig4", "--quick", "--out", str(tmp_path / "cli"))
    assert code == 0, err
    api_files = sorted(p.name for p in saved.iterdir() if not p.name.startswith("."))
    cli_files = sorted(p.name for p in (tmp_path / "cli").iterdir() if not p.name.startswith("."))
    assert api_files == cli_files
    for name in api_files:
        if name != "manifest.json":  # argv and wall time differ
            assert (saved / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


def test_save_refuses_a_directory_with_other_files(fig4, tmp_path):
    from dynamics.errors import UserError

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError):
        fig4.save(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_overrides_are_validated():
    from dynamics.errors import UserError

    with pytest.raises(UserError, match="unknown config key"):
        dyn.run("scan-snap-fig4", quick=True, eta_q=1.0)


def test_importing_figures_changes_no_global_state():
    code = ("import matplotlib; b = matplotlib.get_backend(); r = dict(matplotlib.rcParams); "
            "import dynamics.report.figures; assert matplotlib.get_backend() == b; "
            "assert dict(matplotlib.rcParams) == r")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "svg"})


def test_simulate_to_frame_is_tidy():
    from dynamics.scan_snap import simulate

    sim = simulate(eta_y=1.0, eta_z=1.0, seeds=2, steps=3, record=[0, 3])
    df = sim.to_frame()
    assert set(df.step) == {0, 3} and set(df.seed) == {0, 1}
    sums = df.groupby(["seed", "step", "cls"]).c.sum()
    assert sums.to_numpy() == pytest.approx(1.0)


def test_docs_example_runs(capsys):
    runpy.run_path(str(ROOT / "docs" / "example_api.py"), run_name="__main__")
    assert "final entropy" in capsys.readouterr().out
