"""What both ends of a parent/child connection share: two pipe fds, a timeout, v1 messages and v2
frames, the protocol in use.

``ParentLink`` (``parent_link``) asks, ``ChildLink`` (``child_link``) answers; this base class
holds no request or answer state of either.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import select
import time
from typing import Any, Optional

import numpy as np

from ..errors import ProtocolError, SprintTimeoutError, TruncatedFrameError
from . import constants as w
from . import framing, shm
from ._nosigpipe import guarded
from .limits import v1_message_limit
from .v1 import LENGTH, encode_v1, unpickle_v1

__all__ = ["PROTOCOL_V1", "PROTOCOL_V2", "SUPPORTED_PROTOCOLS", "LinkBase"]

PROTOCOL_V1 = 1
PROTOCOL_V2 = w.VERSION
SUPPORTED_PROTOCOLS = (PROTOCOL_V1, PROTOCOL_V2)
#: How much of an oversized v1 message is read (and dropped) at a time.
_DRAIN_CHUNK = 1 << 20


def read_exact(fd: int, n: int, what: str) -> bytearray:
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    while got < n:
        r = os.readv(fd, [mv[got:]])
        if r == 0:
            if got == 0 and what == "v1 length prefix":
                raise EOFError("pipe closed by the peer (no further message)")
            raise TruncatedFrameError(what, n, got)
        got += r
    return buf


def discard_exact(fd: int, n: int, what: str) -> None:
    """Reads ``n`` bytes and drops them, a chunk at a time (never ``n`` bytes of memory)."""
    buf = bytearray(min(n, _DRAIN_CHUNK))
    mv = memoryview(buf)
    got = 0
    while got < n:
        r = os.readv(fd, [mv[: min(len(buf), n - got)]])
        if r == 0:
            raise TruncatedFrameError(what, n, got)
        got += r


def write_all(fd: int, data, timeout: Optional[float] = None) -> None:
    """Writes all of ``data``; with ``timeout`` (the fd is then non-blocking, see ``LinkBase.timeout``)
    the whole write must be done within that many seconds, else SprintTimeoutError. SIGPIPE is
    blocked in this thread while it writes: a reader that is gone is ``BrokenPipeError``."""
    guarded(_write_all, fd, data, timeout)


def _write_all(fd: int, data, timeout: Optional[float]) -> None:
    mv = memoryview(data).cast("B")
    if timeout is None:
        while mv:
            mv = mv[os.write(fd, mv) :]
        return
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while mv:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise SprintTimeoutError(
                f"the peer read nothing for {timeout} s: {len(mv)} of {len(data)} bytes of a v1 message unsent"
            )
        try:
            mv = mv[os.write(fd, mv) :]
        except BlockingIOError:  # another writer filled the pipe between poll and write
            continue


def _set_nonblocking(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_NONBLOCK) if on else (flags & ~os.O_NONBLOCK))


class LinkBase:
    """One end of a parent/child connection: reads from ``read_fd``, writes to ``write_fd``.

    ``protocol`` starts at 1 and becomes 2 after a successful negotiation. ``max_payload`` bounds
    what a received message may announce; ``timeout`` (seconds, None: wait forever) bounds each
    read of an answer and each write: while it is set, the write end is non-blocking, since a
    blocking ``writev`` of a large frame waits for the reader however long that takes.
    ``returnn_style`` writes v1 arrays as RETURNN does (for interop fixtures and benchmarks).
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        max_payload: int = w.DEFAULT_MAX_PAYLOAD,
        timeout: Optional[float] = None,
        returnn_style: bool = False,
    ):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.protocol = PROTOCOL_V1
        self.max_payload = max_payload
        self.returnn_style = returnn_style
        self._timeout: Optional[float] = None
        self._write_nonblocking = False
        self.timeout = timeout
        self.peer_capabilities: dict[str, Any] = {}
        #: the sequence number of the last v2 frame this end sent
        self.seq = 0
        #: the shared region negotiated for this link (protocol 2 option), else None
        self.shm: Optional[shm.SharedRegion] = None
        framing.grow_pipe(write_fd)
        framing.grow_pipe(read_fd)

    @property
    def timeout(self) -> Optional[float]:
        """Seconds that each read of an answer and each write may take (None: no bound)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._timeout = value
        bounded = value is not None
        if bounded != self._write_nonblocking and self.write_fd >= 0:
            _set_nonblocking(self.write_fd, bounded)  # one fcntl when the mode changes, none per message
            self._write_nonblocking = bounded

    # -- v1 ---------------------------------------------------------------------------------------

    def send_v1(self, message: tuple) -> None:
        write_all(self.write_fd, encode_v1(message, returnn_style=self.returnn_style), self._timeout)

    def recv_v1(self) -> tuple:
        """The next v1 message. One whose length exceeds the limit is refused before its body is
        read (the stream is then out of step: see ``ChildLink`` for the end that drains it)."""
        size = self._recv_v1_length()
        if size > v1_message_limit(self.max_payload):
            raise ProtocolError(f"v1 message of {size} bytes exceeds the limit of {self.max_payload} bytes")
        return unpickle_v1(read_exact(self.read_fd, size, "v1 message"))

    def _recv_v1_length(self) -> int:
        if self.timeout is not None:
            self._wait_readable()
        size: int
        (size,) = LENGTH.unpack(read_exact(self.read_fd, 4, "v1 length prefix"))
        if size <= 0:
            raise ProtocolError(f"v1 length prefix {size} is not positive")
        return size

    def _wait_readable(self) -> None:
        assert self.timeout is not None
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        if not poller.poll(int(self.timeout * 1000) + 1):
            raise SprintTimeoutError(f"no answer from the peer within {self.timeout} s")

    # -- v2 ---------------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send_control(self, message: tuple, seq: int) -> None:
        payload = np.frombuffer(pickle.dumps(message, protocol=4), dtype=np.uint8)
        framing.write_frame(self.write_fd, w.MSG_CONTROL, "", payload, seq=seq, timeout=self._timeout)

    def _read_frame(self, out=None):
        return framing.read_frame(self.read_fd, out=out, max_payload=self.max_payload, timeout=self.timeout)

    @staticmethod
    def _control_of(arr) -> tuple:
        return unpickle_v1(arr.tobytes() if arr is not None else b"")

    def close(self) -> None:
        """Closes both pipe ends (idempotent)."""
        self.shm = None
        for attr in ("read_fd", "write_fd"):
            fd = getattr(self, attr)
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)
