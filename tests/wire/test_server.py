"""The child's command loop: the server's own commands, the table of handlers, and its failures."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from support import close_fds

from sprint_control.errors import SprintRemoteError
from sprint_control.wire import constants as _wire
from sprint_control.wire.protocol import ChildLink, CommandServer, ParentLink


class Served:
    """A ParentLink and a CommandServer over a ChildLink, the server in a thread."""

    def __init__(self, handlers, **kwargs):
        self.p2c = os.pipe()
        self.c2p = os.pipe()
        self.parent = ParentLink(self.c2p[0], self.p2c[1], timeout=10)
        self.server = CommandServer(ChildLink(self.p2c[0], self.c2p[1]), handlers, **kwargs)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def finish(self) -> str:
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.server.ended

    def close(self):
        close_fds(self.p2c + self.c2p)


def echo(reply, name, seg_len, post):
    reply.loss(float(seg_len), post)


@pytest.fixture
def served(request):
    s = Served({"get_loss_and_error_signal": echo, **getattr(request, "param", {})}, name="t",
               capabilities={"color": "blue"})
    yield s
    s.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_init_switch_loss_and_exit(served, protocol):
    assert served.parent.handshake("p", protocol=protocol) == protocol
    assert served.parent.peer_capabilities["color"] == "blue"
    assert served.parent.peer_capabilities["protocols"] == [1, 2]
    post = np.ones((3, 2), np.float32)
    served.parent.send_loss_request("s", post)
    assert served.parent.recv_loss_result((3, 2))[0] == 3.0
    served.parent.send_exit()
    assert served.finish() == "exit"
    assert served.server.link.read_fd == -1  # exit closes the child's pipes


def test_eof_ends_the_loop(served):
    os.close(served.p2c[1])
    assert served.finish() == "eof"


@pytest.mark.parametrize("protocol", [1, 2])
def test_unknown_commands_name_the_table(served, protocol):
    served.parent.handshake("p", protocol=protocol)
    with pytest.raises(SprintRemoteError, match="unknown command 'nope'; known: init, use_protocol,"
                                                " get_loss_and_error_signal, exit"):
        served.parent.call("nope")
    served.parent.send_exit()
    assert served.finish() == "exit"


def broken(reply, *args):
    raise KeyError("the handler broke")


def silent(reply, *args):
    pass


@pytest.mark.parametrize("served", [{"broken": broken, "silent": silent}], indirect=True)
def test_handler_failures_go_back_and_the_loop_goes_on(served):
    served.parent.handshake("p")
    with pytest.raises(SprintRemoteError, match="the handler broke") as info:
        served.parent.call("broken")
    assert "Traceback" in info.value.remote_traceback and "def broken" not in info.value.args[0]
    with pytest.raises(SprintRemoteError, match="the handler of 'silent' returned without an answer"):
        served.parent.call("silent")
    served.parent.send_loss_request("s", np.ones((1, 1), np.float32))
    assert served.parent.recv_loss_result((1, 1))[0] == 1.0
    served.parent.send_exit()
    assert served.finish() == "exit"


def test_a_bad_v2_header_is_answered_and_ends_the_loop(served):
    served.parent.handshake("p")
    os.write(served.p2c[1], b"XXXX" + bytes(_wire.HEADER_SIZE - 4))
    header, arr = served.parent._read_frame()
    assert header.msg_type == _wire.MSG_ERROR and b"bad frame magic" in bytes(arr)
    assert served.finish() == "out of step"


def test_the_server_owns_its_commands():
    with pytest.raises(ValueError, match=r"\['exit', 'init'\]"):
        CommandServer(None, {"init": echo, "exit": echo})


def test_shm_remap_without_a_region_is_an_error(served):
    served.parent.handshake("p")
    with pytest.raises(SprintRemoteError, match="no shared region"):
        served.parent.call("shm_remap", 4096, 1)
    with pytest.raises(SprintRemoteError, match="not supported"):
        served.parent.call("use_protocol", 9, {})
    served.parent.send_loss_request("s", np.ones((1, 1), np.float32))  # the link stays usable
    assert served.parent.recv_loss_result((1, 1))[0] == 1.0
    served.parent.send_exit()
    served.finish()


def complex_loss(reply, name, seg_len, post):
    reply.loss(0.0, post.astype(np.complex64))  # the framing refuses it before writing


def twice(reply, *args):
    reply.ok(1)
    reply.ok(2)


@pytest.mark.parametrize("served", [{"get_loss_and_error_signal": complex_loss, "twice": twice}], indirect=True)
def test_a_refused_reply_is_followed_by_the_error_and_a_second_reply_by_nothing(served):
    served.parent.handshake("p")
    served.parent.send_loss_request("s", np.ones((2, 2), np.float32))
    with pytest.raises(SprintRemoteError, match="cannot be framed"):
        served.parent.recv_loss_result((2, 2))
    for _ in range(2):  # no stray second answer is waiting in the pipe
        assert served.parent.call("twice") == (1,)
    served.parent.send_exit()
    assert served.finish() == "exit"
