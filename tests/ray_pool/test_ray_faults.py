"""Faults of RaySprintPool on a local Ray cluster: a Sprint child that dies in the middle of a batch,
an actor that dies, an actor that stops answering (as when its node is gone). Each is an error that
names the actor, its node and the segment, within the bound; the pool serves the next batch."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from support import extra_reason

pytest.importorskip("ray", reason=extra_reason("ray"))

from raylib import EMULATOR_ARGS, batch, faulty_options, running, wait_gone  # noqa: E402

from sprint_control import SprintChildError, SprintTimeoutError  # noqa: E402
from sprint_control.parent import SprintPool, schedule_longest_first  # noqa: E402
from sprint_control.ray import RaySprintPool  # noqa: E402

SEGMENTS = [0, 1, 2, 3, 4, 5]
VICTIM = 4  # the batch index whose segment triggers the fault


@pytest.fixture(scope="module")
def reference():
    x, lengths, tags = batch(SEGMENTS, seed=1)
    healthy = [b for b in range(len(tags)) if b != VICTIM]
    with SprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60) as pool:
        res = pool.compute(x[:, healthy], [lengths[b] for b in healthy], [tags[b] for b in healthy])
    return x, lengths, tags, healthy, res


def _owner(lengths) -> int:
    """The actor whose longest-first share holds the victim."""
    return next(i for i, job in enumerate(schedule_longest_first(lengths, 2)) if VICTIM in job)


def _next_batch_is_served(pool, reference) -> None:
    x, lengths, tags, healthy, res = reference
    got = pool.compute(x[:, healthy], [lengths[b] for b in healthy], [tags[b] for b in healthy])
    np.testing.assert_array_equal(got.error_signal, res.error_signal)
    np.testing.assert_array_equal(got.loss, res.loss)


def _failing_batch(pool, reference, error_class):
    """Runs the batch whose victim segment triggers the fault: the victim's actor (before), the error."""
    x, lengths, tags, _, _ = reference
    owner = _owner(lengths)
    old = pool.actor_info()[owner]
    with pytest.raises(error_class) as info:
        pool.compute(x, lengths, tags)
    assert str(info.value).startswith(f"Ray actor {owner} (node {old['node_ip']} {old['hostname']}, node id"
                                      f" {old['node_id'][:12]}, actor pid {old['pid']}, Sprint child pid"
                                      f" {old['child_pid']})")
    return owner, old, info.value


def test_a_child_dying_mid_batch_is_named_and_restarted(ray_cluster, reference):
    tags = reference[2]
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, **faulty_options(exit=tags[VICTIM])) as pool:
        owner, old, err = _failing_batch(pool, reference, SprintChildError)
        msg = str(err)
        assert f"segment {tags[VICTIM]!r} failed (the child was restarted (pid " in msg
        assert "exited with status 7" in msg and err.returncode == 7
        new = pool.actor_info()[owner]
        assert new["pid"] == old["pid"] and new["child_pid"] != old["child_pid"]  # same actor, new child
        assert not running(old["child_pid"])
        _next_batch_is_served(pool, reference)


def test_an_actor_dying_mid_batch_is_named_and_replaced(ray_cluster, reference):
    tags = reference[2]
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60,
                       **faulty_options(kill_actor=tags[VICTIM])) as pool:
        owner, old, err = _failing_batch(pool, reference, SprintChildError)
        msg = str(err)
        lost = r"was lost while computing its share of a batch of segments .*"
        assert re.search(lost + re.escape(repr(tags[VICTIM])), msg)
        assert msg.endswith("a new actor was started")
        _next_batch_is_served(pool, reference)
        assert pool.actor_info()[owner]["pid"] != old["pid"]
        assert wait_gone({old["pid"], old["child_pid"]}) == set()


def test_an_actor_that_stops_answering_is_a_timeout_within_the_bound(ray_cluster, reference):
    tags = reference[2]
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, actor_timeout=8,
                       **faulty_options(stop_actor=tags[VICTIM])) as pool:
        owner, old, err = _failing_batch(pool, reference, SprintTimeoutError)
        assert re.search(r"\) gave no answer within 8\.0 s while computing its share of a batch of segments .*"
                         + re.escape(repr(tags[VICTIM])) + ".*; its node may be gone or the actor stuck", str(err))
        _next_batch_is_served(pool, reference)
        assert wait_gone({old["pid"], old["child_pid"]}) == set()


def test_a_child_that_died_between_batches_and_cannot_restart_is_named(ray_cluster, reference, tmp_path):
    """The actor restarts a dead child before its next segment; when that restart fails, the driver still
    learns which actor, node and segment it was (not a bare error from inside the actor)."""
    x, lengths, tags, _, _ = reference
    marker = tmp_path / "no-start"
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, start_timeout=30,
                       **faulty_options(no_start=str(marker))) as pool:
        old = pool.actor_info()
        marker.touch()  # from now on a child fails as it starts
        for info in old:
            os.kill(info["child_pid"], signal.SIGKILL)
        assert wait_gone({info["child_pid"] for info in old}) == set()
        with pytest.raises(SprintChildError) as caught:
            pool.compute(x, lengths, tags)
        msg = str(caught.value)
        assert re.match(r"Ray actor [01] \(node ", msg), msg
        assert re.search(r"segment '[^']+' failed", msg), msg
        marker.unlink()
        _next_batch_is_served(pool, reference)
