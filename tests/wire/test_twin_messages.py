"""The compiled framing core and its pure-Python twin fail alike: for every refusal the same exception
type and the same message, word for word (a caller's error handling and logs must not depend on which
one is built)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_framing import BAD_HEADERS  # the folder is on sys.path, as for every test module

from sprint_control.wire import _framing_py
from sprint_control.wire import constants as w

core = pytest.importorskip("sprint_control.wire._framing", reason="the compiled framing core is not built")

LOSS = 1  # a message type that carries an array


def _read(impl, data: bytes, **kwargs):
    """``impl.read_frame`` on a pipe that holds ``data`` and then ends."""
    r, wfd = os.pipe()
    os.write(wfd, data)
    os.close(wfd)
    try:
        return impl.read_frame(r, timeout=2.0, **kwargs)
    finally:
        os.close(r)


def _answer(impl, data: bytes, out=None):
    """``impl.read_answer`` (into a (3, 4) float32 ``out``) on a pipe that holds ``data`` and then ends."""
    r, wfd = os.pipe()
    os.write(wfd, data)
    os.close(wfd)
    try:
        return impl.read_answer(r, np.empty((3, 4), np.float32) if out is None else out, LOSS, 0, timeout=2.0)
    finally:
        os.close(r)


def _write(impl, array):
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        return impl.write_frame(fd, LOSS, "x", array)
    finally:
        os.close(fd)


def _closed_fd() -> int:
    r, wfd = os.pipe()
    os.close(r)
    os.close(wfd)
    return wfd


def _frame(impl, name="seg", array=None):
    return impl.encode_frame(LOSS, name, array)


def _read_only(shape) -> np.ndarray:
    out = np.empty(shape, np.float32)
    out.setflags(write=False)
    return out


ROWS = np.arange(12, dtype=np.float32).reshape(3, 4)

#: case -> a call that must fail, given the implementation
CASES = {
    "encode: complex array": lambda m: m.encode_frame(LOSS, "x", np.zeros(2, np.complex64)),
    "encode: 4 dimensions": lambda m: m.encode_frame(LOSS, "x", np.zeros((1, 1, 1, 1), np.float32)),
    "encode: name of the wrong type": lambda m: m.encode_frame(LOSS, 5, None),
    "write: an object array": lambda m: _write(m, np.array([None, 1], dtype=object)),
    "write: to a closed fd": lambda m: m.write_frame(_closed_fd(), LOSS, "x", ROWS),
    "decode: truncated": lambda m: m.decode_frame(_frame(m, "ab", ROWS)[:-3]),
    "decode: trailing bytes": lambda m: m.decode_frame(_frame(m, "ab", ROWS) + b"xx"),
    "decode: too short for a header": lambda m: m.decode_frame(b"SCF2"),
    "read: end of pipe before a frame": lambda m: _read(m, b""),
    "read: end inside the header": lambda m: _read(m, _frame(m, "ab", ROWS)[:10]),
    "read: end inside the name": lambda m: _read(m, _frame(m, "abcdef", ROWS)[:w.HEADER_SIZE + 3]),
    "read: end inside the payload": lambda m: _read(m, _frame(m, "ab", ROWS)[:-5]),
    "read: out of another shape": lambda m: _read(m, _frame(m, "ab", ROWS), out=np.empty((4, 3), np.float32)),
    "read: out of another dtype": lambda m: _read(m, _frame(m, "ab", ROWS), out=np.empty((3, 4), np.float64)),
    "read: out read-only": lambda m: _read(m, _frame(m, "ab", ROWS), out=_read_only((3, 4))),
    "read: out not an array": lambda m: _read(m, _frame(m, "ab", ROWS), out=[[0.0] * 4] * 3),
    "read: out with strided rows": lambda m: _read(m, _frame(m, "ab", ROWS),
                                                   out=np.empty((3, 8), np.float32)[:, ::2]),
    "read: out for a frame without an array": lambda m: _read(m, _frame(m, "ab", None),
                                                              out=np.empty((3, 4), np.float32)),
    "read: out not an array, for a frame without an array": lambda m: _read(m, _frame(m, "ab", None), out=[1.0]),
    "answer: end inside the name": lambda m: _answer(m, _frame(m, "abcdef", ROWS)[:w.HEADER_SIZE + 3]),
    "answer: end inside the payload": lambda m: _answer(m, _frame(m, "ab", ROWS)[:-5]),
    "answer: end before a frame": lambda m: _answer(m, b""),
    "answer: out read-only": lambda m: _answer(m, _frame(m, "ab", ROWS), out=_read_only((3, 4))),
    "answer: a name that is not UTF-8": lambda m: _answer(m, _framing_py.encode_frame(LOSS, "ab", ROWS)
                                                          .replace(b"ab", b"\xff\xfe", 1)),
    "read: a name that is not UTF-8": lambda m: _read(m, _framing_py.encode_frame(LOSS, "ab", ROWS)
                                                      .replace(b"ab", b"\xff\xfe", 1)),
    "read: payload over the caller's limit": lambda m: _read(m, _frame(m, "ab", ROWS), max_payload=8),
    "read: name over the caller's limit": lambda m: _read(m, _frame(m, "abcdef", ROWS), max_name=3),
}


for _i, (_raw, _) in enumerate(BAD_HEADERS):
    CASES[f"read: malformed header {_i}"] = (lambda raw: lambda m: _read(m, raw + bytes(64)))(_raw)
    CASES[f"answer: malformed header {_i}"] = (lambda raw: lambda m: _answer(m, raw + bytes(64)))(_raw)


def _failure(impl, call) -> tuple[str, str]:
    with pytest.raises(Exception) as info:
        call(impl)
    return type(info.value).__name__, str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_and_twin_refuse_with_the_same_error(case):
    assert _failure(core, CASES[case]) == _failure(_framing_py, CASES[case])


def test_a_frame_without_an_array_and_out_says_so():
    kind, message = _failure(core, CASES["read: out for a frame without an array"])
    assert kind == "ProtocolError"
    assert message == "expected an array of shape (3, 4), the frame carries none"
