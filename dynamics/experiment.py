"""The experiment protocol: what ``experiments/<name>.py`` declares and the sweep engine runs.

An experiment is data plus four functions::

    config      frozen dataclass of every knob, validated in __post_init__; a library spec it uses is a
                field of the spec's type (``data: SyntheticSpec``), never restated field by field:
                its keys are ``data.num_last`` (or the bare ``num_last`` where unique), see dynamics.config
    grid        default sweep over config fields (``dynamics run``); ``--grid`` replaces entries
    run_batch   (cells, ctx) -> one dict of tidy DataFrames per cell; cells that share
                ``batch_key`` arrive together so a simulator can advance them as one tensor program
    summarize   all cells' rows (grid values added as columns) -> the tables to save ("table" first)
    plot        (saved tables, config) -> {name: matplotlib Figure}; the store writes <name>.png
    claims      (saved tables, config) -> {claim id: Estimate | (Estimate, note) | None}, decided
                against ``claim_specs``, the experiment's pre-registered claims (dynamics.claims.ClaimSpec)
    preflight   config -> None, raising UserError for what a run would trip over later (a missing
                data directory); runs for every cell before anything is written
    memory      a batch's configs -> rough peak bytes, so a run that cannot fit is refused up front
    cost        config -> a cell's relative work (any unit), so the progress ETA weighs cells by it
                instead of counting them; None: every cell the same

Nothing in an experiment writes files itself: the store does, atomically, so ``--resume`` and the
executors (in-process, process pool, Dask) see the same behaviour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

Tables = dict[str, pd.DataFrame]


@dataclasses.dataclass
class Context:
    """What a running batch may use besides its configs.

    ``bar(total, desc)`` returns a progress bar (silent when stderr is not a terminal);
    ``notes`` collects facts for the manifest (data hashes, whether random numbers are shared).
    """

    bar: Callable[..., Any]
    notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line for `dynamics list`
    reference: str  # the paper figure or theorem it reproduces
    config: type
    run_batch: Callable[[Sequence[Any], Context], list[Tables]]
    grid: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # config overrides for --quick
    quick_grid: Mapping[str, tuple] = dataclasses.field(default_factory=dict)  # grid overrides for --quick
    batch_key: Callable[[Any], Hashable] | None = None
    summarize: Callable[[Tables, Any], Tables] | None = None
    plot: Callable[[Tables, Any], dict] | None = None
    claims: Callable[[Tables, Any], Any] | None = None
    claim_specs: tuple = ()  # pre-registered ClaimSpec definitions, in one reviewable place per experiment
    preflight: Callable[[Any], None] | None = None
    memory: Callable[[Sequence[Any]], float] | None = None
    cost: Callable[[Any], float] | None = None
    # default --workers of the local executor (None: automatic); 1 keeps uneven batches in-process,
    # where each batch uses every core, instead of a pool that waits on its largest batch
    local_workers: int | None = None
