"""Protocol v1 (RETURNN's) with its safe reader, the golden fixtures, and the v1 -> v2 negotiation."""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import threading

import numpy as np
import pytest
from support import close_fds, extra_reason

from sprint_control.errors import ProtocolError, SprintRemoteError, TruncatedFrameError
from sprint_control.wire import constants as _wire
from sprint_control.wire import protocol, v1
from sprint_control.wire.protocol import ChildLink, CommandServer, ParentLink

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# the values make_fixtures.py wrote, restated here by hand
POSTERIORS = np.log(np.array([[0.5, 0.25, 0.25], [0.125, 0.75, 0.125]], dtype=np.float32))
ERROR_SIGNAL = np.array([[0.5, -0.75, 0.25], [0.125, -0.25, 0.125]], dtype=np.float32)
SEG = "corpus/rec-1/seg_ü"


def fixture(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def v1_bytes(obj) -> bytes:
    payload = pickle.dumps(obj, protocol=2)
    return struct.pack("<i", len(payload)) + payload


# -- golden fixtures -------------------------------------------------------------------------------


def test_golden_v2_loss_request(framing_impl):
    data = fixture("v2_loss_request.bin")
    header, arr = framing_impl.decode_frame(data)
    assert header.msg_type == _wire.MSG_LOSS_REQUEST and header.name == SEG and header.seq == 1
    assert arr.dtype == np.float32 and arr.tobytes() == POSTERIORS.tobytes()
    assert framing_impl.encode_frame(1, SEG, POSTERIORS, seq=1) == data


def test_golden_v2_loss_result_and_fsa_and_exit(framing_impl):
    header, arr = framing_impl.decode_frame(fixture("v2_loss_result.bin"))
    assert (header.msg_type, header.value, header.name) == (_wire.MSG_LOSS_RESULT, 12.5, SEG)
    np.testing.assert_array_equal(arr, ERROR_SIGNAL)
    header, arr = framing_impl.decode_frame(fixture("v2_fsa_result.bin"))
    assert header.msg_type == _wire.MSG_FSA_RESULT and header.value == 3.0 and arr.shape == (4, 3)
    assert arr[:3].tolist() == [[0, 1, 1], [1, 1, 2], [3, 3, 4]]
    assert arr[3].view(np.float32).tolist() == [0.0, 0.5, 1.5]
    header, arr = framing_impl.decode_frame(fixture("v2_exit.bin"))
    assert header.msg_type == _wire.MSG_EXIT and arr is None and header.seq == 3


@pytest.mark.parametrize("name", ["v2_loss_request.bin", "v2_loss_result.bin", "v2_fsa_result.bin"])
def test_golden_v2_frames_cut_short_or_inflated(framing_impl, name):
    data = fixture(name)
    for cut in (1, 63, 64, len(data) - 1):
        with pytest.raises(TruncatedFrameError):
            framing_impl.decode_frame(data[:cut])
    inflated = bytearray(data)
    struct.pack_into("<Q", inflated, 16, 2**45)  # payload_len: 32 TiB
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        framing_impl.decode_frame(bytes(inflated))


def test_golden_v1_request_written_by_returnn_decodes_safely():
    msg = protocol.decode_v1(fixture("v1_request_returnn.bin"))
    assert msg[:3] == ("get_loss_and_error_signal", SEG, 2)
    assert msg[3].dtype == np.float32 and msg[3].tobytes() == POSTERIORS.tobytes()
    assert msg[3].flags.writeable


def test_golden_v1_answer_is_what_our_encoder_writes():
    data = fixture("v1_answer.bin")
    assert protocol.encode_v1(("ok", 12.5, ERROR_SIGNAL)) == data
    status, loss, err = protocol.decode_v1(data)
    assert status == "ok" and loss == 12.5
    np.testing.assert_array_equal(err, ERROR_SIGNAL)


def test_v1_cut_short():
    data = fixture("v1_answer.bin")
    for cut in (0, 3, 4, len(data) - 1):
        with pytest.raises(TruncatedFrameError):
            protocol.decode_v1(data[:cut])


# -- v1 codec and its interop with RETURNN ---------------------------------------------------------


def test_returnn_style_writer_round_trips_through_our_reader():
    arr = np.random.default_rng(0).random((4, 7), dtype=np.float32)
    msg = ("get_loss_and_error_signal", "s", 4, arr)
    back = protocol.decode_v1(protocol.encode_v1(msg, returnn_style=True))
    assert back[:3] == msg[:3] and back[3].tobytes() == arr.tobytes()


def test_returnn_reads_what_our_v1_writer_writes():
    basic = pytest.importorskip("returnn.util.basic", reason=extra_reason("returnn.util.basic"))
    arr = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    msg = ("ok", 1.5, arr, {"protocols": [1, 2]})
    got = basic.read_pickled_object(io.BytesIO(protocol.encode_v1(msg)))
    assert got[:2] == ("ok", 1.5) and got[3] == {"protocols": [1, 2]}
    np.testing.assert_array_equal(got[2], arr)


def test_numpy_scalars_as_sent_by_returnn_are_allowed():
    msg = protocol.decode_v1(v1_bytes(("x", np.int64(7), np.float32(2.5))))
    assert msg == ("x", 7, 2.5)


def test_array_from_bytes_checks_its_input():
    with pytest.raises(ProtocolError, match="needs 8 bytes, got 3"):
        protocol.array_from_bytes(b"abc", "float32", (2,))
    with pytest.raises(ProtocolError, match="not allowed"):
        protocol.array_from_bytes(b"", "O", (0,))
    with pytest.raises(ProtocolError, match="negative"):
        protocol.array_from_bytes(b"", "float32", (-1,))


class _Evil:
    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


@pytest.mark.parametrize(
    "payload",
    [
        _Evil(os.system, "echo owned > /dev/null"),
        _Evil(eval, "1+1"),
        _Evil(getattr, 0, "real"),
        _Evil(__import__, "subprocess"),
    ],
    ids=["os.system", "eval", "getattr", "__import__"],
)
def test_safe_reader_runs_no_code(payload, tmp_path):
    with pytest.raises(ProtocolError, match="not allowed"):
        protocol.decode_v1(v1_bytes(("ok", payload)))


def test_safe_reader_refuses_object_arrays():
    data = v1_bytes(("ok", np.array([None, 1], dtype=object)))
    with pytest.raises(ProtocolError, match="not allowed"):
        protocol.decode_v1(data)


@pytest.mark.parametrize("obj", [["list"], (), (1, 2), "str"])
def test_v1_messages_must_be_tuples_starting_with_a_str(obj):
    with pytest.raises(ProtocolError, match="must be a tuple"):
        protocol.decode_v1(v1_bytes(obj))


def test_v1_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="undecodable"):
        protocol.decode_v1(struct.pack("<i", 6) + b"\x80\x04junk")
    with pytest.raises(ProtocolError, match="not positive"):
        protocol.decode_v1(struct.pack("<i", -4) + b"abcd")


def test_v1_length_claiming_gigabytes_is_refused_before_reading():
    r, w = os.pipe()
    try:
        os.write(w, struct.pack("<i", 2**31 - 1))
        link = ParentLink(r, w, max_payload=1024)
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            link.recv_v1()
    finally:
        os.close(r)
        os.close(w)


# -- negotiation: the four pairings ----------------------------------------------------------------


class Ends:
    """Two Links joined by two pipes: ``parent`` and ``child``."""

    def __init__(self):
        self.p2c = os.pipe()
        self.c2p = os.pipe()
        self.parent = ParentLink(self.c2p[0], self.p2c[1], timeout=10)
        self.child = ChildLink(self.p2c[0], self.c2p[1])

    def close(self):
        close_fds(self.p2c + self.c2p)


@pytest.fixture
def ends():
    e = Ends()
    yield e
    e.close()


def logged(handlers: dict, link: ChildLink, log: list) -> dict:
    """``handlers`` that note each command with the protocol it arrived on."""

    def wrap(name, fn):
        def handler(reply, *args):
            log.append((name, link.protocol))
            fn(reply, *args)

        return handler

    return {name: wrap(name, fn) for name, fn in handlers.items()}


def our_child(link: ChildLink, log: list):
    """A child that answers like sprint_control's: announces v2 and switches when asked."""

    def loss(reply, name, seg_len, post):
        assert seg_len == post.shape[0]
        reply.loss(float(post.sum()), -post)

    def fsa(reply, name):
        reply.fsa(2, 1, np.array([0, 1, 5], np.uint32), np.array([0.5], np.float32))

    def fail(reply):
        raise ValueError("boom")

    handlers = {"get_loss_and_error_signal": loss, "export_allophone_state_fsa_by_segment_name": fsa, "fail": fail}
    server = CommandServer(link, logged(handlers, link, log), name="child")
    server.serve()
    log.append((server.ended, link.protocol))


def v1_only_child(link: ChildLink, log: list):
    """A child that speaks v1 only (RETURNN's): a plain 3-item init answer."""
    while True:
        cmd = link.recv_v1()
        log.append((cmd[0], 1))
        if cmd[0] == "init":
            link.send_v1(("ok", "returnn-child", 1))
        elif cmd[0] == "get_loss_and_error_signal":
            link.send_v1(("ok", float(cmd[3].sum()), -cmd[3]))
        elif cmd[0] == "exit":
            return
        else:
            link.send_v1(("exception", f"unknown command {cmd[0]}"))


def run_child(fn, link):
    log: list = []
    t = threading.Thread(target=fn, args=(link, log), daemon=True)
    t.start()
    return t, log


def exchange(parent: ParentLink):
    post = np.random.default_rng(3).random((5, 4), dtype=np.float32)
    parent.send_loss_request("seg", post)
    loss, err = parent.recv_loss_result(post.shape)
    assert loss == pytest.approx(float(post.sum()))
    np.testing.assert_array_equal(err, -post)


def test_ours_with_ours_switches_to_v2(ends):
    t, log = run_child(our_child, ends.child)
    assert ends.parent.handshake("parent") == 2
    exchange(ends.parent)
    ends.parent.send_exit()
    t.join(5)
    assert ("get_loss_and_error_signal", 2) in log and ends.child.protocol == 2


def test_ours_forced_to_v1_stays_on_v1(ends):
    t, log = run_child(our_child, ends.child)
    assert ends.parent.handshake("parent", protocol=1) == 1
    exchange(ends.parent)
    ends.parent.send_exit()
    t.join(5)
    assert ("get_loss_and_error_signal", 1) in log and ends.child.protocol == 1


def test_our_parent_with_a_v1_only_child_stays_on_v1(ends):
    t, log = run_child(v1_only_child, ends.child)
    assert ends.parent.handshake("parent") == 1
    exchange(ends.parent)
    ends.parent.send_exit()
    t.join(5)
    assert [c for c, _ in log] == ["init", "get_loss_and_error_signal", "exit"]


def test_a_v1_only_parent_with_our_child_stays_on_v1(ends):
    t, log = run_child(our_child, ends.child)
    # RETURNN's parent: init, check [0] == "ok", len >= 3, [2] == 1; then plain v1 messages
    ends.parent.send_v1(("init", "SprintSubprocessInstance", 1))
    answer = ends.parent.recv_v1()
    assert answer[0] == "ok" and len(answer) >= 3 and answer[2] == 1
    post = np.ones((2, 3), np.float32)
    ends.parent.send_v1(("get_loss_and_error_signal", "seg", 2, post))
    status, loss, err = ends.parent.recv_v1()
    assert status == "ok" and loss == 6.0
    np.testing.assert_array_equal(err, -post)
    ends.parent.send_v1(("exit",))
    t.join(5)
    assert ends.child.protocol == 1


@pytest.mark.parametrize("version", [1, 2])
def test_fsa_and_remote_errors_on_both_protocols(ends, version):
    t, log = run_child(our_child, ends.child)
    assert ends.parent.handshake("parent", protocol=version) == version
    num_states, num_edges, edges, weights = ends.parent.request_fsa("seg")
    assert (num_states, num_edges) == (2, 1)
    assert edges.tolist() == [0, 1, 5] and weights.tolist() == [0.5]
    with pytest.raises(SprintRemoteError, match="boom") as info:
        ends.parent.call("fail")
    assert "Traceback" in info.value.remote_traceback
    exchange(ends.parent)  # the link survives the remote error
    ends.parent.send_exit()
    t.join(5)


@pytest.mark.parametrize("version", [1, 2])
def test_error_signal_of_the_wrong_shape_is_a_protocol_error(ends, version):
    def liar(link, log):
        def loss(reply, name, seg_len, post):
            reply.loss(0.0, np.zeros((seg_len + 1, 3), np.float32))

        CommandServer(link, {"get_loss_and_error_signal": loss}, name="liar").serve()

    t, _ = run_child(liar, ends.child)
    ends.parent.handshake("p", protocol=version)
    ends.parent.send_loss_request("s", np.zeros((2, 3), np.float32))
    with pytest.raises(ProtocolError, match=r"does not match the posteriors' shape \(2, 3\)"):
        ends.parent.recv_loss_result((2, 3))
    ends.parent.send_exit()
    t.join(5)


def test_loss_request_slices_land_in_the_batch_output(ends):
    t, _ = run_child(our_child, ends.child)
    ends.parent.handshake("p")
    batch = np.random.default_rng(5).random((6, 3, 4), dtype=np.float32)
    out = np.zeros_like(batch)
    for b, length in enumerate([6, 2, 4]):
        ends.parent.send_loss_request(f"s{b}", batch[:length, b])
        loss, err = ends.parent.recv_loss_result((length, 4), out=out[:length, b])
        assert np.shares_memory(err, out)
        assert loss == pytest.approx(float(batch[:length, b].sum()), rel=1e-6)
    np.testing.assert_array_equal(out[:6, 0], -batch[:6, 0])
    np.testing.assert_array_equal(out[:2, 1], -batch[:2, 1])
    assert not out[2:, 1].any() and not out[4:, 2].any()
    ends.parent.send_exit()
    t.join(5)


def test_a_huge_memo_index_allocates_nothing():
    # PROTO 4, LONG_BINPUT 2**31 - 1 on an empty tuple: the C unpickler would size its memo to that
    body = b"\x80\x04)r\xff\xff\xff\x7f."
    with pytest.raises(ProtocolError, match="must be a tuple starting with a str"):
        protocol.decode_v1(struct.pack("<i", len(body)) + body)


def test_array_placeholders_with_a_real_shape_are_refused():
    class Placeholder:
        def __reduce__(self):
            return v1._reconstruct, (np.ndarray, (2**40,), b"b")

    data = pickle.dumps(("ok", Placeholder()), protocol=4)
    with pytest.raises(ProtocolError, match=r"shape \(0,\)"):
        protocol.decode_v1(struct.pack("<i", len(data)) + data)


def test_codecs_encode_is_limited_to_latin1():
    data = pickle.dumps(("ok", _Evil(__import__("codecs").encode, "abc", "rot13")), protocol=4)
    data = data.replace(b"codecs", b"_codecs") if b"_codecs" not in data else data
    with pytest.raises(ProtocolError):
        protocol.decode_v1(struct.pack("<i", len(data)) + data)


def test_a_bytearray_claiming_gigabytes_allocates_nothing():
    # PROTO 5, BYTEARRAY8 of 3 GB with 3 bytes behind it (the stock loader would allocate first)
    body = b"\x80\x05\x96" + struct.pack("<Q", 3 * 2**30) + b"abc."
    with pytest.raises(ProtocolError, match="claims a bytearray of 3221225472 bytes"):
        protocol.decode_v1(struct.pack("<i", len(body)) + body)


def test_a_real_bytearray_still_decodes():
    data = pickle.dumps(("ok", bytearray(b"xyz")), protocol=5)
    assert protocol.decode_v1(struct.pack("<i", len(data)) + data) == ("ok", bytearray(b"xyz"))


def test_a_malformed_dtype_state_is_refused_before_numpy_sees_it():
    # numpy's dtype.__setstate__ crashes the interpreter on this state; the reader must refuse it
    class Evil:
        def __reduce__(self):
            return np.dtype, ("f4", False, True), (3, "<", 20046, -33554433, -1, 0)

    data = pickle.dumps(("ok", Evil()), protocol=4)
    with pytest.raises(ProtocolError, match="not numpy's for float32|malformed v1 dtype state"):
        protocol.decode_v1(struct.pack("<i", len(data)) + data)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<u4", ">i8", "f8", "u1"])
def test_numpy_pickles_of_arrays_in_any_byte_order_decode(dtype):
    arr = np.arange(6, dtype=dtype).reshape(2, 3)
    for proto in (2, 4, 5):
        data = pickle.dumps(("ok", arr, arr.dtype), protocol=proto)
        _, back, dt = protocol.decode_v1(struct.pack("<i", len(data)) + data)
        _, ref, ref_dt = pickle.loads(data)  # the stock unpickler is the reference (numpy's own quirks included)
        assert back.dtype == ref.dtype and dt == ref_dt == arr.dtype
        np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize(
    "state,message",
    [
        ((1, (2, 3), np.dtype("f4"), False, b"\0" * 8), "needs 24 bytes, got 8"),
        ((1, (-1,), np.dtype("f4"), False, b""), "malformed v1 array state"),
        ((2, (1,), np.dtype("f4"), False, b"\0" * 4), "malformed v1 array state"),
        ((1, (1,), np.dtype("f4"), False, [1.0]), "must be bytes"),
        ((1, (1,)), "must be (version, shape, dtype, is_fortran, data)"),
    ],
)
def test_malformed_array_states_are_refused(state, message):
    class Evil:
        def __reduce__(self):
            return v1._reconstruct, (np.ndarray, (0,), b"b"), state

    data = pickle.dumps(("ok", Evil()), protocol=4)
    with pytest.raises(ProtocolError, match=re.escape(message)):
        protocol.decode_v1(struct.pack("<i", len(data)) + data)
