"""Gaps in the parent's API found by trying it as a hostile user would: closed pools, restarts of a
closed pool, timeouts that cannot work, lengths that wrap around, tags that are not names, and
get_free_instance from several threads at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_child_faults import CORPUS, _posteriors

from sprint_control import SprintControlError, SprintPool
from sprint_control.emulator import criteria
from sprint_control.parent import SprintInstancePool, SprintSubprocessInstance

pytestmark = pytest.mark.usefixtures("no_leaks")


def _pool_args(args):
    return dict(sprint_exec=args.pop("sprintExecPath"), sprint_args=args.pop("sprintConfigStr"), **args)


def test_a_closed_shm_pool_says_it_is_closed(emulator):
    pool = SprintPool(**_pool_args(emulator()), shm=True)
    seg = CORPUS.segments[0]
    x = _posteriors(seg)[:, None]
    pool.close()
    for call in (lambda: pool.compute(x, [seg.num_frames], [seg.name]), lambda: pool.empty((3, 2)),
                 lambda: pool.zeros((3, 2)), lambda: pool.automata([seg.name]),
                 lambda: pool.compute_segment(seg.name, x[:, 0])):
        with pytest.raises(SprintControlError, match="pool is closed"):
            call()


def test_start_after_close_is_refused(emulator):
    pool = SprintPool(**_pool_args(emulator()))
    pool.close()
    with pytest.raises(SprintControlError, match="cannot be restarted; create a new one"):
        pool.start()
    assert all(inst.child_pid is None for inst in pool.instances)


@pytest.mark.parametrize("key, value", [("timeout", 0), ("timeout", -1), ("timeout", float("nan")),
                                        ("start_timeout", 0), ("exit_timeout", -5), ("exit_timeout", None)])
def test_timeouts_that_cannot_work_are_refused_at_construction(emulator, key, value):
    args = emulator()
    with pytest.raises(ValueError, match=f"{key} must be a positive number of seconds"):
        SprintSubprocessInstance(**args, **{key: value}, start=False)
    with pytest.raises(ValueError, match=key):
        SprintPool(**_pool_args(emulator()), **{key: value}, start=False)
    with pytest.raises(ValueError, match=key):
        SprintInstancePool({**args, key: value})


@pytest.mark.parametrize("lengths, message", [([2**63], "9223372036854775808"), ([2**64], "whole numbers"),
                                               ([-1], r"\[0, 4\], got \[-1\]")])
def test_lengths_do_not_wrap_around(emulator, lengths, message):
    with SprintPool(**_pool_args(emulator())) as pool:
        with pytest.raises(ValueError, match=message) as info:
            pool.compute(np.zeros((4, 1, 3), np.float32), lengths, ["a"])
        assert "-9223372036854775808" not in str(info.value)


@pytest.mark.parametrize("tags, error, message", [
    ([None, None, None], TypeError, "a tag must be a segment name .* got NoneType"),
    ("abc", TypeError, "sequence of segment names, got a single str"),
    (b"abc", TypeError, "got a single bytes"),
    ([1, 2, 3], TypeError, "got int"),
])
def test_tags_that_are_not_names_are_refused(emulator, tags, error, message):
    with SprintPool(**_pool_args(emulator())) as pool:
        with pytest.raises(error, match=message):
            pool.compute(np.zeros((4, 3, 3), np.float32), [4, 4, 4], tags)
        with pytest.raises(error, match=message):
            pool.automata(tags)
        assert pool.instances[0].segments_done == 0


def test_get_free_instance_from_four_threads(emulator):
    """Each thread takes a free instance, computes its segment on it, and gets its own answer:
    an instance belongs to one thread from get_free_instance until its answer is read."""
    args = emulator()
    pool = SprintInstancePool({**args, "numInstances": 2})
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def run(i):
        try:
            seg = CORPUS.segments[i]
            x = _posteriors(seg, seed=i)
            for _ in range(3):
                deadline = time.monotonic() + 60
                inst = pool.get_free_instance()
                while inst is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                    inst = pool.get_free_instance()
                assert inst is not None, "no instance became free"
                name, loss, err = inst.get_loss_and_error_signal(seg.name, x)
                results[i] = (name, loss, err, x, seg)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert not errors, errors[0]
        for name, loss, err, x, seg in results.values():
            exp_loss, exp_err = criteria.compute_criterion("ctc", x, orthography=seg.orthography)
            assert name == seg.name and loss == pytest.approx(exp_loss, rel=1e-4)
            np.testing.assert_allclose(err, exp_err, atol=1e-4)
        assert len(results) == 4
    finally:
        for inst in pool.instances:
            inst.kill_now()  # ends threads still blocked on a child, if any
        for t in threads:
            t.join(30)
        pool.close()


def test_a_refused_request_does_not_keep_the_instance_from_other_threads(emulator):
    seg = CORPUS.segments[0]
    with SprintPool(**_pool_args(emulator())) as pool:
        with pytest.raises(ValueError, match="matrix"):
            pool.compute_segment(seg.name, np.zeros(3, np.float32))  # refused before sending
        inst = pool.get_free_instance()
        with pytest.raises(ValueError, match="no frames"):
            inst.get_loss_and_error_signal(seg.name, np.zeros((0, 3), np.float32))
        result = []
        worker = threading.Thread(target=lambda: result.append(pool.compute_segment(seg.name, _posteriors(seg))))
        worker.start()
        worker.join(60)
        assert result and result[0].name == seg.name
