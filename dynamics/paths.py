"""Where results live: the project's ``results/`` (committed reproductions) and ``runs/`` (scratch).

The results root is, in order: an explicit ``--results`` option, the ``DYNAMICS_RESULTS`` environment
variable, or ``results/`` of the project this package was installed from (a checkout with an editable
install: the directory holding ``pyproject.toml`` beside the ``dynamics`` package).  Only when the
package is not installed from a checkout (a wheel) does it fall back to ``./results``.  So a command
run from a subdirectory of the checkout reads and writes the same results as one run from its root.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

ENV_RESULTS = "DYNAMICS_RESULTS"


@functools.cache
def project_root() -> Path | None:
    """The checkout holding this package's source, or None for a non-editable install."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() and (here / "dynamics").is_dir() else None


def results_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_RESULTS):
        return Path(os.environ[ENV_RESULTS])
    root = project_root()
    return root / "results" if root is not None else Path("results")


def runs_root() -> Path:
    """Scratch runs (--quick, --set, sweeps): ``runs/`` beside the results root."""
    return results_root().parent / "runs"


def readme_path() -> Path:
    root = project_root()
    return root / "README.md" if root is not None else Path("README.md")
