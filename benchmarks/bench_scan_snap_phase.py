"""Speed of the scan-snap-phase grid: 64 cells x 3 seeds as one batched program, against running the
cells one at a time (the baseline, measured in the same run on a subset of cells and scaled to 64).

The grid is the experiment's default for one data model (K = 2, M = 33, 8 x 8 learning rates,
980 SGD steps = 3.5 t_0 of the slowest cell, 72 records).  Target: at most 60 s for the batched grid on 2 cores.  Both paths go
through the experiment's own ``run_batch`` (training, transition step, entropy), so they do the same
work per cell.  Timings are reported for 1 torch thread (the experiment's default ``threads``) and for 2;
on a machine shared with other jobs they are pessimistic.

Run: ``.venv/bin/python benchmarks/bench_scan_snap_phase.py [--steps N] [--baseline-cells N]``.
"""

from __future__ import annotations

import argparse
import time

from dynamics.experiment import Context
from dynamics.experiments import scan_snap_phase as phase
from dynamics.sweep import runner


def quiet_bar(*args, **kwargs):
    class Bar:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return Bar()


def cells(steps: int, threads: int):
    plan = runner.plan(phase.EXPERIMENT, overrides={"steps": steps, "threads": threads}, grid={"num_last": (1,)})
    return plan.configs


def timed(cfgs) -> float:
    start = time.perf_counter()
    phase.run_batch(cfgs, Context(bar=quiet_bar))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=0, help="0: the experiment's automatic horizon")
    ap.add_argument("--baseline-cells", type=int, default=4, help="cells run one at a time for the baseline")
    args = ap.parse_args()
    cfgs = cells(args.steps, 1)
    n, seeds = len(cfgs), cfgs[0].seeds
    print(f"scan-snap-phase grid: {n} cells x {seeds} seeds = {n * seeds} runs, {cfgs[0].n_steps} steps, "
          f"K = 2, M = 33, batch {cfgs[0].batch}, T = {cfgs[0].T}")
    for threads in (1, 2):  # the experiment's `threads` key (default 1) sets torch's intra-op threads
        cfgs = cells(args.steps, threads)
        batched = timed(cfgs)
        k = args.baseline_cells
        one = sum(timed([c]) for c in cfgs[:: max(1, n // k)][:k]) / k
        print(f"  torch threads = {threads}: batched grid {batched:6.1f} s ({'within' if batched <= 60 else 'OVER'} "
              f"the 60 s target); one cell at a time {one:5.2f} s/cell -> {one * n:6.1f} s for {n} cells "
              f"(measured on {k}); speed-up x{one * n / batched:.1f}")


if __name__ == "__main__":
    main()
