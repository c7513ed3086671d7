"""The Python entry points: run an experiment or a sweep and get its results in memory.

>>> import dynamics as dyn
>>> dyn.experiments()[:2]                                     # doctest: +SKIP
>>> res = dyn.run("scan-snap-fig6", quick=True, seeds=3, eta_z=1.0)   # doctest: +SKIP
>>> res.tables["table"]; res.claims; res.figures["fig6_entropy"]      # doctest: +SKIP
>>> res.save("my-results/fig6")                                       # doctest: +SKIP

A run goes through the same validation, executors and store as ``dynamics run``; it is executed in a
private scratch directory that is removed afterwards, so nothing is written under the project, and
:meth:`Result.save` writes exactly the files that ``dynamics run --out DIR`` writes.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


@dataclasses.dataclass
class Result:
    """One experiment's results: tables (the main one under ``"table"``), decided claims, figures
    (matplotlib Figures by name) and the manifest (config, grid, seeds, provenance)."""

    experiment: str
    tables: dict[str, pd.DataFrame]
    claims: pd.DataFrame
    figures: dict[str, Any]
    manifest: dict
    _files: dict[str, bytes] = dataclasses.field(repr=False, default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return self.tables["table"]

    def save(self, directory: str | Path) -> Path:
        """Write the run's files (tables, figures, claims, manifest) into ``directory``.

        The directory must be new or empty, or hold a result of the same experiment written by this
        package (its files are replaced); anything else is refused, so nothing of yours is overwritten.
        """
        from .errors import UserError
        from .sweep.store import atomic_write_bytes

        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()):
            manifest = out / "manifest.json"
            try:
                same = json.loads(manifest.read_text()).get("experiment") == self.experiment
            except (OSError, ValueError):
                same = False
            foreign = [p.name for p in out.iterdir() if p.name not in self._files and not p.name.startswith(".")]
            if not same or foreign:
                raise UserError(f"{out} holds other files; save into a new or empty directory")
        for name, data in self._files.items():
            atomic_write_bytes(out / name, data)
        return out

    def __repr__(self) -> str:
        verdicts = self.claims["verdict"].value_counts().to_dict() if "verdict" in self.claims else {}
        return (f"Result({self.experiment!r}, tables={sorted(self.tables)}, figures={sorted(self.figures)}, "
                f"claims={verdicts or len(self.claims)})")


def describe(name: str) -> pd.DataFrame:
    """One row per config key of experiment ``name``: key, type, default, meaning."""
    from .config import describe as fields
    from .experiments import get

    return pd.DataFrame(fields(get(name).config), columns=["key", "type", "default", "meaning"])


def run(name: str, *, quick: bool = False, seeds: int | None = None, executor: str = "local",
        address: str | None = None, workers: int | None = None, **overrides: Any) -> Result:
    """Run experiment ``name`` over its default grid, in memory.  Keyword overrides set config keys
    (``eta_z=1.0``; a key inside a spec by its unique bare name, ``num_last=3``, or qualified, as
    ``**{"data.num_last": 3}``); ``seeds`` sets the seeds per cell; ``quick`` uses the experiment's
    small config."""
    return sweep(name, grid={}, quick=quick, seeds=seeds, executor=executor, address=address,
                 workers=workers, **overrides)


def sweep(name: str, grid: Mapping[str, Any] | None = None, *, quick: bool = False, seeds: int | None = None,
          executor: str = "local", address: str | None = None, workers: int | None = None,
          **overrides: Any) -> Result:
    """Run experiment ``name`` over ``grid`` ({key: values}, replacing those keys of the default grid),
    in memory.  Keyword overrides fix config keys.  Grid and override keys may be qualified
    (``"data.num_last"``) or unique bare names, as for :func:`run`."""
    from .config import build, coerce
    from .errors import UserError
    from .experiments import get
    from .report.figures import render
    from .sweep import runner
    from .sweep.executors import make_executor
    from .sweep.grid import canonical

    exp = get(name)
    if seeds is not None:
        overrides["seeds"] = seeds
    fixed = {k: coerce(exp.config, k, v) for k, v in overrides.items()}
    cells: dict[str, tuple] = {}
    for key, values in (grid or {}).items():
        values = tuple(values) if isinstance(values, (list, tuple, range)) else (values,)
        if not values:
            raise UserError(f"grid {key}= has no values")
        cells[key] = tuple(coerce(exp.config, key, v) for v in values)
    cells = canonical(exp.config, cells, "grid ")
    plan = runner.plan(exp, fixed, cells, quick=quick)
    if executor == "local" and workers is None:
        workers = exp.local_workers
    pool = make_executor(executor, address, workers)
    with tempfile.TemporaryDirectory(prefix="dynamics-") as tmp:
        out = Path(tmp) / exp.name
        runner.execute(plan, out, executor=pool, argv=[f"dynamics.sweep({name!r})"])
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
        from .sweep.store import Store

        store = Store(out)
        tables = store.load_tables()
        claims = pd.read_csv(out / "claims.csv") if (out / "claims.csv").exists() else pd.DataFrame()
        manifest = json.loads((out / "manifest.json").read_text())
    base = build(exp.config, manifest["config"])
    figures = render(exp.plot, tables, base) if exp.plot else {}
    return Result(exp.name, tables, claims, figures, manifest, files)
