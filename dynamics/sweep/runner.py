"""Run an experiment's grid into its store: validate, expand, batch, execute, save, plot, claim.

Every config is built (and so validated) before the result directory is touched, so a bad value
writes nothing.  Each finished cell is saved atomically as soon as its batch returns, so a crash
loses at most the batches in flight and ``--resume`` continues from there.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import progress
from ..claims import CLAIM_ROW_COLUMNS, evaluate
from ..config import build
from ..experiment import Context, Experiment, Tables
from . import manifest
from .executors import LocalExecutor
from .grid import cell_id, expand
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


def plan(exp: Experiment, overrides: Mapping[str, Any] = (), grid: Mapping[str, tuple] | None = None,
         quick: bool = False) -> Plan:
    """Build and validate every cell's config.  ``overrides`` fix keys (removing them from the grid);
    ``grid`` replaces or adds grid entries."""
    overrides = dict(overrides)
    full_grid = dict(exp.grid)
    base_over: dict[str, Any] = {}
    if quick:
        base_over.update(exp.quick)
        full_grid.update(exp.quick_grid)
    base_over.update(overrides)
    for key in overrides:
        full_grid.pop(key, None)
    full_grid.update(grid or {})
    for key in full_grid:
        base_over.pop(key, None)
    base = build(exp.config, base_over)
    cells = expand(full_grid)
    configs = [build(exp.config, cell, base) for cell in cells]
    if exp.preflight:
        for cfg in {repr(c): c for c in configs}.values():
            exp.preflight(cfg)
    ids = [cell_id(exp.name, dataclasses.asdict(c)) for c in configs]
    return Plan(exp, base, full_grid, cells, configs, ids, quick)


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
    with a UserError.
    """
    exp = p.experiment
    store = Store(out)
    executor = executor or LocalExecutor(workers=1)
    started = time.time()
    git = manifest.git_state(Path(__file__).resolve().parent)  # the code that runs, not what is checked out at the end
    lock = store.lock(wait=wait)
    try:
        if not resume:
            store.clear_cells()
        todo = [i for i, cid in enumerate(p.ids) if not (resume and store.has_cell(cid))]
        notes: dict = {}
        jobs = batches(p, todo)
        with progress.bar(len(p.ids), exp.name, unit="cell") as pbar:
            pbar.update(len(p.ids) - len(todo))
            in_process = isinstance(executor, LocalExecutor) and executor.processes(len(jobs)) <= 1
            fn = functools.partial(_run_batch, exp, in_process)
            members = dict(jobs)
            for index, (results, batch_notes) in executor.map(fn, [(j, [p.configs[i] for i in m]) for j, m in jobs]):
                for i, tables in zip(members[index], results):
                    store.write_cell(p.ids[i], tables)
                notes.update(batch_notes)
                pbar.update(len(members[index]))
        tables = collect(p, store)
        if exp.summarize:
            tables = exp.summarize(tables, p.base)
        written = store.write_tables(tables)
        saved = store.load_tables()
        if exp.plot:
            written += exp.plot(saved, store.root, p.base)
        if exp.claims:
            written += store.write_tables({"claims": claims_frame(exp, saved, p.base)})
        written.append(store.write_json("manifest.json", {
            "experiment": exp.name,
            "reference": exp.reference,
            "argv": list(argv if argv is not None else sys.argv),
            "quick": p.quick,
            "config": dataclasses.asdict(p.base),
            "grid": {k: list(v) for k, v in p.grid.items()},
            "cells": len(p.ids),
            "resumed_cells": len(p.ids) - len(todo),
            "executor": getattr(executor, "name", type(executor).__name__),
            "git": git,
            "versions": manifest.versions(),
            "machine": manifest.machine(),
            "wall_time_s": round(time.time() - started, 3),
            "notes": notes,
        }))
        store.remove_stale(written)
    finally:
        lock.release()
        if hasattr(executor, "close"):
            executor.close()
    return store.root


def claims_frame(exp: Experiment, tables: Tables, cfg: Any) -> pd.DataFrame:
    """The experiment's claims decided on saved tables (claims.csv)."""
    decided = evaluate(exp.name, exp.claim_specs, exp.claims(tables, cfg), cfg)
    return pd.DataFrame([d.row() for d in decided], columns=CLAIM_ROW_COLUMNS)


def collect(p: Plan, store: Store) -> Tables:
    """All cells' tables, concatenated per name, with the grid values added as columns."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for cell, cid in zip(p.cells, p.ids):
        for name, df in store.read_cell(cid).items():
            df = df.copy()
            for key, value in reversed(list(cell.items())):
                if key not in df.columns:
                    df.insert(0, key, value)
            parts.setdefault(name, []).append(df)
    return {name: pd.concat(dfs, ignore_index=True) for name, dfs in parts.items()}
