"""Starting a child with only a few free fds (RLIMIT_NOFILE lowered, in a subprocess): a clear
SprintChildError ("too many open files"), and no fd leaked, attempt after attempt."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_spawn_with_few_free_fds_leaks_nothing_and_says_why():
    out = subprocess.run([sys.executable, os.path.join(HERE, "spawn_with_few_fds.py")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "other", "too", "many", "open", "files"], out.stdout
