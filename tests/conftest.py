"""Shared test helpers."""

from __future__ import annotations

import os

import pytest

# Tests run on 2 cores; one torch thread per test process keeps timings stable and avoids
# oversubscription when pytest runs next to other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _scratch_results_root(tmp_path_factory, monkeypatch):
    """Commands that default to the project's results root write into a scratch one during tests, so
    no test can touch the committed results/ or the project's runs/."""
    monkeypatch.setenv("DYNAMICS_RESULTS", str(tmp_path_factory.mktemp("project") / "results"))


@pytest.fixture
def cli(capsys):
    """Run the ``dynamics`` CLI in-process: ``code, out, err = cli("run", "x")``."""
    from dynamics.cli import main

    def run(*args: str):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
