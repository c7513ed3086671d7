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


def _tiny_wikitext(root, n=900, seed=0):
    """valid.txt and test.txt with sentences "ctx ctx ctx q A|B": the query "q" has two next tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir()
    for name, k in (("valid.txt", n), ("test.txt", n // 3)):
        lines = []
        for _ in range(k):
            nxt = rng.choice(["A", "B"])
            pool = ["c0", "c1", "a0", "a0", "a1"] if nxt == "A" else ["c0", "c1", "b0", "b1"]
            lines.append(" " + " ".join([*rng.choice(pool, 3), "q", nxt]) + " ")
        (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_wikitext():
    """``tiny_wikitext(directory)`` builds a WikiText-like corpus there and returns the directory."""
    return _tiny_wikitext


@pytest.fixture(scope="module")
def made(request, tmp_path_factory):
    """One finished result of the test module's tiny sweep (its ``EXP`` and ``TINY`` arguments), for the
    tests that need a previous result to copy."""
    from dynamics.cli import main

    exp, tiny = request.module.EXP, request.module.TINY
    out = tmp_path_factory.mktemp("made") / exp
    with pytest.raises(SystemExit) as exc:
        main(["sweep", exp, *tiny, "--out", str(out)])
    assert exc.value.code == 0
    return out
