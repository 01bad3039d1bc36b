"""The framing core of protocol v2 in pure Python: the twin of ``_framing.pyx``.

Same functions, same arguments, same errors as the compiled core (``tests/`` runs every framing
test on both). It still avoids copies: it writes with ``os.writev`` straight from the array's
buffer and reads with ``os.readv`` straight into the destination array.
"""

from __future__ import annotations

import os
import select
import time
from typing import Optional

import numpy as np

from ..errors import ProtocolError, SprintTimeoutError, TruncatedFrameError
from . import constants as w
from ._nosigpipe import guarded

IMPLEMENTATION = "python"

#: Counters of the framing layer (conversions: arrays that had to be copied before sending).
stats = {"conversions": 0}

_IOV_MAX = 1024
_ZERO_PAD = bytes(8)


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + timeout


def _wait(fd: int, events: int, deadline: Optional[float]) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left > 0:
        poller = select.poll()
        poller.register(fd, events)
        if poller.poll(int(left * 1000) + 1):
            return
    raise SprintTimeoutError("timed out waiting on the pipe")


def _advance(bufs: list, i: int, n: int) -> int:
    """After ``n`` bytes moved from ``bufs[i:]``: trims the partly moved buffer in place and returns the
    index of the first one not finished."""
    while n > 0:
        if n >= len(bufs[i]):
            n -= len(bufs[i])
            i += 1
        else:
            bufs[i] = bufs[i][n:]
            n = 0
    return i


def _sendable(array) -> tuple[np.ndarray, int, list]:
    """(array as sent, wire dtype code, list of buffers covering its bytes in C order)."""
    arr = np.asarray(array)
    code = w.wire_dtype_code(arr.dtype)
    if arr.ndim > w.MAX_NDIM:
        raise ValueError(f"arrays with {arr.ndim} dimensions cannot be framed: at most {w.MAX_NDIM}")
    if not arr.dtype.isnative and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder("="))
        stats["conversions"] += 1
    if arr.flags.c_contiguous:
        return arr, code, ([arr.data.cast("B")] if arr.size else [])
    if arr.ndim == 2 and arr.strides[1] == arr.itemsize and arr.shape[0] > 0:
        # rows of a strided matrix (e.g. one sequence of a (time, batch, label) batch): one iovec each
        return arr, code, [row.data.cast("B") for row in arr]
    arr = np.ascontiguousarray(arr)
    stats["conversions"] += 1
    return arr, code, [arr.data.cast("B")]


def _pack_header(msg_type: int, name_b: bytes, arr: Optional[np.ndarray], code: int, value: float, seq: int,
                 flags: int) -> bytes:
    if arr is None:
        shape = (0, 0, 0)
        ndim = 0
        payload_len = 0
        code = w.DTYPE_NONE
    else:
        ndim = arr.ndim
        shape = tuple(arr.shape) + (0,) * (w.MAX_NDIM - ndim)
        payload_len = arr.nbytes
    header = w.HEADER_STRUCT.pack(
        w.MAGIC, w.VERSION, msg_type, code, ndim, flags, len(name_b), payload_len, float(value), seq, *shape
    )
    return header + name_b + _ZERO_PAD[: w.name_padding(len(name_b))]


def encode_frame(msg_type: int, name="", array=None, value: float = 0.0, seq: int = 0, flags: int = 0) -> bytes:
    """The whole frame as bytes (for tests, fixtures and in-memory use; the pipe path is write_frame)."""
    name_b = w.encode_name(name)
    if array is None:
        return _pack_header(msg_type, name_b, None, 0, value, seq, flags)
    arr, code, _ = _sendable(array)
    return _pack_header(msg_type, name_b, arr, code, value, seq, flags) + np.ascontiguousarray(arr).tobytes()


def _unpack_checked(raw, max_payload: int, max_name: int) -> tuple:
    fields = w.HEADER_STRUCT.unpack(raw)
    code = w.check_header_fields(fields, max_payload, max_name)
    if code != w.OK:
        raise w.header_error(code, fields, max_payload, max_name)
    return fields


def _make_header(fields: tuple, name: str) -> w.FrameHeader:
    _m, _v, msg_type, dtype, ndim, flags, _nl, payload_len, value, seq, s0, s1, s2 = fields
    return w.FrameHeader(
        msg_type, flags, name, w.DTYPE_CODES.get(dtype), (s0, s1, s2)[:ndim], payload_len, value, seq
    )


def decode_frame(buffer, max_payload: int = w.DEFAULT_MAX_PAYLOAD, max_name: int = w.DEFAULT_MAX_NAME):
    """Decodes one whole frame held in memory; returns (FrameHeader, ndarray or None).

    The array is a read-only view of ``buffer`` when the payload is aligned, else a copy.
    """
    mv = memoryview(buffer).cast("B")
    if len(mv) < w.HEADER_SIZE:
        raise TruncatedFrameError("frame header", w.HEADER_SIZE, len(mv))
    fields = _unpack_checked(mv[: w.HEADER_SIZE], max_payload, max_name)
    name_len, payload_len = fields[6], fields[7]
    start = w.HEADER_SIZE + name_len + w.name_padding(name_len)
    total = start + payload_len
    if len(mv) < total:
        raise TruncatedFrameError("frame", total, len(mv))
    if len(mv) > total:
        raise ProtocolError(f"{len(mv) - total} trailing bytes after a frame of {total} bytes")
    header = _make_header(fields, w.decode_name(bytes(mv[w.HEADER_SIZE : w.HEADER_SIZE + name_len])))
    if header.dtype is None:
        return header, None
    arr = np.frombuffer(mv[start:total], dtype=header.dtype).reshape(header.shape)
    return header, arr


def write_frame(
    fd: int, msg_type: int, name="", array=None, value: float = 0.0, seq: int = 0, flags: int = 0,
    timeout: Optional[float] = None,
) -> int:
    """Writes one frame to ``fd`` with writev, straight from the array's memory; returns bytes written.
    SIGPIPE is blocked in this thread while it writes: a reader that is gone is ``BrokenPipeError``."""
    return int(guarded(_write_frame, fd, msg_type, name, array, value, seq, flags, timeout))


def _write_frame(fd: int, msg_type: int, name, array, value: float, seq: int, flags: int,
                 timeout: Optional[float]) -> int:
    name_b = w.encode_name(name)
    arr: Optional[np.ndarray] = None
    code, bufs = 0, list[memoryview]()
    if array is not None:
        arr, code, bufs = _sendable(array)
    head = _pack_header(msg_type, name_b, arr, code, value, seq, flags)
    bufs = [memoryview(head)] + bufs
    total = sum(len(b) for b in bufs)
    deadline = _deadline(timeout)
    done = 0
    i = 0
    while i < len(bufs):
        _wait(fd, select.POLLOUT, deadline)
        n = os.writev(fd, bufs[i : i + _IOV_MAX])
        done += n
        i = _advance(bufs, i, n)
    return total


def _read_exact_into(fd: int, bufs: list, what: str, deadline: Optional[float]) -> None:
    """Fills every buffer in ``bufs`` (writable memoryviews) from fd; raises on EOF mid-way."""
    expected = sum(len(b) for b in bufs)
    got = 0
    i = 0
    bufs = [b for b in bufs if len(b)]
    while i < len(bufs):
        _wait(fd, select.POLLIN, deadline)
        n = os.readv(fd, bufs[i : i + _IOV_MAX])
        if n == 0:
            raise TruncatedFrameError(what, expected, got)
        got += n
        i = _advance(bufs, i, n)


def _read_header_fields(fd, max_payload, max_name, deadline):
    raw = bytearray(w.HEADER_SIZE)
    mv = memoryview(raw)
    _wait(fd, select.POLLIN, deadline)
    n = os.readv(fd, [mv])
    if n == 0:
        raise EOFError("pipe closed by the peer (no further frame)")
    if n < w.HEADER_SIZE:
        try:
            _read_exact_into(fd, [mv[n:]], "frame header", deadline)
        except TruncatedFrameError as exc:
            raise TruncatedFrameError("frame header", w.HEADER_SIZE, n + exc.got) from None
    return _unpack_checked(raw, max_payload, max_name)


def read_header(
    fd: int, max_payload: int = w.DEFAULT_MAX_PAYLOAD, max_name: int = w.DEFAULT_MAX_NAME,
    timeout: Optional[float] = None,
) -> w.FrameHeader:
    """Reads and validates a header and the segment name after it; the payload stays in the pipe.

    Raises EOFError when the pipe ends cleanly before the frame, TruncatedFrameError when it ends
    inside it, ProtocolError for a header that breaks the rules (before anything is allocated).
    """
    deadline = _deadline(timeout)
    fields = _read_header_fields(fd, max_payload, max_name, deadline)
    name_len = fields[6]
    tail = bytearray(name_len + w.name_padding(name_len))
    try:
        _read_exact_into(fd, [memoryview(tail)], "segment name", deadline)
    except TruncatedFrameError as exc:
        raise TruncatedFrameError("segment name", name_len, min(exc.got, name_len)) from None
    return _make_header(fields, w.decode_name(bytes(tail[:name_len])))


def _check_out(header: w.FrameHeader, out) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != header.dtype or out.shape != header.shape:
        raise ProtocolError(
            f"received array of shape {header.shape} and dtype {header.dtype},"
            f" expected shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _out_buffers(out: np.ndarray) -> list:
    if out.size == 0:
        return []
    if out.flags.c_contiguous:
        return [out.data.cast("B")]
    if out.ndim == 2 and out.strides[1] == out.itemsize:
        return [memoryview(row).cast("B") for row in out]
    raise ValueError(f"out must be C-contiguous or a matrix with contiguous rows, got strides {out.strides}")


def read_payload(fd: int, header: w.FrameHeader, out=None, timeout: Optional[float] = None):
    """Reads the payload announced by ``header`` into ``out`` (or a fresh array); returns it.

    When ``out`` does not fit the announced shape/dtype the payload is drained (the pipe stays in
    step) and ProtocolError is raised.
    """
    if out is not None and not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if header.dtype is None:
        if out is not None and out.size:
            raise ProtocolError(f"expected an array of shape {out.shape}, the frame carries none")
        return None
    deadline = _deadline(timeout)
    if out is not None:
        try:
            _check_out(header, out)
            bufs = _out_buffers(out)
        except ProtocolError:
            read_payload(fd, header, None, timeout)  # drain, keeps the stream in step
            raise
        _read_exact_into(fd, bufs, "payload", deadline)
        return out
    arr = np.empty(header.shape, dtype=header.dtype)
    _read_exact_into(fd, [arr.data.cast("B")] if arr.size else [], "payload", deadline)
    return arr


def read_frame(
    fd: int, out=None, max_payload: int = w.DEFAULT_MAX_PAYLOAD, max_name: int = w.DEFAULT_MAX_NAME,
    timeout: Optional[float] = None,
):
    """Reads one whole frame; returns (FrameHeader, ndarray or None). See read_header/read_payload."""
    deadline = _deadline(timeout)
    header = read_header(fd, max_payload, max_name, timeout)
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    return header, read_payload(fd, header, out, left)


def read_answer(
    fd: int, out, msg_type: int, seq: int, max_payload: int = w.DEFAULT_MAX_PAYLOAD,
    max_name: int = w.DEFAULT_MAX_NAME, timeout: Optional[float] = None,
):
    """Reads one whole frame, the answer to request ``seq``; returns (FrameHeader, ndarray or None).

    The payload lands in ``out`` when the frame is of type ``msg_type``, carries ``seq`` and an array of
    ``out``'s shape and dtype (any ``seq``, when it is negative); any other frame's payload goes to a
    fresh array, for the caller to judge. Name and payload come with one readv after the header.
    """
    deadline = _deadline(timeout)
    fields = _read_header_fields(fd, max_payload, max_name, deadline)
    header = _make_header(fields, "")
    name_len = fields[6]
    tail = bytearray(name_len + w.name_padding(name_len))
    fits = (isinstance(out, np.ndarray) and header.msg_type == msg_type and (seq < 0 or header.seq == seq)
            and header.dtype is not None and out.dtype == header.dtype and out.shape == header.shape)
    if header.dtype is None:
        arr, bufs = None, []
    elif fits:
        arr = out
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        bufs = _out_buffers(out)
    else:
        arr = np.empty(header.shape, dtype=header.dtype)
        bufs = [arr.data.cast("B")] if arr.size else []
    try:
        _read_exact_into(fd, [memoryview(tail)] + bufs, "frame", deadline)
    except TruncatedFrameError as exc:
        if exc.got < len(tail):
            raise TruncatedFrameError("segment name", name_len, min(exc.got, name_len)) from None
        raise TruncatedFrameError("payload", header.payload_len, exc.got - len(tail)) from None
    return header._replace(name=w.decode_name(bytes(tail[:name_len]))), arr


def grow_pipe(fd: int, size: Optional[int] = None) -> Optional[int]:
    """Raises fd's pipe buffer to ``size`` (default: /proc/sys/fs/pipe-max-size); returns the new
    size, or None where the OS does not allow it (the pipe is then left as it is)."""
    try:
        import fcntl

        setsz = getattr(fcntl, "F_SETPIPE_SZ", 1031)
        getsz = getattr(fcntl, "F_GETPIPE_SZ", 1032)
        if size is None:
            with open("/proc/sys/fs/pipe-max-size") as f:
                size = int(f.read())
        current = fcntl.fcntl(fd, getsz)
        if current >= size:
            return current
        return fcntl.fcntl(fd, setsz, size)
    except (OSError, ValueError, ImportError):
        return None
