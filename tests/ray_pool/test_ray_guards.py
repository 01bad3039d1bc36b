"""The Ray pool's guards, which need no cluster: a forked copy refuses every call before any lock and
closes nothing; a call from inside one of the pool's calls (a signal handler of that thread) is
refused before it could touch the actors the interrupted call is using."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import in_copy

pytest.importorskip("ray", reason='needs the ray extra: pip install "sprint_control[ray]"')

from sprint_control.errors import SprintControlError  # noqa: E402
from sprint_control.ray import RaySprintPool  # noqa: E402

BELONGS = "belongs to another process"
POST = np.zeros((4, 1, 3), np.float32)


@pytest.fixture
def pool():
    """A Ray pool that has not started anything (no cluster, no actor)."""
    p = RaySprintPool(1, start=False)
    yield p
    p.closed = True  # nothing was started: nothing to end


CALLS = {
    "compute": lambda p: p.compute(POST, [4], ["a"]),
    "compute_segment": lambda p: p.compute_segment("a", POST[:, 0]),
    "automata": lambda p: p.automata(["a"]),
    "start": lambda p: p.start(),
    "empty": lambda p: p.empty((2, 2)),
    "zeros": lambda p: p.zeros((2, 2)),
    "actor_info": lambda p: p.actor_info(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_forked_copy_refuses_every_call_even_with_the_lock_held(pool, call):
    taken, release = threading.Event(), threading.Event()

    def holder():  # another thread inside a call at the fork: the copy must not wait for its lock
        with pool.lock:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert taken.wait(5)
        result = in_copy(lambda: CALLS[call](pool))
    finally:
        release.set()
        thread.join()
    assert result != "BLOCKED", f"{call} in the copy waited for a lock held at the fork"
    assert isinstance(result, str) and result.startswith("raised SprintControlError") and BELONGS in result, result


def test_close_in_a_forked_copy_touches_nothing(pool):
    assert in_copy(lambda: (pool.close(), pool.closed)) == (None, False)
    assert not pool.closed


@pytest.mark.parametrize("call", ["compute", "compute_segment", "automata", "start", "actor_info"])
def test_a_call_from_inside_a_call_of_the_same_thread_is_refused(pool, call):
    with pool._call():  # what a signal handler of the calling thread would find: the call's mark set
        with pytest.raises(SprintControlError, match="this pool was re-entered"):
            CALLS[call](pool)
    assert pool._calling_thread is None

