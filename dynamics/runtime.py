"""Run-time plumbing shared by every simulator: seeds, dtypes, devices, threads, divergence, schedules.

Seeds.  Every random stream is derived from ``numpy.random.SeedSequence`` with an entropy list
``[root seed, seed index, stream tag]`` (never by adding offsets to an integer seed, which makes streams
of neighbouring seeds collide): a run's data and init depend only on (root, seed index, purpose), not on
the batch it ran in or the process that ran it.

Threads.  :func:`threads` sets torch's intra-op threads for a block and restores them, so a library
call leaves the process as it found it.

Divergence.  :func:`freeze_diverged` stops runs whose loss or parameters turned non-finite; they are
recorded with their step and the other runs of the batch go on.  :class:`RunLog` is the end of one
step of a batched trainer: the optimiser step, the divergence check, the per-run loss and the progress bar.

Record steps.  :func:`log_record_steps` and :func:`even_record_steps` are the steps at which a trajectory
is kept (log-spaced for transitions whose time scales over decades, evenly spaced otherwise);
:func:`record_within` is how a trainer reads such a list.

Learning-rate schedules of the trained transformers live with their optimiser in
:class:`dynamics.engine.optim.Schedule`; per-replica seeds of the engine are spawned in
:func:`dynamics.engine.params.replica_seeds`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DTYPE_NAMES = ("float32", "float64")


def torch_dtype(name: str):
    """'float32' | 'float64' | 'bfloat16' -> torch dtype."""
    import torch

    table = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(table)}")
    return table[name]


def _tag(stream: str | int) -> int:
    if isinstance(stream, int):
        return stream
    return int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")


def seed_sequence(root: int, seed: int, stream: str | int) -> np.random.SeedSequence:
    """The SeedSequence of one (root seed, seed index, purpose)."""
    return np.random.SeedSequence([int(root), int(seed), _tag(stream)])


def numpy_rng(root: int, seed: int, stream: str | int) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(root, seed, stream))


def torch_generator(root: int, seed: int, stream: str | int, device: str = "cpu"):
    """A torch generator for one (root seed, seed index, purpose): independent of batch layout."""
    import torch

    state = seed_sequence(root, seed, stream).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state >> np.uint64(1)))


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def freeze_diverged(loss, params: list, lrs: list, opt, alive, diverged: np.ndarray, step: int) -> None:
    """Mark runs whose loss or parameters turned non-finite at ``step`` as diverged (``diverged[r] =
    step + 1``, ``alive`` updated in place) and freeze them: zero parameters, zero learning rates and
    no optimiser state, so NaN cannot reach the other runs and the sweep goes on.

    loss: (R,); params and lrs: tensors with the run axis first; ``opt.forget(mask)`` drops state.
    """
    import torch

    with torch.no_grad():
        # a sum is non-finite when any element is, and needs no (R, ...) boolean temporary
        ok = torch.isfinite(loss + sum(p.sum(tuple(range(1, p.dim()))) for p in params))
        newly = alive & ~ok
        if newly.any():
            diverged[newly.cpu().numpy()] = step + 1
            alive &= ok
            for t in (*params, *lrs):
                t[~alive] = 0.0
            opt.forget(~alive)


class RunLog:
    """Loss and divergence bookkeeping of R runs trained together for ``steps`` steps.

    ``losses`` (steps, R): the loss of each run at each step, NaN once it diverged; ``diverged`` (R,):
    the first step with a non-finite value + 1, or -1 (:func:`freeze_diverged`); ``alive`` (R,) bool on
    the runs' device.  ``bar`` is a progress-bar factory (``bar(total, label, unit=...)``) or None.
    """

    def __init__(self, R: int, steps: int, device, bar=None, label: str = "train"):
        import torch

        self.losses = np.full((steps, R), np.nan)
        self.diverged = np.full(R, -1)
        self.alive = torch.ones(R, dtype=torch.bool, device=device)
        self.progress = bar(steps, label, unit="step") if bar else None

    def step(self, step: int, loss, params: list, grads: list, lrs: list, opt) -> None:
        """Apply ``opt.step(params, grads)``, freeze the runs that diverged, log ``loss`` (R,)."""
        opt.step(params, grads)
        freeze_diverged(loss, params, lrs, opt, self.alive, self.diverged, step)
        self.losses[step] = np.where(self.alive.cpu().numpy(), loss.double().cpu().numpy(), np.nan)
        if self.progress is not None:
            self.progress.update(1)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def record_within(record, steps: int) -> list[int]:
    """The distinct steps of ``record`` inside [0, steps], sorted: where a trainer keeps its state."""
    return sorted({int(s) for s in record if 0 <= s <= steps})


def log_record_steps(steps: int, records: int) -> np.ndarray:
    """Step 0 and ``records`` log-spaced steps between 1 and ``steps`` (rounded, duplicates merged)."""
    return np.unique(np.concatenate([[0], np.round(np.logspace(0, math.log10(steps), records))])).astype(int)


def even_record_steps(steps: int, records: int) -> np.ndarray:
    """``records`` evenly spaced steps from 0 to ``steps`` (rounded, duplicates merged)."""
    return np.unique(np.linspace(0, steps, records).round().astype(int))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (data-file provenance, result-file integrity)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
