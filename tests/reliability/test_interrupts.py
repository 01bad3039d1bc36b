"""Interrupts in the middle of an exchange (issue: Ctrl-C corrupting a pool): KeyboardInterrupt, a
signal handler that raises, ``_thread.interrupt_main``, at random points of ``compute`` on pools of
one and two children; every later compute must be right. And Ctrl-C must end a process whose
children are stopped (SIGSTOP), with no timeout set. Each case runs in its own process
(interrupted_pool.py), since signals and interpreter exit are what is tested."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rel_helpers import HERE, process_state, pythonpath, wait_gone

SCRIPT = os.path.join(HERE, "interrupted_pool.py")
ENV = {**os.environ, "PYTHONPATH": pythonpath()}


def _run(*args: str, timeout: float = 240) -> str:
    out = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("instances, how", [(1, "sigint"), (2, "sigint"), (1, "raising"), (2, "raising"),
                                             (1, "interrupt_main")])
def test_interrupted_computes_leave_no_child_out_of_step(instances, how):
    _run("trials", str(instances), "30", "20", how, "8")


def test_interrupted_compute_segment_leaves_no_child_out_of_step():
    _run("trials", "1", "30", "20", "segment", "8")


@pytest.mark.parametrize("instances", [1, 2])
def test_interrupts_with_segments_over_the_pipe_buffer(instances):
    # 1500 x 4501 float32 (27 MB) fills the pipe many times over: interrupts land inside writes and reads
    out = _run("trials", str(instances), "1500", "4501", "sigint", "2", "within")
    assert int(out.split()[1]) >= 1  # at least one interrupt cut an exchange, and its child was restarted


@pytest.mark.parametrize("instances", [1, 2])
def test_ctrl_c_ends_a_process_whose_children_are_stopped(instances):
    proc = subprocess.Popen([sys.executable, SCRIPT, "stopped", str(instances), "30", "20"], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()[1:]]
        assert len(pids) == instances
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "computing"
        time.sleep(0.5)  # into the blocking read (no timeout)
        proc.send_signal(signal.SIGINT)
        # the pool's exit_timeout is 60 s: only a child killed at once lets the process end within 20 s
        rc = proc.wait(timeout=20)  # before the fix, a pool of 2 never exited
        stderr = proc.stderr.read()
        assert rc != 0 and "KeyboardInterrupt" in stderr, stderr[-2000:]
        for pid in pids:  # the stopped children were killed (and reaped) on the way out
            assert wait_gone(pid, 10.0) < 10.0, process_state(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if process_state(pid) not in ("", "Z", "X"):
                os.kill(pid, signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
