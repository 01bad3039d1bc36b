"""The framing core of protocol v2, on both twins (compiled and pure Python)."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sprint_control.errors import ProtocolError, SprintTimeoutError, TruncatedFrameError
from sprint_control.wire import _framing_py, framing
from sprint_control.wire import constants as _wire

HERE = os.path.dirname(os.path.abspath(__file__))
HDR = _wire.HEADER_STRUCT


def raw_header(
    magic=b"SCF2", version=2, msg_type=1, dtype=1, ndim=2, flags=0, name_len=0, payload_len=24,
    value=0.0, seq=0, shape=(2, 3, 0),
):
    return HDR.pack(magic, version, msg_type, dtype, ndim, flags, name_len, payload_len, value, seq, *shape)


# -- the public API is the same on both implementations ------------------------------------------


def test_both_implementations_offer_the_fixed_api(framing_impl):
    for name in framing.API:
        assert hasattr(framing_impl, name), f"{framing_impl.__name__} lacks {name}"
    assert framing_impl.IMPLEMENTATION in ("cython", "python")


def test_compiled_core_is_active_unless_pure_python_is_forced():
    from sprint_control import _env as _impl

    expected = "python" if _impl.pure_python_forced() else "cython"
    assert framing.IMPLEMENTATION == expected


# -- the header, byte for byte ---------------------------------------------------------------------


def test_header_layout_matches_the_documented_offsets(framing_impl):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    frame = framing_impl.encode_frame(2, "ab", arr, value=-1.25, seq=7, flags=1)
    assert frame[0:4] == b"SCF2"
    assert frame[4] == 2 and frame[5] == 2 and frame[6] == 1 and frame[7] == 2
    assert struct.unpack_from("<I", frame, 8)[0] == 1  # flags
    assert struct.unpack_from("<I", frame, 12)[0] == 2  # name_len
    assert struct.unpack_from("<Q", frame, 16)[0] == 24  # payload_len
    assert struct.unpack_from("<d", frame, 24)[0] == -1.25
    assert struct.unpack_from("<Q", frame, 32)[0] == 7
    assert struct.unpack_from("<3Q", frame, 40) == (2, 3, 0)
    assert frame[64:66] == b"ab" and frame[66:72] == bytes(6)  # name, then padding to 8
    assert frame[72:] == arr.tobytes()


def test_both_twins_encode_identical_bytes():
    pytest.importorskip("sprint_control.wire._framing")
    from sprint_control.wire import _framing

    for name, arr in [("", None), ("seg/ü", np.ones((3, 5), np.float32)), ("x" * 9, np.arange(4, dtype=np.uint32))]:
        a = _framing.encode_frame(1, name, arr, value=2.5, seq=11)
        b = _framing_py.encode_frame(1, name, arr, value=2.5, seq=11)
        assert a == b


# -- round trips in memory (hypothesis) ------------------------------------------------------------

arrays = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.uint32]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=17),
    ),
    hnp.arrays(dtype=np.float64, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=arrays, name=st.text(max_size=40), value=st.floats(allow_nan=False), seq=st.integers(0, 2**64 - 1))
def test_encode_decode_round_trip_is_bit_identical(framing_impl, arr, name, value, seq):
    frame = framing_impl.encode_frame(2, name, arr, value=value, seq=seq)
    header, back = framing_impl.decode_frame(frame)
    assert header.name == name and header.value == value and header.seq == seq
    assert header.shape == arr.shape and back.dtype == arr.dtype
    assert back.tobytes() == arr.tobytes()


def test_noncontiguous_input_is_converted_once_and_counted(framing_impl):
    arr = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]  # rows not contiguous
    before = framing_impl.stats["conversions"]
    header, back = framing_impl.decode_frame(framing_impl.encode_frame(1, "n", arr))
    assert framing_impl.stats["conversions"] == before + 1
    np.testing.assert_array_equal(back, arr)


def test_row_strided_slices_are_sent_without_conversion(framing_impl):
    batch = np.random.default_rng(0).random((5, 3, 7), dtype=np.float32)
    before = framing_impl.stats["conversions"]
    header, back = framing_impl.decode_frame(framing_impl.encode_frame(1, "s", batch[:4, 1]))
    assert framing_impl.stats["conversions"] == before
    np.testing.assert_array_equal(back, batch[:4, 1])


def test_byte_swapped_input_is_converted_to_little_endian(framing_impl):
    arr = np.arange(6, dtype=">f4").reshape(2, 3)
    header, back = framing_impl.decode_frame(framing_impl.encode_frame(1, "", arr))
    assert back.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(back, arr.astype("<f4"))


def test_unsupported_dtype_and_ndim_are_refused(framing_impl):
    with pytest.raises(TypeError, match="cannot be framed"):
        framing_impl.encode_frame(1, "", np.zeros(3, dtype=np.complex64))
    with pytest.raises(ValueError, match="at most 3"):
        framing_impl.encode_frame(1, "", np.zeros((1, 1, 1, 1), dtype=np.float32))


# -- malformed headers: the error type and message --------------------------------------------------

BAD_HEADERS = [
    (raw_header(magic=b"XXXX"), "bad frame magic"),
    (raw_header(magic=b"\x80\x04\x95\x00"), "protocol v1"),
    (raw_header(version=3), "unknown frame version 3"),
    (raw_header(msg_type=0), "unknown message type 0"),
    (raw_header(msg_type=99), "unknown message type 99"),
    (raw_header(dtype=42), "unknown dtype code 42"),
    (raw_header(ndim=4), "at most 3 dimensions"),
    (raw_header(flags=0x80), "unknown flag bits 0x80"),
    (raw_header(name_len=10**9), "exceeds the limit"),
    (raw_header(payload_len=2**62, shape=(2**30, 2**30, 0)), "exceeds the limit"),
    (raw_header(shape=(2, 3, 4)), "non-zero entries beyond ndim 2"),
    (raw_header(payload_len=20), "does not match shape (2, 3)"),
    (raw_header(dtype=0, ndim=1, payload_len=0, shape=(0, 0, 0)), "frame without dtype"),
    (raw_header(payload_len=0, shape=(0, 2**63, 0)), "has a side larger than the payload limit"),
]


@pytest.mark.parametrize("raw,message", BAD_HEADERS)
def test_malformed_headers_raise_protocol_error(framing_impl, raw, message):
    with pytest.raises(ProtocolError, match=re.escape(message)):
        framing_impl.decode_frame(raw + bytes(64))


@pytest.mark.parametrize("raw,message", BAD_HEADERS)
def test_malformed_headers_on_a_pipe_raise_before_reading_the_payload(framing_impl, raw, message):
    r, w = os.pipe()
    try:
        os.write(w, raw)
        with pytest.raises(ProtocolError, match=re.escape(message)):
            framing_impl.read_frame(r, timeout=5)
    finally:
        os.close(r)
        os.close(w)


def test_a_shape_whose_product_wraps_around_64_bits_is_refused(framing_impl):
    # (2**62, 4) float32 is 2**66 bytes, which wraps to 0: a naive product would match payload_len 0
    raw = raw_header(payload_len=0, shape=(2**62, 4, 0))
    with pytest.raises(ProtocolError, match=re.escape("does not match shape")):
        framing_impl.decode_frame(raw, max_payload=2**63)


def test_a_terabyte_claim_allocates_nothing(framing_impl):
    raw = raw_header(payload_len=2**40, shape=(2**19, 2**19, 0))
    with pytest.raises(ProtocolError, match="exceeds the limit of"):
        framing_impl.decode_frame(raw)
    # with the limit lifted the shape check still holds, and still nothing is allocated
    with pytest.raises(TruncatedFrameError):
        framing_impl.decode_frame(raw, max_payload=2**41)


def test_name_that_is_not_utf8(framing_impl):
    raw = raw_header(name_len=2, payload_len=0, dtype=0, ndim=0, shape=(0, 0, 0)) + b"\xff\xfe" + bytes(6)
    with pytest.raises(ProtocolError, match="not valid UTF-8"):
        framing_impl.decode_frame(raw)


@pytest.mark.parametrize("cut", [0, 10, 63, 64, 66, 72, 100])
def test_truncated_frames_in_memory(framing_impl, cut):
    frame = framing_impl.encode_frame(1, "ab", np.ones((2, 4), np.float32))
    with pytest.raises(TruncatedFrameError):
        framing_impl.decode_frame(frame[:cut])


def test_trailing_bytes_are_refused(framing_impl):
    frame = framing_impl.encode_frame(7)
    with pytest.raises(ProtocolError, match="trailing bytes"):
        framing_impl.decode_frame(frame + b"\0")


# -- pipes -----------------------------------------------------------------------------------------


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _write_in_thread(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize(
    "cut,what,expected,got",
    [(0, None, 0, 0), (30, "frame header", 64, 30), (66, "segment name", 3, 2), (80, "payload", 40, 8)],
)
def test_eof_inside_a_frame_says_what_was_expected(framing_impl, pipe, cut, what, expected, got):
    r, w = pipe
    frame = framing_impl.encode_frame(1, "abc", np.ones((2, 5), np.float32))
    os.write(w, frame[:cut])
    os.close(w)
    if what is None:
        with pytest.raises(EOFError, match="closed by the peer") as info:
            framing_impl.read_frame(r)
        assert not isinstance(info.value, ProtocolError)
        return
    with pytest.raises(TruncatedFrameError) as info:
        framing_impl.read_frame(r)
    assert (info.value.what, info.value.expected, info.value.got) == (what, expected, got)
    assert f"expected {expected} bytes, got {got}" in str(info.value)


def test_read_into_a_strided_slice_of_a_batch(framing_impl, pipe):
    r, w = pipe
    src = np.random.default_rng(1).random((6, 9), dtype=np.float32)
    out = np.zeros((6, 4, 9), np.float32)
    t = _write_in_thread(lambda: framing_impl.write_frame(w, 2, "x", src))
    header, arr = framing_impl.read_frame(r, out=out[:, 2])
    t.join()
    assert arr is not None and np.shares_memory(arr, out)
    np.testing.assert_array_equal(out[:, 2], src)
    assert not out[:, [0, 1, 3]].any()


def test_out_of_the_wrong_shape_drains_the_payload_and_keeps_the_pipe_in_step(framing_impl, pipe):
    r, w = pipe
    framing_impl.write_frame(w, 2, "a", np.ones((2, 3), np.float32))
    framing_impl.write_frame(w, 2, "b", np.full((1, 1), 5, np.float32))
    with pytest.raises(ProtocolError, match=r"expected shape \(3, 3\)"):
        framing_impl.read_frame(r, out=np.empty((3, 3), np.float32))
    header, arr = framing_impl.read_frame(r)
    assert header.name == "b" and arr[0, 0] == 5


def test_header_then_payload_in_two_calls(framing_impl, pipe):
    r, w = pipe
    src = np.arange(12, dtype=np.uint32).reshape(3, 4)
    framing_impl.write_frame(w, 4, "fsa", src, value=9.0)
    header = framing_impl.read_header(r)
    assert header.name == "fsa" and header.shape == (3, 4) and header.value == 9.0
    out = np.empty((3, 4), np.uint32)
    assert framing_impl.read_payload(r, header, out=out) is out
    np.testing.assert_array_equal(out, src)


def test_timeout_raises_sprint_timeout_error(framing_impl, pipe):
    r, _w = pipe
    with pytest.raises(SprintTimeoutError):
        framing_impl.read_frame(r, timeout=0.05)


def test_writing_to_a_closed_pipe_raises_broken_pipe(framing_impl, pipe):
    r, w = pipe
    os.close(r)
    with pytest.raises(BrokenPipeError):
        framing_impl.write_frame(w, 1, "x", np.ones((100, 100), np.float32))


def test_a_signal_during_a_blocking_read_runs_its_handler_and_the_read_goes_on(framing_impl, pipe):
    r, w = pipe
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append("alarm"))
    try:
        src = np.arange(10, dtype=np.float32).reshape(2, 5)

        def late_writer():
            time.sleep(0.3)
            framing_impl.write_frame(w, 1, "late", src)

        t = _write_in_thread(late_writer)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        header, arr = framing_impl.read_frame(r)
        t.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen == ["alarm"]
    np.testing.assert_array_equal(arr, src)


def test_blocking_reads_release_the_gil(framing_impl, pipe):
    r, w = pipe
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    reader = threading.Thread(target=lambda: framing_impl.read_frame(r), daemon=True)
    reader.start()
    time.sleep(0.05)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    time.sleep(0.3)
    stop.set()
    spinner.join()
    framing_impl.write_frame(w, 7)
    reader.join(5)
    assert not reader.is_alive()
    assert counter[0] > 1000  # the spinner ran while the reader was blocked


def test_grow_pipe_raises_the_buffer_where_linux_allows(framing_impl, pipe):
    r, w = pipe
    size = framing_impl.grow_pipe(w)
    if sys.platform.startswith("linux"):
        with open("/proc/sys/fs/pipe-max-size") as f:
            assert size == int(f.read())
    else:
        assert size is None


@pytest.mark.parametrize("peer", ["_framing_py", "_framing"])
@pytest.mark.parametrize(
    "shape,dtype", [((0, 9001), np.float32), ((1, 1), np.float32), ((300, 4501), np.float32), ((7, 3), np.uint32)]
)
def test_round_trip_through_another_process(framing_impl, peer, shape, dtype):
    """parent array -> frame -> pipe -> child process -> pipe -> array, bit for bit."""
    if peer == "_framing":
        pytest.importorskip("sprint_control.wire._framing")
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_pipe_peer.py"), peer, str(p2c_r), str(c2p_w)],
        pass_fds=(p2c_r, c2p_w),
    )
    os.close(p2c_r)
    os.close(c2p_w)
    try:
        rng = np.random.default_rng(42)
        if dtype == np.float32:
            arr = rng.standard_normal(shape).astype(dtype)
            arr.flat[:3] = [np.nan, np.inf, -0.0][: arr.size]
        else:
            arr = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(dtype)
        name = "corpus/ŝegment/1"
        t = _write_in_thread(lambda: framing_impl.write_frame(p2c_w, 1, name, arr, value=3.5, seq=5))
        header, back = framing_impl.read_frame(c2p_r, timeout=60)
        t.join()
        assert header.name == name and header.value == 3.5 and header.seq == 5
        assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes()
    finally:
        os.close(p2c_w)
        proc.wait(timeout=30)
        os.close(c2p_r)
    assert proc.returncode == 0


# -- read_answer: the parent's receive path ----------------------------------------------------------


def _answer_pipe(framing_impl, *frames):
    r, wfd = os.pipe()
    for frame in frames:
        os.write(wfd, frame)
    os.close(wfd)
    return r


@pytest.mark.parametrize("seq,msg_type,shape,lands", [
    (7, 2, (2, 3), True),  # the answer: into out
    (6, 2, (2, 3), False),  # another request's answer
    (7, 2, (3, 2), False),  # another shape
    (-1, 2, (2, 3), True),  # any sequence number
])
def test_read_answer_uses_out_only_for_the_awaited_answer(framing_impl, seq, msg_type, shape, lands):
    arr = np.arange(6, dtype=np.float32).reshape(shape)
    r = _answer_pipe(framing_impl, framing_impl.encode_frame(msg_type, "seg", arr, value=1.5, seq=7))
    out = np.full((2, 3), -1.0, np.float32)
    try:
        header, got = framing_impl.read_answer(r, out, 2, seq, timeout=2.0)
    finally:
        os.close(r)
    assert (header.seq, header.name, header.value, header.shape) == (7, "seg", 1.5, shape)
    assert (got is out) == lands
    np.testing.assert_array_equal(got, arr)
    if not lands:
        assert (out == -1.0).all()


def test_read_answer_reads_an_error_frame_into_a_fresh_array(framing_impl):
    text = np.frombuffer(b"Traceback ...", np.uint8)
    r = _answer_pipe(framing_impl, framing_impl.encode_frame(_wire.MSG_ERROR, "seg", text, seq=0))
    out = np.full((2, 3), -1.0, np.float32)
    try:
        header, got = framing_impl.read_answer(r, out, _wire.MSG_LOSS_RESULT, 7, timeout=2.0)
    finally:
        os.close(r)
    assert header.msg_type == _wire.MSG_ERROR and bytes(got) == b"Traceback ..."
    assert (out == -1.0).all()


def test_read_answer_then_the_next_frame_is_in_step(framing_impl):
    a = np.ones((2, 3), np.float32)
    r = _answer_pipe(framing_impl, framing_impl.encode_frame(2, "x" * 300, a, seq=1),
                     framing_impl.encode_frame(2, "y", 2 * a, seq=2))
    try:
        out = np.empty((2, 3), np.float32)
        first = framing_impl.read_answer(r, out, 2, 1, timeout=2.0)
        second = framing_impl.read_answer(r, None, 2, 2, timeout=2.0)
    finally:
        os.close(r)
    assert first[0].name == "x" * 300 and first[1] is out and (out == 1).all()
    assert second[0].name == "y" and (second[1] == 2).all()
