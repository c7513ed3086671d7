"""The sweep engine: kill and resume, concurrent writers, the Dask executor, identical tables."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# 8 cells in 8 separate batches (the root seed is part of the batch key), each a fraction of a second
SWEEP = [sys.executable, "-m", "dynamics.cli", "sweep", "scan-snap-fig6", "--grid", "seed=0,1,2,3,4,5,6,7",
         "--set", "num_last=1", "--set", "eta_z=1", "--set", "ratio=2", "--seeds", "2", "--set", "steps=20",
         "--set", "batch=32", "--set", "T=64", "--workers", "1"]
# for the kill test: 10 slower cells, so that the kill lands between cells
SLOW = [*SWEEP[:6], "seed=0,1,2,3,4,5,6,7,8,9", *SWEEP[7:], "--set", "steps=100"]


def sweep(out: Path, *extra: str, cmd=SWEEP) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "--out", str(out), *extra], capture_output=True, text=True, timeout=300)


def done(out: Path) -> int:
    """Finished cells: directories renamed into place (a ``.tmp-*`` one is still being written)."""
    cells = out / ".cells"
    return len([p for p in cells.glob("*/index.json") if not p.parent.name.startswith(".")]) if cells.is_dir() else 0


def test_sigkill_halfway_then_resume_gives_the_uninterrupted_table(tmp_path):
    reference = tmp_path / "reference"
    assert sweep(reference, cmd=SLOW).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([*SLOW, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and done(out) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = done(out)
    assert 3 <= finished < 10, f"kill landed after {finished} of 10 cells"
    assert not (out / "table.csv").exists()
    # a cell is a directory renamed into place whole; only a temporary directory can be half-written
    half = [p for p in (out / ".cells").iterdir() if p.is_dir() and not (p / "index.json").exists()
            and not p.name.startswith(".tmp-")]
    assert not half, "a half-written cell"
    resumed = sweep(out, "--resume", cmd=SLOW)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "manifest.json").read_text())["resumed_cells"] == finished
    assert (out / "table.csv").read_bytes() == (reference / "table.csv").read_bytes()
    assert (out / "runs.csv").read_bytes() == (reference / "runs.csv").read_bytes()


def test_two_sweeps_writing_one_directory_do_not_corrupt_each_other(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([*SWEEP[:-2], "--workers", "1", "--set", f"eta_z={eta}", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for eta in ("1", "3")]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert any("waiting for another run" in err for _, err in results)
    # whichever ran last owns the directory, and its table, runs and manifest agree
    manifest = json.loads((out / "manifest.json").read_text())
    import pandas as pd

    table, runs = pd.read_csv(out / "table.csv"), pd.read_csv(out / "runs.csv")
    assert set(table.eta_z) == set(runs.eta_z) == {manifest["config"]["eta_z"]}
    assert len(table) == 1 and table.n_seeds.item() == 16 and len(runs) == 16  # 8 root seeds x 2
    assert not list(out.glob(".*.tmp*")) and not [p for p in out.iterdir() if p.name.startswith(".table")]


def test_dask_localcluster_gives_the_local_table(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = tmp_path / "local"
    assert sweep(local).returncode == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        done = subprocess.run([*SWEEP[:-2], "--executor", "dask", "--address", cluster.scheduler_address,
                               "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert json.loads((out / "manifest.json").read_text())["executor"] == "dask"
    assert (out / "table.csv").read_bytes() == (local / "table.csv").read_bytes()


def test_unreachable_dask_scheduler_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli("run", "scan-snap-fig4", "--executor", "dask", "--address", "tcp://127.0.0.1:9",
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "cannot reach a Dask scheduler at tcp://127.0.0.1:9" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_dask_needs_an_address(cli, tmp_path):
    code, _, err = cli("run", "scan-snap-fig4", "--executor", "dask", "--out", str(tmp_path / "x"))
    assert code == 2 and "needs --address" in err


def test_manifest_dirty_flag_counts_code_not_results(tmp_path):
    """A run's own outputs in results/ (e.g. from the previous experiment of `make reproduce`) do not
    make the next manifest 'dirty'; an edited source file does."""
    import subprocess

    from dynamics.sweep import manifest

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    assert manifest.git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")
    assert manifest.git_state(tmp_path / "results")["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert manifest.git_state(tmp_path / "results")["dirty"] is True


def test_changing_threads_or_device_and_resuming_recomputes_no_cell(cli, tmp_path, monkeypatch):
    """Execution-only keys (threads, device, workers) are not part of a cell's identity."""
    from dynamics.sweep import runner

    out = tmp_path / "r"
    args = ["sweep", "scan-snap-phase", "--quick", "--out", str(out), "--set", "threads=1"]
    code, _, err = cli(*args)
    assert code == 0, err
    before = (out / "table.csv").read_bytes()
    calls = []
    original = runner._run_batch
    monkeypatch.setattr(runner, "_run_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    code, _, err = cli("sweep", "scan-snap-phase", "--quick", "--out", str(out), "--set", "threads=2",
                       "--set", "device=cpu", "--resume")
    assert code == 0, err
    assert calls == [] and (out / "table.csv").read_bytes() == before
