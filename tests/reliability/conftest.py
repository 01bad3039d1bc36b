"""Fixtures of the reliability tests: a leak check (fds, children, threads) and the emulator with the
fault-injecting Sprint-side module of this folder (helpers in rel_helpers.py)."""

from __future__ import annotations

import gc
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from rel_helpers import (  # noqa: E402
    EMULATOR_ARGS,
    FAULTY_MODULE,
    _target,
    live_children,
    open_fds,
    pythonpath,
    sprint_threads,
)

from sprint_control.parent import emulator_command  # noqa: E402


@pytest.fixture
def no_leaks():
    """Fails a test that leaves fds open, children running or unreaped, or threads behind."""
    fds, kids, threads = open_fds(), live_children(), sprint_threads()
    yield
    gc.collect()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # output drains end at the child's EOF; give them a moment
        if not (sprint_threads() - threads) and not (open_fds() - fds):
            break
        time.sleep(0.02)
    leaked = open_fds() - fds
    assert not leaked, f"fds leaked: {sorted(leaked)} -> {[_target(fd) for fd in sorted(leaked)]}"
    left = live_children() - kids
    assert not left, f"child processes still running or unreaped (zombies): {sorted(left)}"
    extra = sprint_threads() - threads
    assert not extra, f"threads left behind: {sorted(t.name for t in extra)}"



@pytest.fixture
def emulator():
    """Keyword arguments of a SprintSubprocessInstance/SprintPool child: the emulator with the faulty module."""

    def make(*extra_args, env=None, **kwargs):
        return dict(sprintExecPath=emulator_command(), sprintConfigStr=list(EMULATOR_ARGS) + list(extra_args),
                    module_name=FAULTY_MODULE, module_path=HERE,
                    env={**os.environ, "PYTHONPATH": pythonpath(), **(env or {})}, **kwargs)

    return make

