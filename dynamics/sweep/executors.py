"""Executors run batches of cells and hand each result back as soon as its batch finishes.

* ``local`` (default): batches run in a pool of worker processes over the machine's cores, each
  batch itself one tensor program over many runs.  By default the pool is used only when there are
  at least two batches per core, since a batch already keeps every core busy; an experiment may set
  its own default (``Experiment.local_workers``: Fig. 6's four uneven batches run in-process, 12.9 s
  against 15.1 s with a pool on the 2-core machine).  ``--workers N`` forces N processes;
  ``--workers 1`` runs everything in this process.
* ``dask``: batches are submitted to a Dask distributed scheduler (``--address tcp://HOST:PORT``);
  the workers need this package installed (``pip install -e .`` on each machine).

A cell's result depends only on its config and seeds, never on which batch, process or machine ran
it, so every executor gives the same table (tested).  Workers run torch with the thread count the
caller asks for (``--threads``, default 1 per worker process), so reductions happen in the same
order everywhere and parallel workers do not oversubscribe the cores.

A Dask cluster runs whatever its clients submit: bind the scheduler to a private interface and use
TLS (``--address tls://HOST:PORT --dask-tls CA CERT KEY``; see the README's "Dask" section).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError

Job = tuple[int, Sequence[Any]]  # (batch index, configs)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _init_pool_worker(threads: int, parent: int) -> None:
    """A pool worker's set-up: its torch threads, and a watchdog that ends it when its parent dies.

    A parent killed outright (SIGKILL, an OOM kill) cannot stop its pool, and a worker in the middle of
    an hour-long batch would otherwise compute on, orphaned, until that batch ends."""
    # the watchdog first: importing torch can take many seconds on a loaded machine
    threading.Thread(target=_watch_parent, args=(parent,), name="dynamics-parent-watch", daemon=True).start()
    _init_worker(threads)


def _watch_parent(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)  # orphaned: nothing to hand a result to


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers now, instead of waiting for their batches."""
    stop = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if stop is not None:
        stop()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        self.workers = workers  # None: automatic
        # one torch thread per worker process: N processes x default threads oversubscribe the cores,
        # and under contention from another job torch's spinning threads slow a sweep by 10x or more
        self.threads = threads or 1
        self.explicit_threads = threads is not None  # in-process runs keep torch's default unless asked

    def processes(self, n_jobs: int) -> int:
        if self.workers is None:
            return cores() if n_jobs >= 2 * cores() else 1
        return min(self.workers, n_jobs)

    def map(self, fn: Callable[[Sequence[Any]], Any], jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        n = self.processes(len(jobs))
        if n <= 1:
            if self.explicit_threads:
                _init_worker(self.threads)
            for index, cfgs in jobs:
                yield index, fn(cfgs)
            return
        # spawn, not fork: torch's thread pools do not survive a fork
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_pool_worker,
                                      initargs=(self.threads, os.getpid()))
        finished = False
        try:
            futures = {pool.submit(fn, cfgs): index for index, cfgs in jobs}
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result()
            finished = True
        finally:
            # an interrupt (Ctrl-C, or SIGTERM/SIGHUP raised as one by the CLI), a failed batch or a
            # consumer that stops early: the other workers must not run on after this process is gone
            if not finished:
                _stop_workers(pool)
            pool.shutdown(wait=True)


_ADDRESS = re.compile(r"(?:(?P<scheme>tcp|tls)://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")


def check_address(address: str, tls: bool) -> str:
    """``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (HOST a name, IPv4 or [IPv6]); a UserError otherwise."""
    m = _ADDRESS.fullmatch(address.strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise UserError(f"--address {address!r}: expected tcp://HOST:PORT or tls://HOST:PORT")
    if tls and m["scheme"] != "tls":
        raise UserError(f"--dask-tls needs a tls:// address, got {address!r}")
    if m["scheme"] == "tls" and not tls:
        raise UserError(f"--address {address!r} is TLS: pass --dask-tls CA CERT KEY")
    return address.strip()


def security(tls: Sequence[Path]):
    """distributed's Security for a TLS cluster: CA, this client's certificate and key, encryption required."""
    from distributed.security import Security

    ca, cert, key = (Path(p) for p in tls)
    for what, p in (("CA certificate", ca), ("certificate", cert), ("key", key)):
        if not p.is_file():
            raise UserError(f"--dask-tls: {what} {p} does not exist")
    return Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key), require_encryption=True)


class DaskExecutor:
    name = "dask"

    def __init__(self, address: str, threads: int = 1, tls: Sequence[Path] | None = None):
        try:
            from distributed import Client
        except ImportError:
            raise UserError("--executor dask needs the 'distributed' package: pip install 'dynamics[dask]'") from None
        address = check_address(address, bool(tls))
        sec = security(tls) if tls else None
        try:
            self.client = Client(address, timeout="10s", security=sec)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach a Dask scheduler at {address}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise UserError(f"--address {address!r}: {exc}") from None
        self.address = address
        self.threads = threads

    def map(self, fn, jobs):
        from distributed import as_completed

        futures = {}
        for index, cfgs in jobs:
            fut = self.client.submit(_with_threads, fn, cfgs, self.threads, pure=False)
            futures[fut] = index
        for fut in as_completed(futures):
            yield futures[fut], fut.result()

    def close(self) -> None:
        self.client.close()


def _with_threads(fn, cfgs, threads: int):
    _init_worker(threads)
    return fn(cfgs)


def make_executor(name: str, address: str | None = None, workers: int | None = None, threads: int | None = None,
                  tls: Sequence[Path] | None = None):
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if name == "local":
        if address:
            raise UserError("--address only applies to --executor dask")
        if tls:
            raise UserError("--dask-tls only applies to --executor dask")
        return LocalExecutor(workers, threads)
    if name == "dask":
        if not address:
            raise UserError("--executor dask needs --address tcp://HOST:PORT (a running Dask scheduler)")
        return DaskExecutor(address, threads=threads or workers or 1, tls=tls)
    raise UserError(f"unknown executor {name!r}; choose local or dask")
