"""The parent guard: a Sprint process whose trainer died must not live on."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .._env import PARENT_PID, PDEATHSIG
from .log import log as _log

__all__ = ["guard_parent", "PARENT_CHECK_STEP", "PARENT_GONE_GRACE"]

#: How often the watchdog looks whether the parent process still exists (seconds).
PARENT_CHECK_STEP = 0.2
#: How long a process whose parent is gone may take to finish by itself before the watchdog ends it.
PARENT_GONE_GRACE = 0.8

class _GuardState:
    started = False
    pdeathsig = False


_guard_state = _GuardState()


def _process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a dead parent its own parent did not reap yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _set_parent_death_signal() -> bool:
    """Linux: asks the kernel to SIGKILL this process when the thread that spawned it ends. This
    also works while RASR holds the GIL inside a long C++ call, where no Python thread can run."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        _log(f"cannot set the parent-death signal ({exc!r}); the watchdog thread alone watches the parent")
        return False
    return True


def _parent_gone(parent: int, grace: float) -> None:
    """The parent process is gone: give RASR ``grace`` seconds to finish by itself (EOF on the pipe
    ends the segment list), then end the process."""
    try:
        # stdout/stderr usually went to the dead parent: writing there fails (EPIPE), which must not
        # stop us
        _log(f"the parent process (pid {parent}) is gone; ending this process in {grace:.1f} s unless it ends"
             " itself", error=True)
        time.sleep(grace)
        _log("ending this process: its parent is gone", error=True)
    except BaseException:
        pass
    finally:
        os._exit(1)


def _watch_parent(parent: int, ppid: int, step: float, grace: float) -> None:
    while True:
        # getppid changes when the direct parent exits (the kernel hands us to a reaper); when a
        # wrapper sits between the trainer and RASR, the trainer itself is looked at.
        if os.getppid() != ppid or (parent != ppid and not _process_alive(parent)):
            _parent_gone(parent, grace)
            return
        time.sleep(step)


def guard_parent(step: float = PARENT_CHECK_STEP, grace: float = PARENT_GONE_GRACE) -> bool:
    """Makes this (Sprint) process end when the parent process that named itself in
    ``SPRINT_CONTROL_PARENT_PID`` dies, even while RASR is stuck and never reads the pipe's EOF.

    Two guards, both off the hot path: a daemon thread that looks every ``step`` seconds whether the
    parent still exists (it needs the GIL for a moment, so it cannot act while RASR holds the GIL in a
    C++ call), and on Linux, when the parent allows it (``SPRINT_CONTROL_PDEATHSIG=1``: it spawned us
    from a thread that lives as long as it does), ``PR_SET_PDEATHSIG`` with SIGKILL. Runs once per
    process; returns whether a guard was started. Without the variable (e.g. RETURNN's parent) only
    the EOF on the pipe ends the process.
    """
    if _guard_state.started:
        return True
    text = os.environ.get(PARENT_PID, "")
    try:
        parent = int(text)
    except ValueError:
        if text:
            _log(f"{PARENT_PID}={text!r} is not a pid; the parent is not watched", error=True)
        return False
    _guard_state.started = True
    ppid = os.getppid()
    if ppid == parent and os.environ.get(PDEATHSIG) == "1":
        _guard_state.pdeathsig = _set_parent_death_signal()
        ppid = os.getppid()  # the parent may have died before the signal was set: look again
    if ppid != parent and (_guard_state.pdeathsig or not _process_alive(parent)):
        _parent_gone(parent, 0.0)  # gone before we looked (with the signal set, ppid moved: it died)
    thread = threading.Thread(target=_watch_parent, args=(parent, ppid, step, grace),
                              name="sprint_control.parent_watchdog", daemon=True)
    thread.start()
    signal_state = "on" if _guard_state.pdeathsig else "off"
    _log(f"watching the parent process (pid {parent}); parent-death signal: {signal_state}", verbose=True)
    return True

