"""Provenance for a run: git commit and dirty flag, package versions, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("dynamics", "torch", "numpy", "scipy", "sympy", "pandas", "matplotlib", "click")


def git_state(cwd: Path | None = None) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # results/ is excluded: a run that follows another in one `make reproduce` must not count the
        # first run's fresh outputs as uncommitted code
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.machine(),
            "torch_threads": torch.get_num_threads()}
