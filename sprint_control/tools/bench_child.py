"""The small pipe child of ``sprint-control bench`` (``python -m sprint_control.tools.bench
--pipe-child MODE READ_FD WRITE_FD``): the wire's command server for v1/v2, or bare ``readv``/``writev``
of the same bytes for the baseline. Its "criterion" is ``derive_error_signal``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence

import numpy as np

from ..wire import constants as w
from ..wire import framing
from ..wire.protocol import ChildLink, CommandServer

__all__ = ["CHILD_TIMEOUT", "derive_error_signal", "write_all", "read_all", "child_main"]

#: Seconds a bench peer waits for the other end (a round trip of the largest size takes well under one).
CHILD_TIMEOUT = 120.0


def derive_error_signal(posteriors: np.ndarray) -> float:
    """The child's "criterion": negates the first frame in place and returns the loss (number of frames).

    Cheap on purpose, so that a round trip measures the transport and not arithmetic.
    """
    if posteriors.shape[0]:
        np.negative(posteriors[:1], out=posteriors[:1])
    return float(posteriors.shape[0])


def write_all(fd: int, buffers: Sequence) -> None:
    """writev until every byte is out; waits for room on a non-blocking fd (``ParentLink`` makes the
    parent's write end non-blocking when it has a timeout)."""
    views = [memoryview(b).cast("B") for b in buffers]
    views = [v for v in views if len(v)]
    poller = None
    while views:
        try:
            n = os.writev(fd, views[:1024])
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            poller.poll(CHILD_TIMEOUT * 1000)
            continue
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def read_all(fd: int, buffers: Sequence) -> bool:
    """Fills every buffer; False on EOF before the first byte, EOFError on EOF inside."""
    views = [memoryview(b).cast("B") for b in buffers]
    views = [v for v in views if len(v)]
    first = True
    while views:
        n = os.readv(fd, views)
        if n == 0:
            if first:
                return False
            raise EOFError("pipe closed inside a message")
        first = False
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return True


def _child_link(read_fd: int, write_fd: int, v1_writer: str) -> int:
    """The child for v1/v2: the wire's command server with one handler."""
    link = ChildLink(read_fd, write_fd, returnn_style=v1_writer == "returnn")

    def loss(reply, seg_name, _seg_len, posteriors):
        out = reply.destination
        if out is None:
            reply.loss(derive_error_signal(posteriors), posteriors)
        else:  # over shared memory the posteriors are the parent's: leave them, derive in the answer's place
            np.copyto(out, posteriors)
            reply.loss(derive_error_signal(out), out)

    try:
        CommandServer(link, {"get_loss_and_error_signal": loss}, name="sprint_control.tools.bench").serve()
    finally:
        link.close()
    return 0


def _child_bare(read_fd: int, write_fd: int) -> int:
    """The child for the baseline: bare readv/writev of [v2 header, name + padding, payload],
    into one buffer allocated once and grown when needed."""
    framing.grow_pipe(read_fd)
    framing.grow_pipe(write_fd)
    head = bytearray(w.HEADER_SIZE)
    body = np.empty(0, dtype=np.uint8)
    while True:
        if not read_all(read_fd, [head]):
            return 0
        fields = w.HEADER_STRUCT.unpack(head)
        name_len, payload_len, shape = fields[6], fields[7], fields[10:13]
        skip = name_len + w.name_padding(name_len)
        if body.nbytes < skip + payload_len:
            body = np.empty(skip + payload_len + 64, dtype=np.uint8)
        view = body[: skip + payload_len]
        read_all(read_fd, [view])
        if payload_len:
            derive_error_signal(body[skip : skip + payload_len].view(np.float32).reshape(shape[0], shape[1]))
        write_all(write_fd, [head, view])


def child_main(argv: Sequence[str]) -> int:
    mode, read_fd, write_fd = argv[0], int(argv[1]), int(argv[2])
    v1_writer = argv[3] if len(argv) > 3 else "returnn"
    if mode == "bare":
        return _child_bare(read_fd, write_fd)
    return _child_link(read_fd, write_fd, v1_writer)
