"""The run store: ``results/<experiment>/`` and its files, every write atomic.

Layout::

    table.csv, table.md     the main table (plus headline.md when the experiment has one)
    <name>.csv | .parquet   further tables; per-step trajectories go to Parquet
    *.png                   figures, written with fixed metadata so reruns do not churn git
    claims.csv              the experiment's claims, evaluated on the saved tables
    manifest.json           config, grid, seeds, git commit, package versions, wall time, argv
    .cells/<id>.pkl         one finished cell each (ignored by git); ``--resume`` skips these

and beside it ``.<experiment>.lock``, held while a run writes so two runs cannot interleave their
files (beside, not inside: a run that fails before its first cell leaves no directory behind).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
from filelock import FileLock, Timeout

from ..errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)
PARQUET_ROWS = 20_000  # tables longer than this are stored as Parquet rather than CSV
KNOWN_SUFFIXES = (".csv", ".parquet", ".md", ".png", ".json")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are ordinary readable files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub table without the ``tabulate`` dependency."""
    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt) if v == v else "nan"
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


class Store:
    """One experiment's result directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells = self.root / ".cells"

    # -- locking ---------------------------------------------------------------------------
    def lock(self, wait: bool = True) -> FileLock:
        """An exclusive lock on the directory, so two runs never interleave their files.

        A second writer waits for the first (saying so on stderr), or with ``wait=False`` stops with
        a UserError.  The lock is an OS file lock: it is released when its process dies, even by SIGKILL.
        """
        self.root.parent.mkdir(parents=True, exist_ok=True)
        path = self.root.parent / f".{self.root.name}.lock"
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                raise UserError(f"{self.root} is being written by another run (lock {path})") from None
            print(f"dynamics: waiting for another run writing {self.root}", file=sys.stderr, flush=True)
            lock.acquire()
        return lock

    # -- cells -----------------------------------------------------------------------------
    def cell_path(self, cell: str) -> Path:
        return self.cells / f"{cell}.pkl"

    def has_cell(self, cell: str) -> bool:
        return self.cell_path(cell).exists()

    def write_cell(self, cell: str, tables: dict[str, pd.DataFrame]) -> None:
        atomic_write_bytes(self.cell_path(cell), pickle.dumps(tables, protocol=pickle.HIGHEST_PROTOCOL))

    def read_cell(self, cell: str) -> dict[str, pd.DataFrame]:
        with open(self.cell_path(cell), "rb") as fh:
            return pickle.load(fh)

    def clear_cells(self) -> None:
        shutil.rmtree(self.cells, ignore_errors=True)

    # -- tables ----------------------------------------------------------------------------
    def write_tables(self, tables: dict[str, pd.DataFrame]) -> list[Path]:
        written = []
        for name, df in tables.items():
            if len(df) > PARQUET_ROWS:
                buf = io.BytesIO()
                df.to_parquet(buf, index=False)
                path = self.root / f"{name}.parquet"
                atomic_write_bytes(path, buf.getvalue())
            else:
                path = self.root / f"{name}.csv"
                atomic_write_text(path, df.to_csv(index=False, float_format="%.10g"))
            written.append(path)
            if name in ("table", "headline"):
                md = self.root / f"{name}.md"
                atomic_write_text(md, to_markdown(df))
                written.append(md)
        return written

    def load_tables(self) -> dict[str, pd.DataFrame]:
        if not (self.root / "table.csv").exists():
            raise UserError(f"no results in {self.root}: run `dynamics run {self.root.name}` first")
        tables = {}
        for path in sorted(self.root.glob("*.csv")):
            if path.stem not in ("claims",):
                tables[path.stem] = pd.read_csv(path)
        for path in sorted(self.root.glob("*.parquet")):
            tables[path.stem] = pd.read_parquet(path)
        return tables

    def write_json(self, name: str, obj: dict) -> Path:
        path = self.root / name
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        return path

    def read_json(self, name: str) -> dict:
        return json.loads((self.root / name).read_text())

    def remove_stale(self, keep: Iterable[Path]) -> None:
        """Delete result files of an earlier run that this run did not write (renamed figures)."""
        keep = {Path(p).resolve() for p in keep}
        for path in self.root.iterdir():
            if path.is_file() and path.suffix in KNOWN_SUFFIXES and path.resolve() not in keep:
                path.unlink()
