"""The shared-memory transport: the region and its allocator, the Link over a real child process,
bounds checks against a lying peer, and cleanup after a child is killed."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from sprint_control.errors import ProtocolError, SprintChildError
from sprint_control.wire import constants as _wire
from sprint_control.wire import framing, shm
from sprint_control.wire.protocol import ChildLink, ParentLink

pytestmark = pytest.mark.skipif(not shm.available(), reason="no fd-shareable memory on this platform")
HERE = os.path.dirname(os.path.abspath(__file__))


# -- the region ------------------------------------------------------------------------------------


def test_arrays_live_in_the_region_until_their_last_view_dies():
    with shm.SharedRegion.create(1 << 20) as region:
        full = region.free_bytes()
        a = region.empty((100, 300))
        b = region.zeros((10, 10))
        assert region.locate(a) == (0, 1200)
        assert region.locate(b)[0] >= 100 * 300 * 4 and not b.any()
        view = a[3:5]
        del a
        gc.collect()
        assert region.locate(view) == (3 * 1200, 1200)  # still allocated: the view keeps it
        assert region.free_bytes() < full
        del view, b
        gc.collect()
        assert region.free_bytes() == full  # and the holes merged back into one


def test_locate_refuses_what_is_not_in_the_region_or_not_row_contiguous():
    with shm.SharedRegion.create(1 << 16) as region:
        a = region.empty((8, 10))
        assert region.locate(np.zeros((8, 10), np.float32)) is None
        assert region.locate(a[:, ::2]) is None
        assert region.locate(a.astype(np.float64)) is None
        assert region.locate(a[:, 2:5]) == (8, 40)


def test_growth_keeps_old_arrays_valid_and_bumps_the_generation():
    with shm.SharedRegion.create(4096, max_size=1 << 24) as region:
        a = region.empty((10, 10))
        a[...] = 7
        big = region.empty((1000, 100))
        assert region.generation == 1 and region.size >= 1000 * 100 * 4
        assert (a == 7).all() and region.locate(a) == (0, 40) and region.locate(big) is not None


def test_the_cap_is_enforced():
    with shm.SharedRegion.create(4096, max_size=8192) as region:
        with pytest.raises(MemoryError, match="cap"):
            region.empty((10000,))


@pytest.mark.parametrize(
    "offset,rows,cols,stride,message",
    [
        (2, 2, 2, 8, "not 4-aligned"),
        (0, 2, 4, 8, "overlaps rows"),
        (4096, 1, 1, 4, "exceed the region"),
        (0, 2**40, 1, 4, "impossible shape"),
        (2**63, 1, 1, 4, "exceed the region"),
        (0, 3, 100, 2**62, "exceed the region"),
    ],
)
def test_views_are_bounds_checked(offset, rows, cols, stride, message):
    with shm.SharedRegion.create(4096) as region:
        with pytest.raises(ProtocolError, match=message):
            region.view(offset, rows, cols, stride, "posteriors")


def test_attach_checks_the_announced_size():
    with shm.SharedRegion.create(4096) as region:
        with pytest.raises(ProtocolError, match="holds 4096 bytes"):
            shm.SharedRegion.attach(region.fd, 1 << 20)
    with pytest.raises(ProtocolError, match="not usable"):
        shm.SharedRegion.attach(987654, 4096)


# -- over a real child process ---------------------------------------------------------------------


class Child:
    def __init__(self, region=None, protocol=2):
        p2c_r, self.p2c_w = os.pipe()
        self.c2p_r, c2p_w = os.pipe()
        fds = (p2c_r, c2p_w) + ((region.fd,) if region is not None else ())
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_shm_peer.py"), str(p2c_r), str(c2p_w)],
            pass_fds=fds, stderr=subprocess.PIPE,
        )
        os.close(p2c_r)
        os.close(c2p_w)
        self.link = ParentLink(self.c2p_r, self.p2c_w, timeout=30)
        self.link.handshake("test", protocol=protocol, shared=region)

    def close(self):
        try:
            self.link.send_exit()
        except OSError:
            pass
        self.link.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


@pytest.fixture
def region():
    r = shm.SharedRegion.create(1 << 20, max_size=1 << 28, inline_below=0)  # even tiny matrices use it
    yield r
    r.close()


def expected(post):
    return float(post.sum(dtype=np.float64)), 2 * post - 1


@pytest.mark.parametrize("shape", [(1, 1), (0, 7), (100, 451), (300, 901)])
def test_results_are_bit_identical_with_and_without_shm(region, shape):
    rng = np.random.default_rng(0)
    post = rng.standard_normal(shape).astype(np.float32)
    results = []
    for use in (None, region):
        child = Child(use)
        try:
            assert (child.link.shm is not None) == (use is not None)
            child.link.send_loss_request("seg", post)
            results.append(child.link.recv_loss_result(shape))
        finally:
            child.close()
    (loss_a, err_a), (loss_b, err_b) = results
    assert loss_a == loss_b == pytest.approx(expected(post)[0])
    assert err_a.tobytes() == err_b.tobytes() == expected(post)[1].tobytes()


def test_batch_buffers_in_the_region_are_used_in_place(region):
    child = Child(region)
    try:
        batch = region.empty((50, 4, 33))
        batch[...] = np.random.default_rng(1).standard_normal(batch.shape)
        out = region.zeros(batch.shape)
        for b, length in enumerate([50, 20, 1, 35]):
            child.link.send_loss_request(f"s{b}", batch[:length, b], out=out[:length, b])
            loss, err = child.link.recv_loss_result((length, 33), out=out[:length, b])
            assert err is not None and np.shares_memory(err, out)
            assert loss == pytest.approx(expected(batch[:length, b])[0], rel=1e-6)
            np.testing.assert_array_equal(out[:length, b], expected(batch[:length, b])[1])
        assert not out[20:, 1].any() and not out[1:, 2].any()
        assert "in" not in child.link._slots and "out" not in child.link._slots  # no scratch copy was needed
    finally:
        child.close()


def test_a_segment_larger_than_the_region_grows_it_and_the_child_follows(region):
    child = Child(region)
    try:
        small = np.ones((10, 10), np.float32)
        child.link.send_loss_request("a", small)
        child.link.recv_loss_result(small.shape)
        big = np.random.default_rng(2).standard_normal((2000, 500)).astype(np.float32)  # 4 MB > 1 MB region
        child.link.send_loss_request("b", big)
        loss, err = child.link.recv_loss_result(big.shape)
        assert region.generation >= 1
        np.testing.assert_array_equal(err, expected(big)[1])
    finally:
        child.close()


def test_small_matrices_go_inline_through_the_pipe():
    with shm.SharedRegion.create(1 << 20) as region:
        child = Child(region)
        try:
            small = np.ones((4, 100), np.float32)  # 1.6 kB, far below the default threshold
            child.link.send_loss_request("s", small)
            assert child.link.pending.shared is None and not child.link._slots
            loss, err = child.link.recv_loss_result(small.shape)
            np.testing.assert_array_equal(err, expected(small)[1])
        finally:
            child.close()


def test_v1_forced_parent_does_not_use_the_region(region):
    child = Child(region, protocol=1)
    try:
        assert child.link.protocol == 1 and child.link.shm is None
    finally:
        child.close()


# -- a lying parent: the child refuses before touching memory --------------------------------------


@pytest.fixture
def child_link(region):
    p2c = os.pipe()
    c2p = os.pipe()
    parent = ParentLink(c2p[0], p2c[1], timeout=10)
    child = ChildLink(p2c[0], c2p[1])
    child.shm = shm.SharedRegion.attach(region.fd, region.size)
    child.shm.inline_below = 0
    child.protocol = parent.protocol = 2
    yield parent, child
    child.shm.close()
    for fd in p2c + c2p:
        os.close(fd)


@pytest.mark.parametrize(
    "desc,message",
    [
        ((0, 2**50, 40, 0, 40, 2, 10, 1), "exceed the region"),
        ((0, 0, 40, 1 << 20, 40, 2, 10, 1), "exceed the region"),
        ((0, 0, 8, 0, 40, 2, 10, 1), "overlaps rows"),
        ((0, 3, 40, 0, 40, 2, 10, 1), "not 4-aligned"),
        ((5, 0, 40, 0, 40, 2, 10, 1), "generation 5"),
        ((0, 0, 40, 0, 40, 2, 10, 99), "seq 99"),
    ],
)
def test_lying_descriptors_raise_protocol_error(child_link, desc, message):
    parent, child = child_link
    framing.write_frame(parent.write_fd, _wire.MSG_LOSS_REQUEST, "s", np.array(desc, np.uint64), seq=1,
                        flags=_wire.FLAG_SHM)
    with pytest.raises(ProtocolError, match=message):
        child.recv_command()


def test_a_descriptor_of_the_wrong_form_is_refused(child_link):
    parent, child = child_link
    framing.write_frame(parent.write_fd, _wire.MSG_LOSS_REQUEST, "s", np.zeros(3, np.uint32), seq=1,
                        flags=_wire.FLAG_SHM)
    with pytest.raises(ProtocolError, match=r"uint64 \(8,\) descriptor"):
        child.recv_command()


def test_a_shared_request_without_a_region_is_refused():
    p2c = os.pipe()
    try:
        child = ChildLink(p2c[0], p2c[1])
        child.protocol = 2
        framing.write_frame(p2c[1], _wire.MSG_LOSS_REQUEST, "s", np.zeros(8, np.uint64), seq=1,
                            flags=_wire.FLAG_SHM)
        with pytest.raises(ProtocolError, match="no shared region"):
            child.recv_command()
    finally:
        os.close(p2c[0])
        os.close(p2c[1])


def test_a_mismatched_echo_is_refused_by_the_parent(child_link):
    parent, child = child_link
    post = np.ones((2, 3), np.float32)
    parent.shm = child.shm
    parent.send_loss_request("s", post)
    cmd = child.recv_command()
    desc, out = child._shared_answer
    child._shared_answer = child._shared_answer._replace(descriptor=desc._replace(seq=desc.seq + 1))  # a stale one
    child.reply_loss("s", 1.0, cmd[3])
    with pytest.raises(ProtocolError, match="does not match the request"):
        parent.recv_loss_result(post.shape)


# -- nothing is left behind -------------------------------------------------------------------------


def _memfds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "memfd:sprint_control" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_nothing_is_left_after_the_child_is_killed():
    gc.collect()
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    fds_before = _memfds()
    region = shm.SharedRegion.create(1 << 20, inline_below=0)
    child = Child(region)
    child.link.send_loss_request("s", np.ones((4, 4), np.float32))
    child.link.recv_loss_result((4, 4))
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(10)
    with pytest.raises((EOFError, BrokenPipeError, SprintChildError)):
        child.link.send_loss_request("s", np.ones((4, 4), np.float32))
        child.link.recv_loss_result((4, 4))
    child.close()
    region.close()
    gc.collect()
    assert _memfds() == fds_before
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) - shm_before == set()
