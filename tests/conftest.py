"""Shared test helpers."""

from __future__ import annotations

import os

import pytest

# Tests run on 2 cores; one torch thread per test process keeps timings stable and avoids
# oversubscription when pytest runs next to other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
