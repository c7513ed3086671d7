"""Benchmark: one CPU-bound sweep under the local executor and under a 2-worker Dask LocalCluster.

The sweep is 8 independent batches (root seeds 0..7 of a Syn-Medium cell, 10 seeds each, 300
steps), each a few seconds of CPU.  Both executors run it in fresh processes on this machine; the
ratio shows what the distributed engine costs (scheduling, serialisation, worker start-up) when it
has no more cores than the local pool.  The tables must be identical.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["sweep", "scan-snap-fig6", "--grid", "seed=0,1,2,3,4,5,6,7", "--set", "num_last=3", "--set", "eta_z=1",
         "--set", "ratio=5", "--seeds", "10", "--set", "steps=300"]


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynamics.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        local_in = timed([*SWEEP, "--workers", "1", "--out", f"{tmp}/in-process"])
        local = timed([*SWEEP, "--out", f"{tmp}/local"])
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            dask = timed([*SWEEP, "--executor", "dask", "--address", cluster.scheduler_address, "--out", f"{tmp}/dask"])
        same = all((Path(tmp) / d / "table.csv").read_bytes() == (Path(tmp) / "local" / "table.csv").read_bytes()
                    for d in ("in-process", "dask"))
    print(f"sweep of 8 batches: local in-process {local_in:.2f} s, local process pool {local:.2f} s, "
          f"Dask LocalCluster (2 workers) {dask:.2f} s")
    print(f"ratio dask / local pool: {dask / local:.2f}; dask / in-process: {dask / local_in:.2f}; "
          f"identical tables: {same}")


if __name__ == "__main__":
    main()
