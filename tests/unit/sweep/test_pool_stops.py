"""A stopped run leaves no worker computing: SIGTERM/SIGHUP stop the pool, and a killed parent's
workers notice and exit (they once computed on, orphaned, for 53 minutes after a `kill`)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads children from /proc (Linux)")

# two workers, each in a two-minute batch; SIGTERM/SIGHUP handled exactly as `dynamics` does
SCRIPT = """
import sys, time
from dynamics.cli import Terminated, _terminate_like_interrupt
from dynamics.sweep.executors import LocalExecutor
try:
    with _terminate_like_interrupt():
        for _ in LocalExecutor(workers=2).map(time.sleep, [(0, 120), (1, 120)]):
            pass
except Terminated as exc:
    sys.exit(128 + exc.signum)
"""


def children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out |= {int(c) for c in task.read_text().split()}
    return out


def workers(pid: int) -> set[int]:
    """The pool's worker processes (not multiprocessing's resource tracker)."""
    found = set()
    for c in children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"multiprocessing.spawn" in cmd and b"resource_tracker" not in cmd:
            found.add(c)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def start() -> tuple[subprocess.Popen, set[int]]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(workers(proc.pid)) < 2:
        time.sleep(0.1)
    found = workers(proc.pid)
    assert len(found) == 2, f"expected 2 pool workers, found {found}"
    time.sleep(3)  # let them import torch and start their batches
    return proc, found


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_workers_at_once(sig):
    proc, pool = start()
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    assert code == 128 + sig, proc.stderr.read()
    assert not wait_gone(pool, 60), "a worker survived its parent's SIGTERM"


def test_workers_of_a_killed_parent_exit_on_their_own():
    proc, pool = start()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # generous: on a loaded machine a worker may still be importing torch; what matters is that it ends
    assert not wait_gone(pool, 60), "a worker computed on after its parent was killed"


def test_sigterm_to_a_dynamics_run_stops_its_pool_and_says_so(tmp_path):
    """End to end through the command line: two exact-rank families (minutes each) in a two-worker pool."""
    cmd = [sys.executable, "-m", "dynamics.cli", "sweep", "depth-width-rank", "--grid", "positions=2,4",
           "--set", "widths=14", "--set", "depths=2", "--set", "equiv_max_width=1", "--workers", "2",
           "--out", str(tmp_path / "rank")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(workers(proc.pid)) < 2:
        time.sleep(0.1)
    pool = workers(proc.pid)
    assert len(pool) == 2, proc.stderr.read() if proc.poll() is not None else pool
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "terminated (SIGTERM)" in proc.stderr.read()
    assert not wait_gone(pool, 60), "a worker survived its parent's SIGTERM"
