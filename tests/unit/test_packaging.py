"""Packaging: every package installs, and the experiments install under the dynamics namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dynamics").rglob("__init__.py")}
    assert found | {"dynamics.experiments"} == listed


def test_a_users_own_experiments_module_does_not_shadow_the_package(tmp_path):
    (tmp_path / "experiments.py").write_text("raise RuntimeError('the user module was imported')\n")
    code = "import dynamics as dyn; assert 'scan-snap-fig4' in dyn.experiments()"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
