"""The parent (the training process) is killed with SIGKILL: every Sprint child ends within 2 s.

The test plays the grandparent: it starts a parent process that runs a pool of emulator children,
kills that parent, and watches the children it leaves behind. Three situations:

- the children wait for the next command: they see EOF on the pipe and finish (both protocols);
- a child is stuck in a C call that holds the GIL (RASR inside a C++ computation called from Python):
  only the kernel's parent-death signal can end it; the parent asks for it when it spawns from
  its main thread;
- a child is stuck in a C call without the GIL and was spawned from a worker thread (no
  parent-death signal): the module's watchdog thread notices the parent is gone.

With a shared memory region between them, nothing of it outlives the processes (memfd: no name in
/dev/shm, gone with the last fd and mapping).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rel_helpers import ERROR_BOUND, HERE, process_state, wait_gone

CASES = [
    (1, "idle", "main"),
    (2, "idle", "main"),
    (2, "idle", "worker"),
    (2, "idle-shm", "main"),
    (2, "stuck-gil", "main"),
    (1, "stuck-nogil", "worker"),
    (2, "stuck-nogil", "worker"),
]


@pytest.mark.parametrize("protocol,mode,spawn_thread", CASES)
def test_children_end_when_the_parent_is_killed(tmp_path, protocol, mode, spawn_thread):
    pid_file = tmp_path / "pids"
    dev_shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    parent = subprocess.Popen([sys.executable, os.path.join(HERE, "dying_parent.py"), str(protocol), mode,
                               spawn_thread, str(pid_file)], cwd=HERE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    children = []
    try:
        deadline = time.monotonic() + 90
        while not pid_file.exists():
            assert parent.poll() is None, f"the parent failed:\n{parent.stdout.read().decode()}"
            assert time.monotonic() < deadline, "the parent never got its children going"
            time.sleep(0.02)
        children = [int(p) for p in pid_file.read_text().split()]
        assert len(children) == 2 and all(process_state(pid) not in ("", "Z") for pid in children)
        parent.kill()
        killed_at = time.monotonic()
        parent.wait()
        took = [wait_gone(pid, 10.0) for pid in children]
        after = time.monotonic() - killed_at
        assert all(t < ERROR_BOUND for t in took), f"children outlived their parent by {took} s (total {after:.2f})"
        if os.path.isdir("/dev/shm"):
            assert set(os.listdir("/dev/shm")) - dev_shm == set()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in children:  # whatever happened, leave nothing behind
            if process_state(pid) not in ("", "Z"):
                os.kill(pid, signal.SIGKILL)
        parent.stdout.close()
