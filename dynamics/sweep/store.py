"""The run store: one experiment's result directory, written only where the user meant and never mixed.

Layout of ``results/<experiment>/`` (or ``runs/<experiment>/``, or ``--out DIR``)::

    table.csv, table.md     the main table (plus headline.md when the experiment has one)
    <name>.csv | .parquet   further tables; per-step trajectories go to Parquet
    *.png                   figures, written with fixed metadata so reruns do not churn git
    claims.csv              the experiment's claims, evaluated on the saved tables
    manifest.json           config, grid, git commit, versions, wall time, argv, and ``files``: every
                            file this store wrote with its size and SHA-256
    .cells/run.json         which experiment and config the checkpoints belong to
    .cells/<id>/            one finished cell each (ignored by git); ``--resume`` skips these

and beside it ``.<experiment>.lock``, held while a run writes so two runs cannot interleave their files.

Guarantees:

* **Ownership.**  A directory is reused only when its manifest names the same experiment (for
  ``--resume``, also the same config).  The store deletes only files its own previous manifest lists;
  a directory holding anything else is refused before anything runs.  Nested result directories
  (another run's ``--out`` inside this one, with their own manifest) are kept as they are.
* **Replacement as a unit.**  The tables, figures and manifest of a run are written into a sibling
  ``.<experiment>.new-*`` directory; then the old directory is renamed aside, the new one renamed into
  place, and the old one's own files removed.  A crash or a full disk leaves the old result or the
  new one, never a mix; a half-finished swap is completed by the next run (:meth:`Store.recover`).
* **No pickles.**  Checkpoints are Parquet tables with a JSON index, read back with their schema
  checked; a damaged one is reported in one line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from ..errors import UserError
from ..runtime import sha256_file

_UMASK = os.umask(0)
os.umask(_UMASK)
PARQUET_ROWS = 20_000  # tables longer than this are stored as Parquet rather than CSV
KNOWN_SUFFIXES = (".csv", ".parquet", ".md", ".png", ".json")
STORE_FORMAT = 2  # manifests of format 1 (no ``files``) are read as described in `owned_files`
CELL_FORMAT = 1
_CELL_ID = re.compile(r"[0-9a-f]{16}")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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




def read_json_file(path: Path, what: str = "JSON file") -> Any:
    """``path`` parsed, or a one-line UserError naming it (missing, unreadable, empty or not JSON)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path}: corrupt {what} ({exc})") from None


def read_manifest(path: Path) -> dict:
    """A result directory's ``manifest.json``, checked to be an object naming its experiment."""
    m = read_json_file(path, "manifest")
    if not isinstance(m, dict) or not isinstance(m.get("experiment"), str):
        raise UserError(f"{path}: corrupt manifest (no experiment name)")
    return m


def read_csv_checked(path: Path, expected: dict | None = None) -> pd.DataFrame:
    """A saved CSV, or a one-line UserError naming it.

    ``expected`` is the file's manifest entry ({"bytes", "sha256"}): a file that no longer matches it
    (truncated, edited) is refused rather than read, so no figure or claim is drawn from part of a table.
    Without one (older manifests) a file that does not end in a newline, or whose rows have a different
    number of fields than its header, is refused as truncated.
    """
    path = Path(path)
    _check_against_manifest(path, expected)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise UserError(f"{path}: empty table")
    if expected is None and not raw.endswith(b"\n"):
        raise UserError(f"{path}: truncated table (no final newline)")
    try:
        df = pd.read_csv(io.BytesIO(raw))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: corrupt table ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if expected is None:
        import csv

        width = len(df.columns)
        rows = csv.reader(io.StringIO(raw.decode(errors="replace")))
        if any(len(r) != width for r in rows if r):
            raise UserError(f"{path}: truncated or ragged table (rows with a different number of fields)")
    return df


def read_parquet_checked(path: Path, expected: dict | None = None) -> pd.DataFrame:
    path = Path(path)
    _check_against_manifest(path, expected)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own error types for every kind of damage
        raise UserError(f"{path}: corrupt Parquet file ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def _check_against_manifest(path: Path, expected: dict | None) -> None:
    if expected is None:
        return
    try:
        size = path.stat().st_size
    except OSError:
        raise UserError(f"{path}: listed in the manifest but missing") from None
    if size != expected.get("bytes") or sha256_file(path) != expected.get("sha256"):
        raise UserError(f"{path}: does not match its manifest (truncated or edited since the run); rerun the experiment")


def check_files(directory: Path, manifest: dict) -> None:
    """Every file the manifest lists is present and unchanged (a UserError naming the first that is not)."""
    files = manifest.get("files")
    if isinstance(files, dict):
        for name, entry in sorted(files.items()):
            if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or not isinstance(entry, dict):
                raise UserError(f"{Path(directory) / 'manifest.json'}: corrupt manifest (file entry {name!r})")
            _check_against_manifest(Path(directory) / name, entry)


class Store:
    """One experiment's result directory."""

    def __init__(self, root: Path, experiment: str | None = None):
        self.root = Path(os.path.abspath(root))
        self.cells = self.root / ".cells"
        self.name = self.root.name
        self.experiment = experiment or self.name  # for messages

    # -- locking ---------------------------------------------------------------------------
    def lock(self, wait: bool = True) -> FileLock:
        """An exclusive lock on the directory, so two runs never interleave their files.

        A second writer waits for the first (saying so on stderr), or with ``wait=False`` stops with
        a UserError.  The lock is an OS file lock: it is released when its process dies, even by SIGKILL.
        It lives beside the directory, so a run refused before its first cell leaves no directory.
        """
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root} is a file, not a directory: choose another --out")
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.root.parent}: {exc.strerror or exc}") from None
        path = self.root.parent / f".{self.name}.lock"
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                raise UserError(f"{self.root} is being written by another run (lock {path})") from None
            print(f"dynamics: waiting for another run writing {self.root}", file=sys.stderr, flush=True)
            lock.acquire()
        except OSError as exc:
            raise UserError(f"cannot write in {self.root.parent}: {exc.strerror or exc}") from None
        return lock

    def busy(self) -> bool:
        """Whether another process holds this directory's lock now (a run is writing it).  Creates
        nothing: without a lock file nobody is writing."""
        path = self.root.parent / f".{self.name}.lock"
        if not path.is_file():
            return False
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:
            return False
        lock.release()
        return False

    # -- ownership -------------------------------------------------------------------------
    def manifest(self) -> dict | None:
        path = self.root / "manifest.json"
        return read_manifest(path) if path.is_file() else None

    def owned_files(self, manifest: dict) -> set[str]:
        """Names of the files in the directory that this store wrote, according to ``manifest``.

        A format-2 manifest lists them.  An older manifest (written before the list existed) owns the
        result files of the kinds the old store wrote and deleted itself: directly inside the directory,
        with a result suffix.
        """
        files = manifest.get("files")
        if isinstance(files, dict):
            names = set(files)
        elif files is None:
            names = {p.name for p in self.root.iterdir() if p.is_file() and not p.is_symlink()
                     and p.suffix in KNOWN_SUFFIXES}
        else:
            raise UserError(f"{self.root / 'manifest.json'}: corrupt manifest (files is not a mapping)")
        bad = [n for n in names if not isinstance(n, str) or not _TABLE_NAME.fullmatch(n)]
        if bad:
            raise UserError(f"{self.root / 'manifest.json'}: corrupt manifest (file name {bad[0]!r})")
        return names | {"manifest.json"}

    def check_target(self, experiment: str, config: dict | None = None, grid: dict | None = None,
                     resume: bool = False) -> None:
        """Refuse, in one line, a directory this run may not write (see the module docstring)."""
        root = self.root
        if not root.exists():
            return
        if not root.is_dir():
            raise UserError(f"{root} is a file, not a directory: choose another --out")
        if root.is_symlink():
            raise UserError(f"{root} is a symbolic link: pass the directory it points to as --out")
        manifest = self.manifest()
        run = self._cells_owner()
        owner = manifest or run
        if owner is not None and owner.get("experiment") != experiment:
            raise UserError(f"{root} holds results of {owner.get('experiment')!r}, not {experiment!r}: "
                            "choose another --out")
        owned = self.owned_files(manifest) if manifest else set()
        foreign = []
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            if entry.name in owned and entry.is_file() and not entry.is_symlink():
                continue
            if entry.name == ".cells" and entry.is_dir() and not entry.is_symlink() and (run or manifest):
                continue
            if entry.is_dir() and not entry.is_symlink() and (entry / "manifest.json").is_file():
                continue  # a nested result directory: kept, never touched
            if _is_lock_file(entry):
                continue  # the lock of a nested result directory
            foreign.append(entry.name)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise UserError(f"{root} holds files this program did not write ({', '.join(foreign[:3])}{more}): "
                            "choose an empty or new --out")
        if resume and config is not None:
            prev = run if run is not None else manifest
            if prev is not None:
                from ..config import flat
                from .grid import scientific

                # by short name, so a checkpoint written before fields moved into a spec still matches
                mine, theirs = flat(scientific(config)), flat(scientific(prev.get("config", {})))
                diff = [k for k in sorted(set(mine) | set(theirs)) if _canon(mine.get(k)) != _canon(theirs.get(k))]
                if grid is not None and _canon(grid) != _canon(prev.get("grid", {})):
                    diff.append("grid")
                if diff:
                    raise UserError(f"--resume: {root} was run with a different config ({', '.join(diff[:5])}); "
                                    "drop --resume to replace it, or choose another --out")

    def _cells_owner(self) -> dict | None:
        path = self.cells / "run.json"
        if not path.is_file():
            return None
        owner = read_json_file(path, "checkpoint index")
        if not isinstance(owner, dict) or not isinstance(owner.get("experiment"), str):
            raise UserError(f"{path}: corrupt checkpoint index")
        return owner

    # -- cells -----------------------------------------------------------------------------
    def start_cells(self, experiment: str, config: dict, grid: dict, resume: bool) -> None:
        """Claim ``.cells`` for this run.  Without ``resume``, earlier checkpoints are removed: only
        entries this store writes (cell directories, its index, its temporary files)."""
        if not resume and self.cells.is_dir():
            for entry in self.cells.iterdir():
                if entry.is_dir() and (_CELL_ID.fullmatch(entry.name) or entry.name.startswith(".tmp-")):
                    shutil.rmtree(entry)
                elif entry.name == "run.json" or (entry.is_file() and entry.suffix == ".pkl"
                                                  and _CELL_ID.fullmatch(entry.stem)):
                    entry.unlink()  # *.pkl: checkpoints of the old store, never read again
        atomic_write_text(self.cells / "run.json", json.dumps(
            {"experiment": experiment, "config": config, "grid": grid, "format": CELL_FORMAT},
            indent=1, sort_keys=True, default=str) + "\n")

    def cell_path(self, cell: str) -> Path:
        return self.cells / cell

    def has_cell(self, cell: str) -> bool:
        return (self.cell_path(cell) / "index.json").is_file()

    def write_cell(self, cell: str, tables: dict[str, pd.DataFrame]) -> None:
        """One Parquet file per table plus ``index.json``, written into a temporary directory and
        renamed into place, so a cell is either complete or absent."""
        self.cells.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cells))
        try:
            index = {"format": CELL_FORMAT, "tables": {}}
            for i, (name, df) in enumerate(tables.items()):
                if not isinstance(name, str) or not isinstance(df, pd.DataFrame):
                    raise TypeError(f"run_batch returned {type(df).__name__} for table {name!r}, not a DataFrame")
                file = f"t{i}.parquet"
                buf = io.BytesIO()
                df.to_parquet(buf, index=False)
                (tmp / file).write_bytes(buf.getvalue())
                index["tables"][name] = {"file": file, "columns": [str(c) for c in df.columns], "rows": len(df)}
            (tmp / "index.json").write_text(json.dumps(index, sort_keys=True))
            for p in tmp.iterdir():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o777 & ~_UMASK)
            target = self.cell_path(cell)
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def read_cell(self, cell: str) -> dict[str, pd.DataFrame]:
        """A checkpoint's tables, with its index and each table's columns and length checked."""
        d = self.cell_path(cell)
        index = read_json_file(d / "index.json", "checkpoint index")
        tables = index.get("tables") if isinstance(index, dict) else None
        if not isinstance(tables, dict) or index.get("format") != CELL_FORMAT:
            raise UserError(f"{d / 'index.json'}: corrupt checkpoint index (rerun without --resume)")
        out = {}
        for name, entry in tables.items():
            file = entry.get("file") if isinstance(entry, dict) else None
            if not isinstance(file, str) or not re.fullmatch(r"t\d+\.parquet", file):
                raise UserError(f"{d / 'index.json'}: corrupt checkpoint index (table {name!r})")
            path = d / file
            df = read_parquet_checked(path)
            if [str(c) for c in df.columns] != entry.get("columns") or len(df) != entry.get("rows"):
                raise UserError(f"{path}: checkpoint does not match its index (rerun without --resume)")
            out[name] = df
        return out

    # -- tables (into any directory: the staging directory during a run) -----------------------
    @staticmethod
    def write_tables_into(directory: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
        written = []
        for name, df in tables.items():
            if not _TABLE_NAME.fullmatch(name):
                raise ValueError(f"table name {name!r} is not a plain file name")
            if len(df) > PARQUET_ROWS:
                buf = io.BytesIO()
                df.to_parquet(buf, index=False)
                path = directory / f"{name}.parquet"
                atomic_write_bytes(path, buf.getvalue())
            else:
                path = directory / f"{name}.csv"
                atomic_write_text(path, df.to_csv(index=False, float_format="%.10g"))
            written.append(path)
            if name in ("table", "headline"):
                md = directory / f"{name}.md"
                atomic_write_text(md, to_markdown(df))
                written.append(md)
        return written

    def write_tables(self, tables: dict[str, pd.DataFrame]) -> list[Path]:
        return self.write_tables_into(self.root, tables)

    def load_tables(self, directory: Path | None = None) -> dict[str, pd.DataFrame]:
        """Every saved table (claims excepted), each checked against the manifest when there is one."""
        d = Path(directory) if directory is not None else self.root
        if not d.is_dir() or not (d / "table.csv").exists():
            raise UserError(f"no results in {d}: run `dynamics run {self.experiment}` first")
        manifest_path = d / "manifest.json"
        files = read_manifest(manifest_path).get("files") if manifest_path.exists() else None
        files = files if isinstance(files, dict) else None
        listed = sorted(files) if files is not None else sorted(p.name for p in d.iterdir())
        tables = {}
        for name in listed:
            path = d / name
            stem, suffix = os.path.splitext(name)
            if stem == "claims" or suffix not in (".csv", ".parquet") or not path.is_file():
                continue
            entry = files.get(name) if files is not None else None
            tables[stem] = read_csv_checked(path, entry) if suffix == ".csv" else read_parquet_checked(path, entry)
        if "table" not in tables:
            raise UserError(f"no results in {d}: run `dynamics run {self.experiment}` first")
        return tables

    def rewrite(self, name: str, data: bytes) -> Path:
        """Replace one file of a finished result (``plot`` redrawing a figure, ``verify --redecide``
        rewriting claims.csv) and record its new size and hash in the manifest, so later reads still
        check it.  Only a file the manifest lists, or a new one, may be written; call under :meth:`lock`."""
        manifest = self.manifest()
        if manifest is None:
            raise UserError(f"{self.root}: no manifest.json, so no result of this program to update")
        if not _TABLE_NAME.fullmatch(name) or name == "manifest.json":
            raise ValueError(f"{name!r} is not a result file name")
        path = self.root / name
        if path.exists() and name not in self.owned_files(manifest):
            raise UserError(f"{path} was not written by this program: not replaced")
        atomic_write_bytes(path, data)
        files = manifest.get("files")
        if isinstance(files, dict):
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            atomic_write_text(self.root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        return path

    def read_json(self, name: str) -> dict:
        return read_manifest(self.root / name) if name == "manifest.json" else read_json_file(self.root / name)

    # -- replacing the directory as a unit ---------------------------------------------------
    def staging(self) -> Path:
        """A fresh sibling directory to write a run's outputs into before :meth:`commit`."""
        d = Path(tempfile.mkdtemp(prefix=f".{self.name}.new-", dir=self.root.parent))
        os.chmod(d, 0o777 & ~_UMASK)  # mkdtemp creates 0700; a result directory is an ordinary one
        return d

    def commit(self, staging: Path, manifest: dict, written: Iterable[Path]) -> None:
        """Finish ``staging`` (its manifest lists ``written`` with sizes and hashes) and put it in place
        of the result directory; the old directory's own files are removed afterwards."""
        staging = Path(staging)
        files = {}
        for p in written:
            p = Path(p)
            if p.parent.resolve() != staging.resolve() or not p.is_file():
                raise ValueError(f"{p} was not written into the staging directory {staging}")
            files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = {**manifest, "files": files, "store_format": STORE_FORMAT}
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        _fsync_dir(staging)
        if self.cells.is_dir():
            os.rename(self.cells, staging / ".cells")  # checkpoints travel with the result
        backup = None
        if self.root.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{self.name}.old-", dir=self.root.parent))
            os.rename(self.root, backup / "d")
        os.rename(staging, self.root)
        _fsync_dir(self.root.parent)
        if backup is not None:
            self._retire(backup)

    def recover(self) -> None:
        """Finish or undo a swap that a crash interrupted (called under the lock, before a run)."""
        parent = self.root.parent
        if not parent.is_dir():
            return
        for backup in sorted(parent.glob(f".{glob_escape(self.name)}.old-*")):
            if not (backup / "d").is_dir():
                _remove_empty(backup)
            elif not self.root.exists():
                os.rename(backup / "d", self.root)  # the swap stopped half-way: the old result comes back
                _remove_empty(backup)
            else:
                self._retire(backup)
        for staging in sorted(parent.glob(f".{glob_escape(self.name)}.new-*")):
            # an unfinished run's outputs (every file in it is ours); its checkpoints are kept
            if (staging / ".cells").is_dir() and not self.cells.exists() and self.root.is_dir():
                os.rename(staging / ".cells", self.cells)
            shutil.rmtree(staging, ignore_errors=True)

    def _retire(self, backup: Path) -> None:
        """Move nested result directories from the old directory into the new one, then delete the old
        directory's own files (those its manifest lists) and the empty directory.  Anything else is
        left where it is, with a warning."""
        old = backup / "d"
        manifest = None
        if (old / "manifest.json").is_file():
            try:
                manifest = read_manifest(old / "manifest.json")
            except UserError:
                manifest = None
        owned = Store(old).owned_files(manifest) if manifest else set()
        for entry in list(old.iterdir()):
            if entry.name == ".cells" and entry.is_dir() and not entry.is_symlink():
                if not self.cells.exists():
                    os.rename(entry, self.cells)
                else:
                    shutil.rmtree(entry)  # superseded checkpoints of this store
            elif entry.is_dir() and not entry.is_symlink() and (entry / "manifest.json").is_file():
                if not (self.root / entry.name).exists():
                    os.rename(entry, self.root / entry.name)
            elif _is_lock_file(entry):
                if not (self.root / entry.name).exists():
                    os.rename(entry, self.root / entry.name)
                else:
                    entry.unlink()
            elif entry.name in owned and entry.is_file():
                entry.unlink()
        left = list(old.iterdir())
        if left:
            print(f"dynamics: warning: kept {len(left)} unknown entries of the old result in {old}",
                  file=sys.stderr)
            return
        old.rmdir()
        backup.rmdir()


def _is_lock_file(p: Path) -> bool:
    """``.<name>.lock``: the (empty) lock file of a nested result directory."""
    return (p.name.startswith(".") and p.name.endswith(".lock") and p.is_file() and not p.is_symlink()
            and p.stat().st_size == 0)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _remove_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _canon(obj: Any) -> str:
    """A comparable form of a config value or grid, from the run or from JSON (tuples become lists)."""
    return json.dumps(obj, sort_keys=True, default=str)
