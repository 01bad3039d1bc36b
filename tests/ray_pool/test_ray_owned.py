"""A RaySprintPool that starts Ray itself (no cluster running yet) shuts it down again on close, and
a pool whose Ray was shut down under it closes without error. This module starts its own Ray."""

from __future__ import annotations

import pytest
from support import extra_reason

ray = pytest.importorskip("ray", reason=extra_reason("ray"))

from raylib import EMULATOR_ARGS, batch, require_loopback_only, wait_gone  # noqa: E402

from sprint_control.ray import RaySprintPool  # noqa: E402

LOCAL = dict(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)


@pytest.fixture(autouse=True)
def no_usage_stats(monkeypatch):
    require_loopback_only()
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized(), "another test module left Ray running"
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_a_pool_that_started_ray_shuts_it_down_on_close():
    pool = RaySprintPool(1, sprint_args=EMULATOR_ARGS, timeout=60, ray_init=LOCAL)
    assert ray.is_initialized()
    info = pool.actor_info()[0]
    x, lengths, tags = batch(segments=[0])
    assert pool.compute(x, lengths, tags).loss.shape == (1,)
    pool.close()
    assert not ray.is_initialized()
    assert wait_gone({info["pid"], info["child_pid"]}) == set()


def test_closing_after_ray_was_shut_down_under_the_pool():
    ray.init(**LOCAL)
    pool = RaySprintPool(1, sprint_args=EMULATOR_ARGS, timeout=60)
    info = pool.actor_info()[0]
    ray.shutdown()
    pool.close()
    assert pool.closed and pool.slots == []
    assert wait_gone({info["pid"], info["child_pid"]}) == set()
