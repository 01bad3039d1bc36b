"""Fixtures of the parent-side tests: the fake Sprint child and a leak check for fds and children."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

FAKE_CHILD = [sys.executable, os.path.join(HERE, "fake_child.py")]


def open_fds() -> set:
    return {int(x) for x in os.listdir("/proc/self/fd")}


@pytest.fixture
def fake_exec():
    """Command list that starts the fake Sprint child."""
    return list(FAKE_CHILD)


@pytest.fixture
def no_leaks():
    """Fails the test when it leaves fds open or child processes unreaped."""
    import gc
    import threading

    before = open_fds()
    kids_before = set(_live_children())
    yield
    gc.collect()
    # the output drains close their fd at the child's EOF; give them a moment
    for t in threading.enumerate():
        if t.name.endswith(" output"):
            t.join(2.0)
    leaked = open_fds() - before
    # fds listed at the moment of listing (the directory fd itself) are gone by now
    leaked = {fd for fd in leaked if _is_open(fd)}
    assert not leaked, f"fds leaked: {sorted(leaked)} -> {[_target(fd) for fd in sorted(leaked)]}"
    # children that existed before the test (e.g. another suite's session fixtures) are not ours
    left = set(_live_children()) - kids_before
    assert not left, f"child processes still running or unreaped (zombies): {sorted(left)}"


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _live_children() -> list:
    me = str(os.getpid())
    kids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            kids.append(int(pid))
    return kids
