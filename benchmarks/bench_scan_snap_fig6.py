"""Benchmark: the full Fig. 6 sweep (640 runs) batched, against the same runs one at a time.

Prints the wall time of ``dynamics run scan-snap-fig6`` (a fresh process, start-up and writing
included; goal: at most 15 s on the 2-core machine), the time of the same 640 runs trained one at a
time with this package's own simulator (R = 1 per call, same code path), their ratio, and throughput
in tokens per second (runs x steps x batch x T tokens processed by the model).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynamics import experiments
from dynamics.experiments.scan_snap_common import options
from dynamics.scan_snap import data
from dynamics.scan_snap.train import train
from dynamics.sweep import runner

GOAL_S = 15.0


def batched_cli() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dynamics.cli", "run", "scan-snap-fig6", "--out", str(Path(tmp) / "fig6")],
                       check=True, capture_output=True)
        return time.perf_counter() - t


def one_at_a_time(cfgs) -> float:
    """Each (cell, seed) run alone: same seed index, so the same data, init and result."""
    t = time.perf_counter()
    for cfg in cfgs:
        classes = data.build_classes(cfg.data)
        for seed in range(cfg.seeds):
            train(classes, [cfg.eta_y], [cfg.eta_z], [seed], options(cfg), record=[cfg.steps])
    return time.perf_counter() - t


def main() -> None:
    plan = runner.plan(experiments.get("scan-snap-fig6"))
    cfgs = plan.configs
    runs = sum(c.seeds for c in cfgs)
    o = options(cfgs[0])
    tokens = runs * o.steps * o.batch * o.T
    batched = batched_cli()
    print(f"dynamics run scan-snap-fig6: {runs} runs in {batched:.2f} s wall "
          f"(goal <= {GOAL_S:g} s: {'met' if batched <= GOAL_S else 'NOT met'})")
    single = one_at_a_time(cfgs)
    print(f"same {runs} runs one at a time (own simulator, R=1): {single:.2f} s")
    print(f"speed-up of batching: {single / batched:.1f}x")
    print(f"throughput: {tokens / batched / 1e6:.1f} M tokens/s batched vs {tokens / single / 1e6:.1f} M tokens/s one at a time")


if __name__ == "__main__":
    main()
