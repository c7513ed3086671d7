"""Executors run batches of cells and hand results back as each batch finishes.

``local`` runs batches in this process, one after another: the speed comes from each batch being
one tensor program over many runs, so a process pool would only fight it for the cores.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from ..errors import UserError

Job = tuple[int, Sequence[Any]]  # (batch index, configs)


class LocalExecutor:
    name = "local"

    def map(self, fn: Callable[[Sequence[Any]], Any], jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        for index, cfgs in jobs:
            yield index, fn(cfgs)


def make_executor(name: str, address: str | None = None):
    if name == "local":
        if address:
            raise UserError("--address only applies to --executor dask")
        return LocalExecutor()
    raise UserError(f"unknown executor {name!r}; choose local")
