"""A request is checked once on its way out: the segment name, the payload limit, that the link is
idle, and (with ``reject_non_finite``) the values, each exactly once per segment, whether a pool sends
it (which checks its whole batch up front) or the instance is called directly."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from sprint_control.parent import SprintPool, SprintSubprocessInstance
from sprint_control.parent import batch as batch_mod
from sprint_control.wire import limits as limits_mod
from sprint_control.wire import parent_link as link_mod

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of each check, wherever the send path may call it."""
    counts: collections.Counter = collections.Counter()

    def counting(what, func):
        def wrapper(*args, **kwargs):
            counts[what] += 1
            return func(*args, **kwargs)
        return wrapper

    for module in (batch_mod, link_mod, limits_mod):
        if hasattr(module, "check_name"):
            monkeypatch.setattr(module, "check_name", counting("name", module.check_name))
    for module in (batch_mod, link_mod):
        name = "check_payload_limit" if module is batch_mod else "check_payload"
        monkeypatch.setattr(module, name, counting("payload", getattr(module, name)))
    monkeypatch.setattr(batch_mod, "check_finite", counting("finite", batch_mod.check_finite))
    import sprint_control.parent.instance as inst_mod

    monkeypatch.setattr(inst_mod, "check_finite", counting("finite", inst_mod.check_finite))
    monkeypatch.setattr(link_mod.ParentLink, "_check_idle", counting("idle", link_mod.ParentLink._check_idle))
    return counts


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_pool_checks_each_request_once(fake_exec, protocol, counted):
    lengths = [5, 3, 4]
    x = np.random.default_rng(0).standard_normal((6, 3, 4)).astype(np.float32)
    with SprintPool(1, fake_exec, protocol=protocol, reject_non_finite=True) as pool:
        counted.clear()  # the handshake's own exchanges are not requests
        res = pool.compute(x, lengths, ["a", "b", "c"])
        n = len(lengths)
        assert res.loss.shape == (n,)
        # names and finite values: once per sequence (the pool's batch pass); the payload limit once for
        # the batch (its longest sequence bounds all); idle once per request, on the link
        assert counted == {"name": n, "finite": n, "payload": 1, "idle": n}


@pytest.mark.parametrize("protocol", [1, 2])
def test_an_instance_checks_its_request_once(fake_exec, protocol, counted):
    inst = SprintSubprocessInstance(fake_exec, protocol=protocol, reject_non_finite=True)
    try:
        counted.clear()
        inst.get_loss_and_error_signal("seg", np.zeros((3, 4), np.float32))
        assert counted == {"name": 1, "finite": 1, "payload": 1, "idle": 1}
    finally:
        inst.close()


def test_the_payload_limit_counts_the_sent_itemsize(fake_exec):
    """A float64 array is sent as float32: its limit is that of the float32 bytes, not its own."""
    inst = SprintSubprocessInstance(fake_exec, max_payload=3 * 4 * 4, start=False)
    try:
        inst.init()
        _, _, err = inst.get_loss_and_error_signal("seg", np.zeros((3, 4), np.float64))  # 48 bytes sent
        assert err.shape == (3, 4)
        with pytest.raises(Exception, match="max_payload"):
            inst.get_loss_and_error_signal("seg", np.zeros((4, 4), np.float64))
    finally:
        inst.close()
