"""Progress bars with elapsed time and ETA, silent when stderr is not a terminal (CI, pipes)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(total: int | None, desc: str, unit: str = "it"):
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), file=sys.stderr)


def silent(total: int | None = None, desc: str = "", unit: str = "it"):
    """A bar that shows nothing (inside worker processes, whose output nobody watches)."""
    return tqdm(total=total, disable=True)
