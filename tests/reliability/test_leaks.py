"""Long runs leave nothing behind: 10,000 segments through one link and 200 start/stop cycles of a
pool bring the parent's open fds, threads and children back to where they were, and its RSS
stays within a few MiB of the baseline taken after a warm-up."""

from __future__ import annotations

import gc
import os
import sys
import threading

import numpy as np
import pytest
from rel_helpers import HERE, live_children, open_fds

from sprint_control import SprintPool
from sprint_control.parent import SprintSubprocessInstance

PARENT_TESTS = os.path.join(os.path.dirname(HERE), "parent")
ECHO_CHILD = [sys.executable, os.path.join(PARENT_TESTS, "fake_child.py")]
FAST_CHILD = [sys.executable, "-I", "-S", os.path.join(HERE, "fast_child.py")]
RSS_SLACK = 4 << 20  # bytes: allocator noise, not a leak of 10,000 segments or 200 children


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def snapshot() -> tuple[int, int, int, set]:
    gc.collect()
    return len(open_fds()), threading.active_count(), rss(), live_children()


@pytest.mark.parametrize("protocol", [1, 2])
def test_ten_thousand_segments_through_one_link(protocol):
    inst = SprintSubprocessInstance(ECHO_CHILD, sprintConfigStr="--fake.echo=true", protocol=protocol)
    try:
        rng = np.random.default_rng(0)
        segs = [rng.standard_normal((1 + i % 5, 4)).astype(np.float32) for i in range(16)]
        out = np.zeros((5, 4), np.float32)

        def run(n):
            for i in range(n):
                x = segs[i % len(segs)]
                name, loss, err = inst.get_loss_and_error_signal(f"seg-{i}", x, out=out[: x.shape[0]])
                if i % 997 == 0:  # the echo child answers the posteriors themselves
                    assert name == f"seg-{i}" and loss == 0.0
                    np.testing.assert_array_equal(err, x)

        run(300)  # warm-up: caches, the allocator's arenas, the framing core's first calls
        fds, threads, mem, kids = snapshot()
        run(10_000)
        fds2, threads2, mem2, kids2 = snapshot()
        assert inst.segments_done == 10_300 and inst.alive
        assert fds2 == fds, f"open fds went from {fds} to {fds2}"
        assert threads2 == threads, f"threads went from {threads} to {threads2}"
        assert kids2 == kids
        assert mem2 - mem < RSS_SLACK, f"RSS grew by {(mem2 - mem) / 2**20:.1f} MiB over 10,000 segments"
    finally:
        inst.close()


def test_two_hundred_start_stop_cycles_of_a_pool():
    def cycle():
        with SprintPool(1, FAST_CHILD, protocol=1) as pool:
            assert pool.instances[0].alive and pool.protocol == 1
        assert pool.instances[0].child_pid is None

    for _ in range(10):  # warm-up
        cycle()
    fds, threads, mem, kids = snapshot()
    for _ in range(200):
        cycle()
    # the output drain of the last child may still be closing its fd
    for t in threading.enumerate():
        if t.name.endswith(" output"):
            t.join(2.0)
    fds2, threads2, mem2, kids2 = snapshot()
    assert fds2 == fds, f"open fds went from {fds} to {fds2}"
    assert threads2 == threads, f"threads went from {threads} to {threads2}"
    assert kids2 == kids, f"children left: {sorted(kids2 - kids)}"
    assert mem2 - mem < RSS_SLACK, f"RSS grew by {(mem2 - mem) / 2**20:.1f} MiB over 200 pools"
