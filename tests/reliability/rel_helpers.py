"""Helpers of the reliability tests (imported by their conftest, the tests and dying_parent.py):
process and fd inspection, emulator arguments, the fault-injecting module's name."""

from __future__ import annotations

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: the module that wraps sprint_control.control and injects faults (see faulty_module.py)
FAULTY_MODULE = "faulty_module"
#: small synthetic corpus, CTC, quiet emulator: fast to start, real arithmetic
EMULATOR_ARGS = ["--*.corpus.synthetic=8", "--*.corpus.seed=3", "--*.corpus.max-frames=30",
                 "--*.training-criterion=ctc", "--*.log-level=warning"]
#: an error path must end within this many seconds (a correctness bound, generous for a loaded machine)
ERROR_BOUND = 2.0


def open_fds() -> set:
    return {int(x) for x in os.listdir("/proc/self/fd") if _is_open(int(x))}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def live_children() -> set:
    """Pids whose parent is this process (running or zombie)."""
    me = str(os.getpid())
    kids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            kids.add(int(pid))
    return kids


def process_state(pid: int) -> str:
    """The state letter of a process ("" when it no longer exists)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def wait_gone(pid: int, timeout: float) -> float:
    """Waits until ``pid`` has exited (gone or a zombie); returns the seconds it took, inf if it did not."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process_state(pid) in ("", "Z", "X"):
            return time.monotonic() - start
        time.sleep(0.01)
    return float("inf")


def sprint_threads() -> set:
    return {t for t in threading.enumerate() if t.is_alive() and t is not threading.main_thread()}

def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def pythonpath() -> str:
    """The child must import this package and the faulty module from this tree."""
    root = os.path.dirname(os.path.dirname(HERE))
    parts = [root, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)
