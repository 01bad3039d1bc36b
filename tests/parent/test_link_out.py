"""Link.recv_loss_result(out=...) on v2 when the child answers with an ERROR frame instead of a
LOSS_RESULT: the error must come through as SprintRemoteError and the stream stay in step."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sprint_control import SprintRemoteError
from sprint_control.wire.protocol import PROTOCOL_V2, Link


@pytest.fixture
def links():
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    parent = Link(c2p_r, p2c_w, timeout=5)
    child = Link(p2c_r, c2p_w)
    parent.protocol = child.protocol = PROTOCOL_V2
    yield parent, child
    parent.close()
    child.close()


def test_error_frame_with_out_buffer(links):
    parent, child = links
    out = np.full((8, 3, 5), 7.0, np.float32)
    view = out[:4, 1]
    child.reply_exception("ValueError", "Traceback...\nValueError: no automaton for seg")
    with pytest.raises(SprintRemoteError, match="no automaton for seg"):
        parent.recv_loss_result((4, 5), out=view)
    assert (out == 7.0).all()  # the error text did not land in the output
    # the next answer still arrives, straight into the slice
    err = np.arange(20, dtype=np.float32).reshape(4, 5)
    child.reply_loss("seg", 1.5, err)
    loss, got = parent.recv_loss_result((4, 5), out=view)
    assert loss == 1.5 and got is view
    np.testing.assert_array_equal(out[:4, 1], err)
