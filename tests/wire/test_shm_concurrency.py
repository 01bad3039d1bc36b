"""One shared region under concurrent use: several links (a pool's instances) send through it from
their own threads while it grows. Every child must see a descriptor of a generation it has mapped."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from support import close_fds

from sprint_control.wire import shm
from sprint_control.wire.protocol import ChildLink, CommandServer, ParentLink

pytestmark = pytest.mark.skipif(not shm.available(), reason="no fd-shareable memory on this platform")

THREADS = 4
ROUNDS = 3


class PreemptedRegion(shm.SharedRegion):
    """A region whose ``generation`` and ``size`` reads give the other threads a turn first, as a
    preemption at that point would: the interleavings a loaded machine produces now and then
    happen on every run."""

    @property
    def generation(self) -> int:
        time.sleep(0.0002)
        return self._generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._generation = value

    @property
    def size(self) -> int:
        time.sleep(0.0002)
        return self._mapping.size


def loss(reply, name, seg_len, post):
    reply.loss(float(post.sum(dtype=np.float64)), 2 * post - 1)


class Peer:
    """A ParentLink to a CommandServer in a thread of this process (it maps the region by its fd)."""

    def __init__(self, region: shm.SharedRegion):
        self.fds = os.pipe() + os.pipe()
        p2c_r, p2c_w, c2p_r, c2p_w = self.fds
        self.child = ChildLink(p2c_r, c2p_w)
        self.server = threading.Thread(
            target=CommandServer(self.child, {"get_loss_and_error_signal": loss}).serve, daemon=True
        )
        self.server.start()
        self.link = ParentLink(c2p_r, p2c_w, timeout=20)
        assert self.link.handshake("p", shared=region) == 2 and self.link.shm is region
        region.inline_below = 0

    def close(self):
        self.link.send_exit()
        self.server.join(10)
        close_fds(self.fds)


def hammer(peer: Peer, region: shm.SharedRegion, seed: int, errors: list) -> None:
    rng = np.random.default_rng(seed)
    try:
        for i in range(12):
            rows = int(rng.integers(1, 40)) * (i + 1)  # larger and larger: the region grows meanwhile
            post = region.empty((rows, 16))
            post[...] = rng.random((rows, 16), dtype=np.float32)
            peer.link.send_loss_request(f"s{seed}/{i}", post)
            got, err = peer.link.recv_loss_result(post.shape)
            assert got == pytest.approx(float(post.sum(dtype=np.float64)))
            np.testing.assert_array_equal(err, 2 * post - 1)
    except BaseException as exc:  # noqa: B036 - reported by the test
        errors.append(exc)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_links_of_a_growing_region_stay_in_step_under_threads(round_):
    region = PreemptedRegion.create(4096)  # one page: it grows many times while the threads send
    peers = [Peer(region) for _ in range(THREADS)]
    try:
        errors: list = []
        threads = [threading.Thread(target=hammer, args=(peer, region, 10 * round_ + k, errors))
                   for k, peer in enumerate(peers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, f"{len(errors)} of {THREADS} threads failed, the first: {errors[0]!r}"
        assert region.generation >= 3
    finally:
        for peer in peers:
            peer.close()
        region.close()
