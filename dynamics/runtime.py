"""Run-time plumbing shared by every simulator: seeds, dtypes, devices, threads, divergence, schedules.

Seeds.  Every random stream is derived from ``numpy.random.SeedSequence`` with an entropy list
``[root seed, seed index, stream tag]`` (never by adding offsets to an integer seed, which makes streams
of neighbouring seeds collide): a run's data and init depend only on (root, seed index, purpose), not on
the batch it ran in or the process that ran it.

Threads.  :func:`threads` sets torch's intra-op threads for a block and restores them, so a library
call leaves the process as it found it.

Divergence.  :func:`freeze_diverged` stops runs whose loss or parameters turned non-finite; they are
recorded with their step and the other runs of the batch go on.

Learning-rate schedules of the trained transformers live with their optimiser in
:class:`dynamics.engine.optim.Schedule`; per-replica seeds of the engine are spawned in
:func:`dynamics.engine.params.replica_seeds`.
"""

from __future__ import annotations

import contextlib
import hashlib
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


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (data-file provenance, result-file integrity)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
