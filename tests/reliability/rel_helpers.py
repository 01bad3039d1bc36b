"""Helpers of the reliability tests (imported by their conftest, the tests and dying_parent.py):
process and fd inspection, emulator arguments, the fault-injecting module's name."""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (HERE, os.path.dirname(HERE)):  # this folder, and tests/ for support.py (also in scripts)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support import live_children, open_fds  # noqa: E402, F401  (re-exported for the tests)

#: the module that wraps sprint_control.control and injects faults (see faulty_module.py)
FAULTY_MODULE = "faulty_module"
#: small synthetic corpus, CTC, quiet emulator: fast to start, real arithmetic
EMULATOR_ARGS = ["--*.corpus.synthetic=8", "--*.corpus.seed=3", "--*.corpus.max-frames=30",
                 "--*.training-criterion=ctc", "--*.log-level=warning"]
#: an error path must end within this many seconds (a correctness bound, generous for a loaded machine)
ERROR_BOUND = 2.0


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


def pythonpath() -> str:
    """The child must import this package and the faulty module from this tree."""
    root = os.path.dirname(os.path.dirname(HERE))
    parts = [root, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)
