"""Writes to a child never raise a signal: with SIGPIPE at its default action (``SIG_DFL``, set by
many command-line tools) a child that dies while the parent writes to it must end in the documented
``SprintChildError``, not kill the parent with SIGPIPE (status -13). Both framing cores and v1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from rel_helpers import HERE, pythonpath, wait_gone

from sprint_control import _env

#: start-up of one emulator child, 64 MB written, a restart: generous for a loaded machine
PARENT_BOUND = 120

CASES = [pytest.param(2, False, id="v2-compiled"), pytest.param(2, True, id="v2-twin"),
         pytest.param(1, False, id="v1")]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize(("protocol", "twin"), CASES)
def test_a_child_dying_mid_write_does_not_kill_a_parent_with_sigpipe_at_its_default(protocol, twin):
    if not twin and _env.pure_python_forced():
        pytest.skip("the compiled framing core is off (SPRINT_CONTROL_PURE_PYTHON)")
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    env.pop("SPRINT_CONTROL_PURE_PYTHON", None)
    if twin:
        env["SPRINT_CONTROL_PURE_PYTHON"] = "1"
    parent = subprocess.Popen([sys.executable, os.path.join(HERE, "sigpipe_parent.py"), str(protocol)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = parent.communicate(timeout=PARENT_BOUND)
    except subprocess.TimeoutExpired:
        parent.kill()
        out, _ = parent.communicate()
        pytest.fail(f"the parent did not end within {PARENT_BOUND} s:\n{out.decode(errors='replace')[-3000:]}")
    text = out.decode(errors="replace")
    pids = [int(line.split()[1]) for line in text.splitlines() if line.startswith(("child ", "restarted "))]
    for pid in pids:  # a parent killed by SIGPIPE leaves its child to the watchdog: wait for it either way
        assert wait_gone(pid, 5.0) < 5.0, f"child {pid} outlived the parent"
    assert parent.returncode != -signal.SIGPIPE, f"the parent was killed by SIGPIPE:\n{text[-3000:]}"
    assert parent.returncode == 0, text[-3000:]
    assert f"framing {'python' if twin else 'cython'} protocol {protocol}" in text, text
    assert "raised SprintChildError: " in text and "was killed by SIGKILL while sending segment" in text, text
    assert "restarted " in text, text


_WRITE_TO_A_CLOSED_PIPE = r"""
import importlib, os, signal, sys
import numpy as np
from sprint_control.wire import constants, link
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
core = importlib.import_module(sys.argv[1])
r, w = os.pipe()
os.close(r)
writes = [lambda: core.write_frame(w, constants.MSG_EXIT, "", None),
          lambda: core.write_frame(w, constants.MSG_EXIT, "x", np.zeros((3, 4), np.float32), timeout=1.0),
          lambda: link.write_all(w, b"abcd"), lambda: link.write_all(w, b"abcd", 1.0)]
for write in writes:
    try:
        write()
        print("no error")
    except BrokenPipeError:
        pass
    assert signal.SIGPIPE not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the mask was not restored"
    assert signal.SIGPIPE not in signal.sigpending(), "a SIGPIPE was left pending"
# a thread that blocks SIGPIPE itself keeps its mask and its pending signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
try:
    core.write_frame(w, constants.MSG_EXIT, "", None)
except BrokenPipeError:
    pass
assert signal.SIGPIPE in signal.pthread_sigmask(signal.SIG_BLOCK, [])
assert signal.SIGPIPE in signal.sigpending()
print("ok")
"""


@pytest.mark.parametrize("core", ["sprint_control.wire._framing_py", "sprint_control.wire._framing"])
def test_writes_to_a_closed_pipe_raise_broken_pipe_and_leave_no_signal(core):
    if core.endswith("._framing") and _env.pure_python_forced():
        pytest.skip("the compiled framing core is off (SPRINT_CONTROL_PURE_PYTHON)")
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    done = subprocess.run([sys.executable, "-c", _WRITE_TO_A_CLOSED_PIPE, core], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != -signal.SIGPIPE, "killed by SIGPIPE"
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
