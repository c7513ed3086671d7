"""Grid expansion: ``{"a": (1, 2), "b": (3,)}`` -> cells in a fixed, row-major order."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from typing import Any

from ..config import coerce, flat, leaves, parse_assignments, short_name
from ..errors import UserError


def parse_grid(cls: type, items: list[str]) -> dict[str, tuple]:
    """``["eta_z=0.5,1", "seed=0"]`` -> ``{"eta_z": (0.5, 1.0), "seed": (0,)}`` (typed by ``cls``).
    Keys may be nested (``data.num_last``) and are stored under their short names (:func:`canonical`)."""
    return canonical(cls, {key: tuple(coerce(cls, key, part) for part in text.split(",") if part.strip())
                           for key, text in parse_assignments(items, "--grid").items()}, "--grid ")


def canonical(cls: type, mapping: Mapping[str, Any], what: str = "") -> dict[str, Any]:
    """``mapping`` with each key under its short name (:func:`dynamics.config.short_name`), the name
    grids, cells and table columns use, so ``data.num_last`` and ``num_last`` are one grid entry.  A
    key given under two spellings, or a grid entry without values, is a UserError."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = short_name(cls, key)
        if name in out:
            raise UserError(f"{what}{key}: the key {name} is given twice")
        if what and not value:
            raise UserError(f"{what}{key}= has no values")
        out[name] = value
    return out


def expand(grid: Mapping[str, tuple]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


# How a run executes, not what it computes: left out of a cell's identity, so ``--resume`` after
# changing the thread count or the device reuses every finished cell.
EXECUTION_KEYS = frozenset({"device", "threads", "workers"})


def scientific(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config (nested or flat) without its execution-only keys (:data:`EXECUTION_KEYS`), at any depth."""
    return {k: scientific(v) if isinstance(v, Mapping) else v for k, v in config.items()
            if k.rsplit(".", 1)[-1] not in EXECUTION_KEYS}


def cell_id(experiment: str, config: Mapping[str, Any]) -> str:
    """A stable name for a cell: the hash of its scientific config (a changed default is a new cell;
    a changed thread count or device is not).  The config is hashed flat, under short names
    (:func:`dynamics.config.flat`), so moving fields into a spec keeps every cell's name."""
    blob = json.dumps({"experiment": experiment, "config": flat(scientific(config))}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Root seeds are replicates: cells that differ only in ``seed`` are pooled into one row, their runs
# counted as further seeds.  Every other config key that varies over the grid gets its own rows.
POOLED_KEYS = ("seed",)


def group_keys(df, cls: type, keys: list[str]) -> list[str]:
    """``keys`` plus every other config field of ``cls`` that appears as a column of ``df`` (the runner
    adds each grid key as a column), so a table never merges cells of a grid the experiment did not
    foresee (``--grid seeds=1,2``, ``--grid steps=10,100``)."""
    names = {n for k in leaves(cls) for n in (k.name, short_name(cls, k.name))}
    extra = [c for c in df.columns if c in names and c not in keys and c not in POOLED_KEYS]
    return list(keys) + extra
