"""Progress: bars with elapsed time and ETA on a terminal, a heartbeat line everywhere else.

A bar is silent when stderr is not a terminal (CI, pipes, log files); there a :class:`Heartbeat`
prints one line every 30 s instead (``DYNAMICS_HEARTBEAT_S`` changes the interval), so a run logged
to a file still says where it is::

    dynamics: scan-snap-fig6: cell 12 of 64, 0:01:30 elapsed, ETA 0:06:00
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta

from tqdm.auto import tqdm

HEARTBEAT_S = 30.0


def bar(total: int | None, desc: str, unit: str = "it"):
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), file=sys.stderr)


def silent(total: int | None = None, desc: str = "", unit: str = "it"):
    """A bar that shows nothing (inside worker processes, whose output nobody watches)."""
    return tqdm(total=total, disable=True)


def heartbeat_interval(interval: float | None = None) -> float:
    """Seconds between progress lines: ``interval``, else ``DYNAMICS_HEARTBEAT_S``, else 30."""
    try:
        return float(interval if interval is not None else os.environ.get("DYNAMICS_HEARTBEAT_S") or HEARTBEAT_S)
    except ValueError:
        return HEARTBEAT_S


def say(desc: str, message: str, stream=None) -> None:
    """One progress line, ``dynamics: desc: message``, for steps inside a long cell that a bar or the
    heartbeat cannot show (the heartbeat thread cannot print while an extension holds the GIL for
    minutes, as FLINT's rank does)."""
    try:
        print(f"dynamics: {desc}: {message}", file=stream or sys.stderr, flush=True)
    except (OSError, ValueError):  # the stream went away; the run goes on
        pass


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


class Heartbeat:
    """A background thread printing ``desc: cell i of n, elapsed, ETA`` every ``interval`` seconds to
    ``stream`` when it is not a terminal.

    ETA extrapolates the work finished in this run: elapsed x (work left) / (work done since the start).
    Without ``work`` (the total) every cell counts 1; with it, :meth:`update` takes each finished cell's
    work, so a run whose cells differ a hundredfold (a few init-only cells finish in seconds, a training
    cell takes most of an hour) does not extrapolate from its cheapest cells.  ``work_done`` is the work
    of the cells finished before this run (resumed)."""

    def __init__(self, desc: str, total: int, done: int = 0, interval: float | None = None, stream=None,
                 work: float | None = None, work_done: float = 0.0):
        self.desc, self.total, self.start_done, self.done = desc, total, done, done
        self.work_total = float(total if work is None else work)
        self.work_done = self.start_work = float(done if work is None else work_done)
        self.interval = heartbeat_interval(interval)
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        new = self.work_done - self.start_work
        if new > 0 and self.done < self.total:
            eta = _hms(elapsed / new * max(self.work_total - self.work_done, 0.0))
        else:
            eta = "0:00:00" if self.done >= self.total else "unknown"
        return f"dynamics: {self.desc}: cell {self.done} of {self.total}, {_hms(elapsed)} elapsed, ETA {eta}"

    def update(self, n: int = 1, work: float | None = None) -> None:
        """``n`` more cells finished, together ``work`` (default: n)."""
        self.done += n
        self.work_done += n if work is None else work

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                print(self.line(), file=self.stream, flush=True)
            except (OSError, ValueError):  # the stream went away; the run goes on
                return

    def __enter__(self) -> Heartbeat:
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="dynamics-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
