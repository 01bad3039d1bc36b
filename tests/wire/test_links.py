"""The two ends of a link: the parent's request/answer state and how answers are matched to requests."""

from __future__ import annotations

import os
import select

import numpy as np
import pytest
from support import close_fds

from sprint_control.errors import ProtocolError, SprintRemoteError, SprintTimeoutError
from sprint_control.wire import constants as _wire
from sprint_control.wire import framing
from sprint_control.wire.protocol import PROTOCOL_V1, PROTOCOL_V2, ChildLink, Link, ParentLink


class Pair:
    def __init__(self, protocol: int):
        self.p2c = os.pipe()
        self.c2p = os.pipe()
        self.parent = ParentLink(self.c2p[0], self.p2c[1], timeout=5)
        self.child = ChildLink(self.p2c[0], self.c2p[1])
        self.parent.protocol = self.child.protocol = protocol

    def close(self):
        close_fds(self.p2c + self.c2p)


@pytest.fixture(params=[PROTOCOL_V1, PROTOCOL_V2], ids=["v1", "v2"])
def pair(request):
    p = Pair(request.param)
    yield p
    p.close()


@pytest.fixture
def v2():
    p = Pair(PROTOCOL_V2)
    yield p
    p.close()


POST = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_pending_follows_one_exchange(pair):
    assert pair.parent.pending is None
    pair.parent.send_loss_request("a", POST)
    pending = pair.parent.pending
    assert pending is not None and (pending.seg_name, pending.shape) == ("a", (2, 3))
    cmd = pair.child.recv_command()
    assert cmd[1] == "a"
    assert pair.parent.pending is pending  # the child read it, the parent still waits
    pair.child.reply_loss("a", 1.0, -cmd[3])
    loss, err = pair.parent.recv_loss_result((2, 3))
    assert pair.parent.pending is None
    assert loss == 1.0
    np.testing.assert_array_equal(err, -POST)


def test_a_new_request_while_one_is_pending_is_refused(pair):
    pair.parent.send_loss_request("a", POST)
    for request in (lambda: pair.parent.send_loss_request("b", POST), lambda: pair.parent.request_fsa("b"),
                    lambda: pair.parent.call("ping")):
        with pytest.raises(ProtocolError, match=r"request \('a'\) is still pending on this link"):
            request()
    assert pair.parent.pending.seg_name == "a"


def test_an_answer_without_a_request_is_refused(pair):
    with pytest.raises(ProtocolError, match="no request is pending"):
        pair.parent.recv_loss_result((2, 3))


def test_a_request_cut_off_by_a_timeout_stays_pending(pair):
    pair.parent.timeout = 0.05
    pair.parent.send_loss_request("a", POST)
    with pytest.raises(SprintTimeoutError):
        pair.parent.recv_loss_result((2, 3))  # the child never answers
    assert pair.parent.pending is not None and pair.parent.pending.seg_name == "a"


def test_a_remote_error_ends_the_exchange(pair):
    pair.parent.send_loss_request("a", POST)
    pair.child.recv_command()
    pair.child.reply_exception("ValueError", "Traceback...\nValueError: bad")
    with pytest.raises(SprintRemoteError, match="bad"):
        pair.parent.recv_loss_result((2, 3))
    assert pair.parent.pending is None  # a whole answer was read: the next request may go


def test_a_request_the_framing_refuses_leaves_nothing_pending(v2):
    with pytest.raises(TypeError):
        v2.parent.send_loss_request("a", np.zeros((2, 3), np.complex64))
    assert v2.parent.pending is None


def test_an_answer_for_another_segment_is_a_protocol_error(v2):
    v2.parent.send_loss_request("a", POST)
    v2.child.recv_command()
    v2.child.reply_loss("b", 1.0, POST)  # the right seq, the wrong name
    out = np.full((2, 3), 7.0, np.float32)
    with pytest.raises(ProtocolError, match="answer for segment 'b' to the request for 'a'"):
        v2.parent.recv_loss_result((2, 3), out=out)
    # name and error signal come with one readv: with the right sequence number the refused answer's
    # values may be in ``out`` (which the failure leaves undefined); the link says it is out of step
    assert v2.parent.pending is not None


def test_the_answer_to_an_earlier_request_is_a_protocol_error(v2):
    # the child answers a request of an earlier exchange: same name, an older sequence number
    v2.parent.send_loss_request("a", POST)
    stale = v2.parent.pending.seq - 1
    framing.write_frame(v2.child.write_fd, _wire.MSG_LOSS_RESULT, "a", POST, value=5.0, seq=stale)
    out = np.full((2, 3), 7.0, np.float32)
    with pytest.raises(ProtocolError, match=rf"#{stale} does not belong to the pending .* request #{stale + 1}"):
        v2.parent.recv_loss_result((2, 3), out=out)
    assert (out == 7.0).all()  # an answer to another request never reaches the caller's buffer


@pytest.mark.parametrize("what", ["fsa", "call"])
def test_other_answers_are_matched_by_sequence_number(v2, what):
    if what == "fsa":
        v2.parent._write_request(_wire.MSG_FSA_REQUEST, "x", None, 0)  # a request the parent lost track of
        v2.child.recv_command()
        v2.child.reply_fsa(2, 1, np.array([0, 1, 5], np.uint32), np.array([0.5], np.float32))
        with pytest.raises(ProtocolError, match="does not belong"):
            v2.parent.request_fsa("y")
    else:
        v2.parent._send_control(("ping",), 0)
        v2.child.recv_command()
        v2.child.reply_ok("pong")
        with pytest.raises(ProtocolError, match="does not belong"):
            v2.parent.call("ping")


def test_the_child_answers_with_the_request_sequence_number(v2):
    framing.write_frame(v2.parent.write_fd, _wire.MSG_LOSS_REQUEST, "s", POST, seq=41)
    framing.write_frame(v2.parent.write_fd, _wire.MSG_CONTROL, "", np.frombuffer(b"x", np.uint8), seq=42)
    v2.child.recv_command()
    v2.child.reply_loss("s", 0.0, POST)
    with pytest.raises(ProtocolError):
        v2.child.recv_command()  # not a pickle: refused, but the frame was read whole
    v2.child.reply_exception("ProtocolError", "...")
    first, _ = framing.read_frame(v2.parent.read_fd)
    second, _ = framing.read_frame(v2.parent.read_fd)
    assert (first.seq, second.seq) == (41, 42)
    assert v2.child.in_step


def test_the_either_end_link_still_reads_an_unrequested_answer():
    # code written before the split drives both ends of one ``Link`` by hand
    p2c, c2p = os.pipe(), os.pipe()
    try:
        parent, child = Link(c2p[0], p2c[1], timeout=5), Link(p2c[0], c2p[1])
        parent.protocol = child.protocol = PROTOCOL_V2
        child.reply_loss("seg", 2.0, POST)
        loss, err = parent.recv_loss_result((2, 3))
        assert loss == 2.0 and parent.pending is None
        np.testing.assert_array_equal(err, POST)
    finally:
        for fd in p2c + c2p:
            os.close(fd)


def _nothing_sent(pair) -> bool:
    return not select.select([pair.p2c[0]], [], [], 0)[0]


def test_a_segment_over_the_limit_is_refused_before_anything_is_sent(pair):
    pair.parent.max_payload = 1000  # the same option the child is given
    with pytest.raises(ProtocolError, match=r"posteriors of segment .big. of 1200 bytes exceed max_payload"
                                            r" = 1000 bytes, .*raise the option max_payload"):
        pair.parent.send_loss_request("big", np.zeros((10, 30), np.float32))
    assert pair.parent.pending is None and _nothing_sent(pair)
    pair.parent.send_loss_request("fits", np.zeros((10, 25), np.float32))  # 1000 bytes
    assert pair.child.recv_command()[1] == "fits"


def test_a_name_over_the_v2_limit_is_refused_before_anything_is_sent(pair):
    name = "n" * (_wire.DEFAULT_MAX_NAME + 1)
    if pair.parent.protocol == PROTOCOL_V1:  # v1 has no such limit
        pair.parent.send_loss_request(name, POST)
        assert pair.child.recv_command()[1] == name
        return
    for request in (lambda: pair.parent.send_loss_request(name, POST), lambda: pair.parent.request_fsa(name)):
        with pytest.raises(ProtocolError, match="65537 bytes of UTF-8; a segment name may have at most 65536"):
            request()
    assert pair.parent.pending is None and _nothing_sent(pair)
