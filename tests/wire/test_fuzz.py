"""Fuzzing the two readers in the normal suite (bounded): whatever bytes arrive, the frame decoder
and the safe v1 reader either decode them or raise ProtocolError / EOFError, nothing else, and
never run code. The long-running coverage-guided harness is tests/fuzz/fuzz_readers.py."""

from __future__ import annotations

import os
import struct
import threading

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprint_control.errors import ProtocolError
from sprint_control.wire import constants as _wire
from sprint_control.wire import protocol

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
GOLDEN = {}
for _name in sorted(os.listdir(FIXTURES)):
    if _name.endswith(".bin"):
        with open(os.path.join(FIXTURES, _name), "rb") as _f:
            GOLDEN[_name] = _f.read()
V2 = [v for k, v in GOLDEN.items() if k.startswith("v2_")]
V1 = [v for k, v in GOLDEN.items() if k.startswith("v1_")]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, seeds):
    """A golden message with a few bytes flipped, cut or appended: close enough to pass early checks."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


def _check_frame(frame_impl, data: bytes) -> None:
    try:
        header, arr = frame_impl.decode_frame(data)
    except (ProtocolError, EOFError):
        return
    # a frame that decodes is self-consistent
    if arr is not None:
        assert arr.nbytes == header.payload_len and arr.shape == header.shape
    assert len(data) >= _wire.HEADER_SIZE + header.payload_len


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), mutated(V2)))
def test_frame_decoder_raises_only_protocol_or_eof_errors(framing_impl, data):
    _check_frame(framing_impl, data)


@SETTINGS
@given(
    fields=st.tuples(
        st.sampled_from([b"SCF2", b"SCF3", b"\x00\x00\x00\x00"]),
        st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
        st.integers(0, 2**32 - 1), st.integers(0, 300), st.integers(0, 2**64 - 1),
        st.floats(allow_nan=True), st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
    ),
    tail=st.binary(max_size=300),
)
def test_structured_headers_never_crash_the_decoder(framing_impl, fields, tail):
    _check_frame(framing_impl, _wire.HEADER_STRUCT.pack(*fields) + tail)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), mutated(V2)))
def test_frame_reader_on_a_pipe_raises_only_protocol_or_eof_errors(framing_impl, data):
    r, w = os.pipe()
    try:
        writer = threading.Thread(target=lambda: (os.write(w, data) if data else None, os.close(w)))
        writer.start()
        try:
            while True:
                framing_impl.read_frame(r, timeout=10)
        except (ProtocolError, EOFError):
            pass
        writer.join()
    finally:
        os.close(r)


def _check_v1(data: bytes) -> None:
    try:
        msg = protocol.decode_v1(data)
    except (ProtocolError, EOFError):
        return
    assert isinstance(msg, tuple) and isinstance(msg[0], str)
    for item in msg:  # only plain data and numeric arrays come out
        if isinstance(item, np.ndarray):
            assert not item.dtype.hasobject


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), mutated(V1)))
def test_safe_v1_reader_raises_only_protocol_or_eof_errors(data):
    _check_v1(data)


@SETTINGS
@given(body=st.binary(min_size=1, max_size=200))
def test_safe_v1_reader_on_random_pickles(body):
    _check_v1(struct.pack("<i", len(body)) + body)
