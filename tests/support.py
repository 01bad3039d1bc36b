"""Helpers shared by the test folders: the twin parametrisation and a leak check.

``tests/conftest.py`` puts this folder on ``sys.path``, so every test module and conftest can
``from support import ...``.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import select
import signal
import threading
import time
import warnings
from contextlib import contextmanager

import pytest

from sprint_control import _env

#: the optional extra (pyproject.toml) that brings each optional top-level module
EXTRA_OF = {"torch": "torch", "ray": "ray", "returnn": "returnn", "tensorflow": "tf", "matplotlib": "plot",
            "i6_models": "i6", "triton": "torch", "asv": "test", "hypothesis": "test"}


def extra_reason(module: str) -> str:
    """The skip reason for a missing optional module: which extra to install. Call
    ``pytest.importorskip(module, reason=extra_reason(module))`` in the test file itself, so the skip
    line names that file (CI reruns the files that skipped)."""
    extra = EXTRA_OF[module.split(".")[0]]
    return f'needs the {extra} extra: pip install "sprint_control[{extra}]"'


def twins(compiled: str, twin: str) -> list:
    """pytest params for a compiled module and its twin. The compiled one must be built unless
    SPRINT_CONTROL_PURE_PYTHON is set: a missing build fails loudly instead of testing one side."""
    mods = [pytest.param(importlib.import_module(f"sprint_control.{twin}"), id="python")]
    if not _env.pure_python_forced():
        mods.append(pytest.param(importlib.import_module(f"sprint_control.{compiled}"), id="cython"))
    return mods


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def close_fds(fds) -> None:
    """Closes every fd in ``fds`` that is still open (the code under test may have closed some)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def open_fds() -> set:
    """This process's open fds (the one used to list them is gone by the time it is checked)."""
    return {int(x) for x in os.listdir("/proc/self/fd") if is_open(int(x))}


def fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


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


def other_threads() -> set:
    return {t for t in threading.enumerate() if t.is_alive() and t is not threading.main_thread()}


@contextmanager
def leak_check(threads: bool = True, grace: float = 3.0):
    """Fails when the block leaves fds open, children running or unreaped, or (``threads``) threads
    behind. Output-draining threads end at their child's EOF, so they get ``grace`` seconds."""
    fds, kids, before = open_fds(), live_children(), other_threads()
    yield
    gc.collect()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not (other_threads() - before) and not (open_fds() - fds):
            break
        time.sleep(0.02)
    leaked = open_fds() - fds
    assert not leaked, f"fds leaked: {sorted(leaked)} -> {[fd_target(fd) for fd in sorted(leaked)]}"
    left = live_children() - kids
    assert not left, f"child processes still running or unreaped (zombies): {sorted(left)}"
    if threads:
        extra = other_threads() - before
        assert not extra, f"threads left behind: {sorted(t.name for t in extra)}"


#: a refusal is immediate; a copy still running after this is blocked (on a lock held at the fork)
COPY_BOUND = 10.0

def in_copy(fn):
    """Runs ``fn()`` in a forked copy of this process; returns what it returned (or the text of
    what it raised), or "BLOCKED" when the copy did not end within ``COPY_BOUND`` (it is killed)."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a process with threads
        pid = os.fork()
    if pid == 0:  # the copy: always ends here, with os._exit
        code = 0
        try:
            os.close(r)
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                result = f"raised {type(exc).__name__}: {exc}"
            os.write(w, pickle.dumps(result))
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + COPY_BOUND
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "BLOCKED"
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the copy ended with status {status}"
    return pickle.loads(data)
