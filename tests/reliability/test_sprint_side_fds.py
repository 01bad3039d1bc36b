"""The pipe ends the parent names in ``--*.pymod-config`` (``c2p_fd``, ``p2c_fd``): a number that is
no fd, an fd open the wrong way, and one whose writes fail. Each ends the Sprint side with a failure
status and a line that says why, never a bare ``OverflowError`` or a silent status 0."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess

import pytest
from rel_helpers import pythonpath

from sprint_control import control
from sprint_control.errors import SprintControlError
from sprint_control.parent import emulator_command
from sprint_control.wire.v1 import INIT_VERSION

#: seconds the emulator may take to start and end (it fails right after start-up)
CHILD_BOUND = 60


def _run_child(c2p: int, p2c: int, pass_fds=(), own_loop: bool = False) -> tuple[int, str]:
    """Runs the emulator with the Sprint side on the given fds; returns its status and output.
    ``own_loop``: RASR iterates the corpus in the module's segment order, whose control loop runs in
    a thread of the module's own (flow A without RASR's control loop)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = f"c2p_fd:{c2p},p2c_fd:{p2c}"
    cmd = emulator_command() + [
        "--*.python-control-enabled=true", f"--*.pymod-path={root}", "--*.pymod-name=sprint_control.control",
        f"--*.pymod-config={config}", "--*.corpus.synthetic=2", "--*.log-level=warning"]
    if own_loop:
        cmd += ["--*.python-control-loop-type=iterate-corpus", "--*.python-segment-order=true",
                f"--*.python-segment-order-pymod-path={root}",
                "--*.python-segment-order-pymod-name=sprint_control.control",
                f"--*.python-segment-order-config={config}"]
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    child = subprocess.Popen(cmd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = child.communicate(timeout=CHILD_BOUND)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        pytest.fail(f"the Sprint child did not end within {CHILD_BOUND} s:\n{out.decode(errors='replace')[-2000:]}")
    return child.returncode, out.decode(errors="replace")


@pytest.fixture
def forget_control():
    control._forget_instance()
    yield
    control._forget_instance()


@pytest.mark.usefixtures("forget_control")
@pytest.mark.parametrize("key", ["c2p_fd", "p2c_fd"])
@pytest.mark.parametrize("number", ["1099511627776", "-1"])
def test_an_fd_number_out_of_range_is_a_clear_error(key, number):
    other = "p2c_fd" if key == "c2p_fd" else "c2p_fd"
    r, w = os.pipe()
    try:
        fd_of_other = r if other == "p2c_fd" else w
        with pytest.raises(SprintControlError) as info:
            control.init("Sprint.PythonControl", None, f"{key}:{number},{other}:{fd_of_other}")
        text = str(info.value)
        assert f"{key} {number} is not" in text, text
        assert "pymod-config" in text, text
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.usefixtures("forget_control")
def test_pipe_ends_open_the_wrong_way_are_refused_at_init():
    r, w = os.pipe()
    try:
        with pytest.raises(SprintControlError, match=rf"c2p_fd {r} is not open for writing"):
            control.init("Sprint.PythonControl", None, f"c2p_fd:{r},p2c_fd:{r}")
        with pytest.raises(SprintControlError, match=rf"p2c_fd {w} is not open for reading"):
            control.init("Sprint.PythonControl", None, f"c2p_fd:{w},p2c_fd:{w}")
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.usefixtures("no_leaks")
def test_a_c2p_fd_open_for_reading_ends_the_child_with_a_failure_status():
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        rc, out = _run_child(c2p=r2, p2c=r, pass_fds=(r, r2))
    finally:
        for fd in (r, w, r2, w2):
            os.close(fd)
    assert rc != 0, out
    assert f"c2p_fd {r2} is not open for writing" in out, out


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("own_loop", [False, True], ids=["rasr-loop", "threaded-loop"])
def test_a_c2p_fd_whose_writes_fail_ends_the_loop_with_a_failure_status(own_loop):
    """/dev/full takes the fd's checks but fails every write (ENOSPC): the control loop cannot
    answer the parent's ``init``; it ends with RASR's failure status and the reason, in RASR's
    control loop and in the module's own (threaded) one behind the segment order."""
    r, w = os.pipe()
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        message = pickle.dumps(("init", "test", INIT_VERSION), protocol=4)
        os.write(w, struct.pack("<i", len(message)) + message)
        rc, out = _run_child(c2p=full, p2c=r, pass_fds=(r, full), own_loop=own_loop)
    finally:
        for fd in (r, w, full):
            os.close(fd)
    assert rc != 0, out
    assert "No space left on device" in out, out
    assert "writing to the parent" in out, out
