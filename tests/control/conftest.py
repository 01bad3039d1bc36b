"""Fixtures of the Sprint-side tests: a pair of pipes between the test (the parent) and the module
(driven by a scripted RASR in a thread of the same process)."""

from __future__ import annotations

import os
import threading
import traceback
from types import SimpleNamespace

import pytest

from sprint_control import control
from sprint_control.wire import protocol


@pytest.fixture(autouse=True)
def fresh_control():
    """Every test starts without a PythonControl instance and with default logging."""
    control._forget_instance()
    control._log_state.verbose = False
    control._log_state.quiet = False
    yield
    inst = control.PythonControl.instance
    if inst is not None:
        inst.close()
    control._forget_instance()
    control._log_state.verbose = False
    control._log_state.quiet = False


class SprintThread(threading.Thread):
    """RASR's main thread: runs a driver, keeps its exception for the test."""

    def __init__(self, target, *args, **kwargs):
        super().__init__(name="fake-rasr-main", daemon=True)
        self._call = (target, args, kwargs)
        self.error = None
        self.error_text = ""

    def run(self):
        target, args, kwargs = self._call
        try:
            target(*args, **kwargs)
        except BaseException as exc:  # noqa: B036 - the test inspects it
            self.error = exc
            self.error_text = traceback.format_exc()

    def finish(self, timeout: float = 10.0):
        self.join(timeout)
        assert not self.is_alive(), "the fake RASR thread did not finish"
        if self.error is not None:
            raise AssertionError(f"the fake RASR thread failed:\n{self.error_text}")


@pytest.fixture
def link_pair():
    """(config string for the child, parent Link, list of started SprintThreads)."""
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    parent = protocol.Link(c2p_r, p2c_w, timeout=20.0)
    config = f"c2p_fd:{c2p_w},p2c_fd:{p2c_r},minPythonControlVersion:2"
    threads: list[SprintThread] = []
    ns = SimpleNamespace(config=config, parent=parent, threads=threads, child_fds=(c2p_w, p2c_r))

    def start(target, *args, **kwargs):
        t = SprintThread(target, *args, **kwargs)
        threads.append(t)
        t.start()
        return t

    ns.start = start
    yield ns
    parent.close()  # parent gone: the module's control loop ends, RASR's segment list too
    inst = control.PythonControl.instance
    if inst is not None:
        inst.exit()
    for t in threads:
        t.join(10.0)
    if inst is None:  # the module never took the child ends
        for fd in (c2p_w, p2c_r):
            try:
                os.close(fd)
            except OSError:
                pass
