"""dynamics.runtime: record steps and the per-step bookkeeping of batched trainers."""

from __future__ import annotations

import math

import numpy as np
import torch

from dynamics.runtime import RunLog, even_record_steps, log_record_steps, record_within
from dynamics.scan_snap import optim


def test_record_steps():
    assert log_record_steps(1000, 4).tolist() == [0, 1, 10, 100, 1000]
    assert log_record_steps(10, 20).tolist() == list(range(11))  # rounding merges duplicates
    assert even_record_steps(100, 5).tolist() == [0, 25, 50, 75, 100]
    assert record_within([5, 3.0, 3, -1, 12, 0], 10) == [0, 3, 5]


def test_run_log_freezes_a_diverged_run_and_logs_the_others():
    lr = torch.tensor([0.1, 0.1], dtype=torch.float64)
    opt = optim.SGD([lr], momentum=0.9)
    p = torch.ones(2, 1, 3, dtype=torch.float64)
    ticks = []

    class Bar:
        def update(self, n):
            ticks.append(n)

        def close(self):
            ticks.append("closed")

    log = RunLog(2, 3, "cpu", lambda total, label, unit: Bar())
    for step in range(3):
        loss = torch.tensor([1.0, math.inf if step == 1 else 2.0], dtype=torch.float64)
        log.step(step, loss, [p], [torch.ones_like(p)], [lr], opt)
    log.close()
    assert log.diverged.tolist() == [-1, 2]
    assert log.alive.tolist() == [True, False]
    assert np.array_equal(log.losses, [[1.0, 2.0], [1.0, np.nan], [1.0, np.nan]], equal_nan=True)
    assert (p[1] == 0).all() and lr[1] == 0  # frozen: zero parameters, zero learning rate
    assert ticks == [1, 1, 1, "closed"]
