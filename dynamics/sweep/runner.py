"""Run an experiment's grid into its store: validate, expand, batch, execute, save, plot, claim.

Every config is built (and so validated) before the result directory is touched, so a bad value
writes nothing; so is the size of the run (:func:`check_size`).  Each finished cell is checkpointed
atomically as soon as its batch returns, so a crash loses at most the batches in flight and
``--resume`` continues from there.  The tables, figures, claims and manifest are written into a
staging directory that then replaces the result directory as a unit (:meth:`Store.commit`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import progress
from ..claims import CLAIM_ROW_COLUMNS, evaluate
from ..config import build, defaults, get, leaves, short_name
from ..errors import ENVIRONMENT_ERRNOS, UserError
from ..experiment import Context, Experiment, Tables
from . import manifest
from .executors import LocalExecutor
from .grid import POOLED_KEYS, canonical, cell_id, expand
from .store import Store


@dataclasses.dataclass
class Plan:
    """A validated run: the base config, the grid, and one config per cell."""

    experiment: Experiment
    base: Any
    grid: dict[str, tuple]
    cells: list[dict[str, Any]]
    configs: list[Any]
    ids: list[str]
    quick: bool


MAX_CELLS = 10_000  # cells in one run; DYNAMICS_MAX_CELLS or --max-cells raise it
MAX_WORK = 1_000.0  # estimated work, in multiples of the experiment's default run; DYNAMICS_MAX_WORK or --max-work
MAX_MEMORY_FRACTION = 0.5  # of this machine's memory, for experiments that estimate their peak (DYNAMICS_MAX_MEMORY_GB)


def _limit(value, env: str, default: float) -> float:
    if value is not None:
        return float(value)
    raw = os.environ.get(env)
    if raw:
        try:
            out = float(raw)
        except ValueError:
            raise UserError(f"{env}={raw!r}: expected a number") from None
        if not math.isfinite(out) or out <= 0:
            raise UserError(f"{env}={raw!r}: expected a positive number")
        return out
    return default


def plan(exp: Experiment, overrides: Mapping[str, Any] = (), grid: Mapping[str, tuple] | None = None,
         quick: bool = False, max_cells: int | None = None, max_work: float | None = None) -> Plan:
    """Build and validate every cell's config.  ``overrides`` fix keys (removing them from the grid);
    ``grid`` replaces or adds grid entries.  A run larger than the limits (see :func:`check_size`)
    is refused here, before anything is allocated.  Keys may be spelled in any way
    :func:`dynamics.config.resolve` accepts; they are matched under their short names."""
    cls = exp.config
    overrides = canonical(cls, dict(overrides))
    full_grid = canonical(cls, exp.grid)
    base_over: dict[str, Any] = {}
    if quick:
        base_over.update(canonical(cls, exp.quick))
        full_grid.update(canonical(cls, exp.quick_grid))
    base_over.update(overrides)
    for key in overrides:
        full_grid.pop(key, None)
    full_grid.update(canonical(cls, grid or {}))
    for key in full_grid:
        base_over.pop(key, None)
    base = build(exp.config, base_over)
    n_cells = math.prod(len(v) for v in full_grid.values())
    limit = _limit(max_cells, "DYNAMICS_MAX_CELLS", MAX_CELLS)
    if n_cells > limit:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in full_grid.items())
        raise UserError(f"{exp.name}: the grid has {n_cells:,} cells ({sizes}), more than the limit of {int(limit):,}; "
                        "raise it with --max-cells or DYNAMICS_MAX_CELLS")
    cells = expand(full_grid)
    configs = [build(exp.config, cell, base) for cell in cells]
    check_size(exp, configs, _limit(max_work, "DYNAMICS_MAX_WORK", MAX_WORK))
    if exp.preflight:
        for cfg in {repr(c): c for c in configs}.values():
            exp.preflight(cfg)
    ids = [cell_id(exp.name, dataclasses.asdict(c)) for c in configs]
    return Plan(exp, base, full_grid, cells, configs, ids, quick)


def _size_fields(cls: type) -> list[tuple[str, int]]:
    """Integer keys (at any depth, by short name) whose growth makes a run longer or larger (counts,
    lengths, sizes), with defaults.

    Excluded: seeds' values (``seed``), intervals (``*_every``: larger is cheaper), indices (``*_step``),
    lower bounds (``min_*``) and thread counts."""
    values = defaults(cls)
    out = []
    for k in leaves(cls):
        name, default = k.path[-1], values[k.name]
        if k.type is not int or not isinstance(default, int) or isinstance(default, bool):
            continue
        if (name == "seed" or name.endswith("_seed") or name.endswith("_every") or name.endswith("_step")
                or name.startswith("min_") or name == "threads"):
            continue
        out.append((short_name(cls, k.name), max(default, 1)))
    return out


def estimate_work(exp: Experiment, configs: Sequence[Any]) -> tuple[float, str]:
    """Rough work of a run in multiples of the default run: each cell counts the product of its size
    fields relative to their defaults (``steps=1000`` against a default of 100 counts 10), and a default
    run counts its number of cells.  Returns (work, the largest factor as ``key=value``)."""
    fields = _size_fields(exp.config)

    def work(cfg) -> tuple[float, str, float]:
        w, worst, worst_f = 1.0, "", 1.0
        for name, default in fields:
            value = get(cfg, name)
            f = max(1.0, value / default)
            w *= f
            if f > worst_f:
                worst, worst_f = f"{name}={value} is {f:.3g} x its default {default}", f
        return w, worst, worst_f

    default = sum(work(build(exp.config, cell))[0] for cell in expand(dict(exp.grid))) or 1.0
    total, worst, worst_f = 0.0, "", 1.0
    for cfg in configs:
        w, why, f = work(cfg)
        total += w
        if f > worst_f:
            worst, worst_f = why, f
    return total / default, worst


def check_size(exp: Experiment, configs: Sequence[Any], max_work: float) -> None:
    """Refuse a run whose estimated work or memory is past the limits, with the estimate."""
    work, worst = estimate_work(exp, configs)
    if work > max_work:
        raise UserError(f"{exp.name}: estimated at {work:.3g} x the work of its default run"
                        f"{' (' + worst + ')' if worst else ''}, more than the limit of {max_work:g} x; "
                        "raise it with --max-work or DYNAMICS_MAX_WORK")
    if exp.memory is not None:
        gib_env = os.environ.get("DYNAMICS_MAX_MEMORY_GB")
        try:
            limit = float(gib_env) * 2 ** 30 if gib_env else MAX_MEMORY_FRACTION * _physical_memory()
        except ValueError:
            raise UserError(f"DYNAMICS_MAX_MEMORY_GB={gib_env!r}: expected a number") from None
        groups: OrderedDict[Any, list] = OrderedDict()
        for i, cfg in enumerate(configs):
            groups.setdefault(exp.batch_key(cfg) if exp.batch_key else i, []).append(cfg)
        peak = max(exp.memory(b) for b in groups.values())
        if peak > limit:
            raise UserError(f"{exp.name}: a batch needs about {peak / 2 ** 30:.3g} GiB, more than the limit of "
                            f"{limit / 2 ** 30:.3g} GiB; raise it with DYNAMICS_MAX_MEMORY_GB")


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float(16 * 2 ** 30)


def batches(p: Plan, todo: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Group pending cells by the experiment's batch key, keeping grid order."""
    groups: OrderedDict[Any, list[int]] = OrderedDict()
    for i in todo:
        key = p.experiment.batch_key(p.configs[i]) if p.experiment.batch_key else i
        groups.setdefault(key, []).append(i)
    return list(enumerate(groups.values()))


def _run_batch(exp: Experiment, show_progress: bool, cfgs: Sequence[Any]) -> tuple[list[Tables], dict]:
    """What an executor runs: one batch of cells (module-level, so worker processes can unpickle it)."""
    ctx = Context(bar=progress.bar if show_progress else progress.silent)
    return exp.run_batch(cfgs, ctx), ctx.notes


def execute(p: Plan, out: Path, resume: bool = False, executor=None, argv: Sequence[str] | None = None,
            wait: bool = True) -> Path:
    """Run the plan into ``out`` and return it.  See the module docstring for the guarantees.

    Another run writing ``out`` holds its lock: with ``wait`` this run waits for it, else it stops
    with a UserError.  A directory this run may not write (another experiment's, or holding files the
    store did not write) is refused before anything runs; see :mod:`dynamics.sweep.store`.
    """
    exp = p.experiment
    store = Store(out)
    executor = executor or LocalExecutor(workers=1)
    started = time.time()
    git = manifest.git_state(Path(__file__).resolve().parent)  # the code that runs, not what is checked out at the end
    config = dataclasses.asdict(p.base)
    grid = {k: list(v) for k, v in p.grid.items()}
    try:  # before the lock, so a refused run creates nothing ...
        store.check_target(exp.name, config, grid, resume)
    except UserError:
        if not store.busy():  # ... unless another run is mid-write: its half-written state is no verdict
            raise
    lock = store.lock(wait=wait)
    staging = None
    try:
        store.recover()
        store.check_target(exp.name, config, grid, resume)  # again: another run may have written it meanwhile
        todo = [i for i, cid in enumerate(p.ids) if not (resume and store.has_cell(cid))]
        store.start_cells(exp.name, config, grid, resume)
        notes: dict = {}
        jobs = batches(p, todo)
        cost = [float(exp.cost(c)) if exp.cost else 1.0 for c in p.configs]
        pending = set(todo)
        with progress.bar(len(p.ids), exp.name, unit="cell") as pbar, \
                progress.Heartbeat(exp.name, len(p.ids), done=len(p.ids) - len(todo), work=sum(cost),
                                   work_done=sum(c for i, c in enumerate(cost) if i not in pending)) as beat:
            pbar.update(len(p.ids) - len(todo))
            in_process = isinstance(executor, LocalExecutor) and executor.processes(len(jobs)) <= 1
            fn = functools.partial(_run_batch, exp, in_process)
            members = dict(jobs)
            for index, (results, batch_notes) in executor.map(fn, [(j, [p.configs[i] for i in m]) for j, m in jobs]):
                for i, tables in zip(members[index], results):
                    store.write_cell(p.ids[i], tables)
                notes.update(batch_notes)
                pbar.update(len(members[index]))
                beat.update(len(members[index]), sum(cost[i] for i in members[index]))
        tables = summarize(p, collect(p, store))
        staging = store.staging()
        written = store.write_tables_into(staging, tables)
        saved = store.load_tables(staging)
        if exp.plot:
            from ..report.figures import render, save_all

            written += save_all(render(exp.plot, saved, p.base), staging)
        if exp.claims:
            written += store.write_tables_into(staging, {"claims": claims_frame(exp, saved, p.base)})
        store.commit(staging, {
            "experiment": exp.name,
            "reference": exp.reference,
            "argv": list(argv if argv is not None else sys.argv),
            "quick": p.quick,
            "config": config,
            "grid": grid,
            "cells": len(p.ids),
            "resumed_cells": len(p.ids) - len(todo),
            "executor": getattr(executor, "name", type(executor).__name__),
            "git": git,
            "versions": manifest.versions(),
            "machine": manifest.machine(),
            "wall_time_s": round(time.time() - started, 3),
            "notes": notes,
        }, written)
        staging = None
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"cannot write {store.root}: {exc.strerror or exc}; the previous result, if any, "
                        "is unchanged") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # our own unfinished outputs; the old result stays
        lock.release()
        if hasattr(executor, "close"):
            executor.close()
    return store.root


def claims_frame(exp: Experiment, tables: Tables, cfg: Any) -> pd.DataFrame:
    """The experiment's claims decided on saved tables (claims.csv)."""
    decided = evaluate(exp.name, exp.claim_specs, exp.claims(tables, cfg), cfg)
    return pd.DataFrame([d.row() for d in decided], columns=CLAIM_ROW_COLUMNS)


def summarize(p: Plan, tables: Tables) -> Tables:
    """The experiment's summary, computed separately for each value of a grid key the experiment did
    not foresee (one outside its default and quick grids, e.g. ``--grid seeds=1,2``), so that no table
    merges cells that differ in a grid key.  The root ``seed`` is pooled: its runs are further seeds."""
    exp = p.experiment
    if not exp.summarize:
        return tables
    foreseen = set(canonical(exp.config, exp.grid)) | set(canonical(exp.config, exp.quick_grid)) | set(POOLED_KEYS)
    extra = [k for k, v in p.grid.items() if len(v) > 1 and k not in foreseen]
    if not extra:
        return exp.summarize(tables, p.base)
    parts = []
    for combo in expand({k: p.grid[k] for k in extra}):
        sub = {}
        for name, df in tables.items():
            keep = pd.Series(True, index=df.index)
            for k, v in combo.items():
                keep &= df[k] == v
            sub[name] = df[keep].reset_index(drop=True)
        out = exp.summarize(sub, build(exp.config, combo, p.base))
        parts.append({name: with_keys(df, combo) for name, df in out.items()})
    return {name: pd.concat([o[name] for o in parts if name in o], ignore_index=True) for name in parts[0]}


def with_keys(df: pd.DataFrame, keys: dict) -> pd.DataFrame:
    """A copy of ``df`` with each of ``keys`` it lacks as a leading constant column, in the keys' order."""
    df = df.copy()
    for key, value in reversed(list(keys.items())):
        if key not in df.columns:
            df.insert(0, key, value)
    return df


def collect(p: Plan, store: Store) -> Tables:
    """All cells' tables, concatenated per name, with the grid values added as columns."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for cell, cid in zip(p.cells, p.ids):
        for name, df in store.read_cell(cid).items():
            parts.setdefault(name, []).append(with_keys(df, cell))
    return {name: pd.concat(dfs, ignore_index=True) for name, dfs in parts.items()}
