"""Calls into a pool from where they must not cut in: a signal handler of the thread that runs a
batch (re-entry: refused with a clear error), and ``close()`` from another thread or a handler while
an exchange is under way (the children are killed at once, but no fd is closed under the thread
that uses it: that thread closes them after its read or write ended, and reads that the pool was
closed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from rel_helpers import HERE, pythonpath

from sprint_control import SprintPool
from sprint_control.errors import SprintControlError
from sprint_control.wire import link as wire_link

#: a parent script's start-up, 20 batches and its end, on a loaded machine
SCRIPT_BOUND = 120
#: close() and the exchange it cuts off end within this many seconds
CLOSE_BOUND = 5.0

REENTRY = "re-entered"
CLOSED = "the pool was closed"


def _run_script(mode: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    child = subprocess.Popen([sys.executable, os.path.join(HERE, "reentry_parent.py"), mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = child.communicate(timeout=SCRIPT_BOUND)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        pytest.fail(f"the parent hung ({mode}):\n{out.decode(errors='replace')[-3000:]}")
    text = out.decode(errors="replace")
    assert child.returncode == 0, text[-3000:]
    return text.splitlines()


@pytest.mark.parametrize("mode", ["compute", "compute_segment"])
def test_a_signal_handler_calling_the_pool_during_its_batch_is_refused(mode):
    lines = _run_script(mode)
    inner = [line[6:] for line in lines if line.startswith("inner ")]
    outer = [line[6:] for line in lines if line.startswith("outer ")]
    refused = [line for line in inner if line != "no error"]  # "no error": the timer fired between batches
    assert refused, lines
    for line in refused:
        assert line.startswith("SprintControlError: ") and REENTRY in line, line
    assert len(outer) >= 20 and outer == ["right"] * len(outer), outer
    assert "restarts 0" in lines, lines


def test_close_from_a_signal_handler_during_a_batch_ends_the_batch_with_that_reason():
    lines = _run_script("close")
    outer = [line[6:] for line in lines if line.startswith("outer ")]
    assert len(outer) == 1 and CLOSED in outer[0], lines
    assert "Bad file descriptor" not in outer[0], outer
    assert "inner no error" in lines, lines


def _closes_by_thread(monkeypatch):
    """Records (thread ident, fd) for every fd a link closes."""
    closed = []
    real_close = os.close

    def close(fd):
        closed.append((threading.get_ident(), fd))
        real_close(fd)

    monkeypatch.setattr(wire_link.os, "close", close)
    return closed


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("style", ["returnn", "compute"])
def test_close_from_another_thread_during_an_exchange(emulator, monkeypatch, style):
    """Another thread's exchange waits on a stopped child (``__send`` then ``__read`` as RETURNN
    does it, or the pool's own ``compute``); ``close()`` from this thread ends at once, the
    exchanging thread reads that the pool was closed, and it closed its fds itself."""
    opts = emulator()
    pool = SprintPool(1, opts["sprintExecPath"], opts["sprintConfigStr"], module_name=opts["module_name"],
                      module_path=opts["module_path"], env=opts["env"])
    closed = _closes_by_thread(monkeypatch)
    inst = pool.instances[0]
    fds = {inst._link.read_fd, inst._link.write_fd}
    post = np.zeros((30, 1, 11), np.float32)
    outcome = {}
    started = threading.Event()

    def exchange():
        outcome["thread"] = threading.get_ident()
        try:
            if style == "returnn":
                free = pool.get_free_instance()
                free.get_loss_and_error_signal__send("synthetic/rec0000/seg", 30, post[:, 0])
                started.set()
                free.get_loss_and_error_signal__read()
            else:
                started.set()
                pool.compute(post, [30], ["synthetic/rec0000/seg"])
            outcome["error"] = "no error"
        except SprintControlError as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    pid = inst.child_pid
    os.kill(pid, signal.SIGSTOP)  # it reads nothing and answers nothing: the exchange waits
    thread = threading.Thread(target=exchange)
    try:
        thread.start()
        assert started.wait(CLOSE_BOUND)
        # wait until the other thread is inside its exchange (the mark is there once the guard is), then
        # a moment more: it is blocked on the child's pipe
        deadline = time.monotonic() + 2.0
        while getattr(inst, "_exchanging", None) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        closer = threading.Thread(target=pool.close)
        began = time.monotonic()
        closer.start()
        closer.join(CLOSE_BOUND)
        assert not closer.is_alive(), f"close() from another thread did not end within {CLOSE_BOUND} s"
        thread.join(CLOSE_BOUND)
        assert not thread.is_alive(), "the exchanging thread did not end after close()"
        assert time.monotonic() - began < CLOSE_BOUND
    finally:
        if thread.is_alive() or pool.instances[0].alive:
            os.kill(pid, signal.SIGKILL)
        thread.join(CLOSE_BOUND)
        pool.close()
    error = outcome["error"]
    assert CLOSED in error.splitlines()[0], error
    assert "Bad file descriptor" not in error, error
    by = {fd: who for who, fd in closed if fd in fds}
    assert set(by) == fds, closed
    assert set(by.values()) == {outcome["thread"]}, "an fd was closed by another thread than the one using it"
