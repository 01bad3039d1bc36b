"""Messages over the receiver's limits: the child drops an oversized v1 message whole and stays in
step; the parent's checks refuse what a child would refuse, before anything is sent."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from support import close_fds

from sprint_control.errors import ProtocolError, SprintRemoteError
from sprint_control.wire import protocol
from sprint_control.wire.protocol import ChildLink, CommandServer, ParentLink


def loss(reply, name, seg_len, post):
    reply.loss(float(seg_len), post)


@pytest.fixture
def v1_child():
    """A v1 parent and a server whose link takes payloads of at most 1 kB."""
    fds = os.pipe() + os.pipe()
    p2c_r, p2c_w, c2p_r, c2p_w = fds
    server = CommandServer(ChildLink(p2c_r, c2p_w, max_payload=1024), {"get_loss_and_error_signal": loss})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    parent = ParentLink(c2p_r, p2c_w, timeout=5)  # bounds a stream out of step
    assert parent.handshake("p", protocol=1) == 1
    yield parent, server
    parent.send_exit()
    thread.join(10)
    close_fds(fds)


def test_an_oversized_v1_message_is_dropped_whole_and_refused(v1_child):
    parent, server = v1_child
    # random floats: read as length prefixes, the payload would make up messages of its own
    big = np.random.default_rng(0).random((3000, 200), dtype=np.float32)  # 2.4 MB, over 1 kB + the v1 slack
    parent.send_loss_request("big", big)
    with pytest.raises(SprintRemoteError, match=r"v1 message of \d+ bytes exceeds the limit of 1024 bytes"
                                                r" \(raise max_payload"):
        parent.recv_loss_result(big.shape)
    small = np.ones((2, 3), np.float32)
    for _ in range(3):  # the stream is in step: the next requests are answered, once each
        parent.send_loss_request("small", small)
        assert parent.recv_loss_result(small.shape)[0] == 2.0
    assert server.link.in_step


def test_a_v1_length_below_one_ends_the_loop(v1_child):
    parent, server = v1_child
    os.write(parent.write_fd, (-5).to_bytes(4, "little", signed=True))
    with pytest.raises(SprintRemoteError, match="not positive"):
        parent._raise_v1_failure(parent.recv_v1())
    assert not server.link.in_step


def test_check_payload_names_the_limit_and_the_option():
    protocol.check_payload(1000, 1000, "posteriors")
    with pytest.raises(ProtocolError, match=r"posteriors of segment 'a' of 1001 bytes exceed max_payload = 1000"
                                            r" bytes, .*: raise the option max_payload"):
        protocol.check_payload(1001, 1000, "posteriors of segment 'a'")
    assert protocol.MAX_PAYLOAD_OPTION == "max_payload"
    assert protocol.DEFAULT_MAX_PAYLOAD == 4 * 2000 * 12001 * 4


def test_check_name_counts_utf8_bytes():
    protocol.check_name("a" * protocol.DEFAULT_MAX_NAME)
    protocol.check_name(b"x" * 10, limit=10)
    with pytest.raises(ProtocolError, match="has 65538 bytes of UTF-8; a segment name may have at most 65536 bytes"):
        protocol.check_name("ü" * 32769)  # 2 bytes each
    with pytest.raises(ProtocolError, match="has 11 bytes of UTF-8; a tag may have at most 10 bytes"):
        protocol.check_name(b"x" * 11, limit=10, what="tag")
