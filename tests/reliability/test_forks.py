"""A forked copy of a process with a pool (a DataLoader worker, a ``multiprocessing`` fork) must not
touch the parent's children, its shared region or its locks: every pool method refuses at once with
a clear error, without a false "restarting the Sprint child" warning, even when another thread held
the pool's lock at the fork; ``close()`` in a copy leaves the parent's children alone."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from support import COPY_BOUND, in_copy

from sprint_control import SprintPool
from sprint_control.parent import SprintInstancePool

BELONGS = "belongs to another process"


def _batch(n=2, labels=11, frames=(10, 6)):
    x = np.random.default_rng(0).standard_normal((max(frames), n, labels)).astype(np.float32)
    return x, np.array(frames[:n]), [f"synthetic/rec{i:04d}/seg" for i in range(n)]


def _pool_calls(pool):
    """Every public method of a pool, as (name, call)."""
    post, lengths, tags = _batch()
    return [
        ("compute", lambda: pool.compute(post, lengths, tags)),
        ("get_batch_loss_and_error_signal", lambda: pool.get_batch_loss_and_error_signal(post, lengths, tags)),
        ("compute_segment", lambda: pool.compute_segment(tags[0], post[:10, 0])),
        ("automata", lambda: pool.automata(tags)),
        ("get_automata_for_batch", lambda: pool.get_automata_for_batch(tags)),
        ("get_free_instance", lambda: pool.get_free_instance()),
        ("start", lambda: pool.start()),
        ("empty", lambda: pool.empty((4, 2, 3))),
        ("zeros", lambda: pool.zeros((4, 2, 3))),
    ]


def _every_method_in_a_copy(pool):
    """In the copy: each method's outcome, and the warnings logged on the way."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("sprint_control")
    logger.addHandler(handler)
    outcomes = {}
    for name, call in _pool_calls(pool):
        try:
            call()
            outcomes[name] = "no error"
        except Exception as exc:  # noqa: BLE001
            outcomes[name] = f"{type(exc).__name__}: {exc}"
    pool.close()  # leaves the parent's children alone
    return outcomes, records


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("shm", [False, True], ids=["pipe", "shm"])
def test_every_pool_method_refuses_in_a_forked_copy(emulator, shm):
    opts = emulator()
    with SprintPool(1, opts["sprintExecPath"], opts["sprintConfigStr"], module_name=opts["module_name"],
                    module_path=opts["module_path"], env=opts["env"], shm=shm) as pool:
        post, lengths, tags = _batch()
        before = pool.compute(post, lengths, tags)
        pid = pool.instances[0].child_pid
        result = in_copy(lambda: _every_method_in_a_copy(pool))
        assert result != "BLOCKED", "the copy blocked"
        outcomes, records = result
        for name, outcome in outcomes.items():
            assert outcome.startswith("SprintControlError") and BELONGS in outcome, (name, outcome)
        assert not [r for r in records if "restart" in r], records  # no false restart warning
        # the copy's close() sent the parent's child no exit: it serves on, with the same answers
        assert pool.instances[0].child_pid == pid and pool.instances[0].alive
        after = pool.compute(post, lengths, tags)
        np.testing.assert_array_equal(after.loss, before.loss)
        assert pool.instances[0].restarts == 0


@pytest.mark.usefixtures("no_leaks")
def test_shared_memory_arrays_are_refused_in_a_copy():
    """A copy's ``empty()`` used to hand out the block the parent's next ``empty()`` gets, in the same
    MAP_SHARED region: the copy would overwrite the parent's batch."""
    with SprintPool(1, shm=True, start=False) as pool:
        result = in_copy(lambda: pool.empty((100, 2, 11)).__array_interface__["data"][0])
        assert isinstance(result, str) and BELONGS in result, result
        result = in_copy(lambda: float(pool.zeros((100, 2, 11)).sum()))
        assert isinstance(result, str) and BELONGS in result, result
        arr = pool.empty((100, 2, 11))  # the parent's own still work
        assert arr.shape == (100, 2, 11)


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("lock", ["pool", "instance", "class"])
def test_a_fork_while_another_thread_holds_a_lock_does_not_block_the_copy(emulator, lock):
    """Another thread holds the pool's lock (as ``compute`` does during a batch), an instance's or
    the class's lock when this thread forks: the copy's calls still refuse at once."""
    opts = emulator()
    with SprintPool(1, opts["sprintExecPath"], opts["sprintConfigStr"], module_name=opts["module_name"],
                    module_path=opts["module_path"], env=opts["env"]) as pool:
        held = {"pool": pool.lock, "instance": pool.instances[0]._lock, "class": SprintInstancePool.class_lock}[lock]
        taken, release = threading.Event(), threading.Event()

        def holder():
            with held:
                taken.set()
                release.wait(COPY_BOUND * 3)

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert taken.wait(5.0)
            post, lengths, tags = _batch()
            result = in_copy(lambda: pool.compute(post, lengths, tags))
            assert result != "BLOCKED", "the copy's compute blocked on a lock held at the fork"
            assert BELONGS in result, result
            result = in_copy(lambda: pool.instances[0].get_loss_and_error_signal(tags[0], post[:10, 0]))
            assert result != "BLOCKED" and BELONGS in result, result
            result = in_copy(lambda: SprintInstancePool.get_global_instance(
                {"numInstances": 1, "sprintExecPath": opts["sprintExecPath"]}) is not pool)
            assert result is True, result
            result = in_copy(lambda: pool.close())  # quiet, and no wait for the lock
            assert result is None, result
        finally:
            release.set()
            thread.join()
        assert pool.compute(post, lengths, tags).loss.shape == (2,)
