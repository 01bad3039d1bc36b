"""The messages between parent and child, protocol v1 (RETURNN's) and v2 (ours), and the switch.

Version 1: a 4-byte little-endian signed length, then a pickle of a tuple. Parent to child
``(cmd, *args)``, child to parent ``("ok", *results)`` or ``("exception", text)``. The reader
here is safe: it resolves only the globals that array messages need (see ``SafeUnpickler``).

Version 2: the binary frames of ``csrc/frame.h`` (``sprint_control.framing``). The hot pair
LOSS_REQUEST / LOSS_RESULT never touches pickle.

Negotiation keeps v1's handshake byte for byte: the parent sends ``("init", name, 1)``; our child
answers ``("ok", name, 1, capabilities)`` (RETURNN's parent ignores the 4th item). Only a parent
that sees ``2`` in ``capabilities["protocols"]`` sends ``("use_protocol", 2, options)``; after the
child's ``("ok", 2, options)`` both ends speak v2. Every other pairing stays on v1.

``Link`` wraps the two pipe ends of one side and offers the request/answer calls of both sides.
"""

from __future__ import annotations

import codecs
import fcntl
import io
import logging
import os
import pickle
import select
import struct
import time
from typing import Any, Optional

import numpy as np

from ..errors import ProtocolError, SprintRemoteError, SprintTimeoutError, TruncatedFrameError
from . import constants as w
from . import framing, shm

__all__ = [
    "PROTOCOL_V1",
    "PROTOCOL_V2",
    "SUPPORTED_PROTOCOLS",
    "SafeUnpickler",
    "encode_v1",
    "decode_v1",
    "array_from_bytes",
    "Link",
]

logger = logging.getLogger("sprint_control.protocol")

PROTOCOL_V1 = 1
PROTOCOL_V2 = 2
SUPPORTED_PROTOCOLS = (PROTOCOL_V1, PROTOCOL_V2)
#: The version number inside the v1 ``init`` message (RETURNN's ``SprintSubprocessInstance.Version``).
INIT_VERSION = 1
#: v1 length prefix is a signed 32-bit int.
V1_MAX_MESSAGE = 2**31 - 1
_LEN = struct.Struct("<i")


# ---------------------------------------------------------------------------------------------
# v1: the safe reader


def array_from_bytes(data, dtype, shape) -> np.ndarray:
    """Rebuilds an array from raw bytes; what RETURNN's ``make_numpy_ndarray_fromstring`` meant.

    RETURNN's own helper calls ``numpy.fromstring`` in binary mode, which numpy 2 removed;
    a v1 reader maps that global here.
    """
    dt = _checked_dtype(dtype)
    shape = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if any(d < 0 for d in shape):
        raise ProtocolError(f"negative array shape {shape} in a v1 message")
    n = 1
    for d in shape:
        n *= d
    if len(data) != n * dt.itemsize:
        raise ProtocolError(
            f"v1 array of shape {shape} and dtype {dt} needs {n * dt.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _checked_dtype(*args, **kwargs) -> np.dtype:
    try:
        dt = np.dtype(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad dtype in a v1 message: {exc}") from None
    if dt.hasobject or dt.kind not in "biufc":
        raise ProtocolError(f"dtype {dt} is not allowed in a v1 message: only numeric arrays are")
    return dt


def _np_function(modules, name):
    for mod in modules:
        try:
            m = __import__(mod, fromlist=[name])
            return getattr(m, name)
        except (ImportError, AttributeError):
            continue
    return None  # pragma: no cover - numpy always has one of them


_reconstruct = _np_function(("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct")
_scalar = _np_function(("numpy._core.multiarray", "numpy.core.multiarray"), "scalar")
_frombuffer = _np_function(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")


def _pickled_dtype(spec, align=False, copy=False) -> np.dtype:
    """``numpy.dtype`` as numpy's own pickles call it: ``(spec, align, copy)`` with bool flags."""
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise ProtocolError(f"bad dtype flags in a v1 message: align={align!r:.20}, copy={copy!r:.20}")
    return _checked_dtype(spec, align, copy)


def _check_array_state(state) -> None:
    """The state numpy's array pickles carry: (1, shape, dtype, is_fortran, raw bytes of that size)."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise ProtocolError("v1 array state must be (version, shape, dtype, is_fortran, data)")
    version, shape, dtype, fortran, raw = state
    if version != 1 or not isinstance(shape, tuple) or not isinstance(fortran, bool):
        raise ProtocolError(f"malformed v1 array state: version {version!r:.20}, shape {shape!r:.60}")
    if not all(type(d) is int and d >= 0 for d in shape) or not isinstance(dtype, np.dtype):
        raise ProtocolError(f"malformed v1 array state: shape {shape!r:.60}, dtype {dtype!r:.40}")
    _checked_dtype(dtype)
    if not isinstance(raw, (bytes, bytearray)):
        raise ProtocolError(f"v1 array data must be bytes, got {type(raw).__name__}")
    n = dtype.itemsize
    for d in shape:
        n *= d
    if len(raw) != n:
        raise ProtocolError(f"v1 array of shape {shape} and dtype {dtype} needs {n} bytes, got {len(raw)}")


def _check_dtype_state(dtype: np.dtype, state) -> None:
    """Only the state numpy writes itself for this dtype in some byte order is let through."""
    order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
    if order not in ("<", ">", "|", "="):
        raise ProtocolError(f"malformed v1 dtype state {state!r:.80}")
    expected = dtype.newbyteorder(order).__reduce__()[2]
    if state != expected:
        raise ProtocolError(f"v1 dtype state {state!r:.80} is not numpy's for {dtype}")


def _safe_frombuffer(buf, dtype, shape, order="C", *args):
    _checked_dtype(dtype)
    return _frombuffer(buf, dtype, shape, order, *args)


def _safe_reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise ProtocolError(f"v1 arrays must be numpy.ndarray, got {cls!r}")
    # numpy pickles an empty placeholder and fills it in __setstate__, which checks the data size;
    # a placeholder with a real shape would be allocated here, before any such check.
    if not isinstance(shape, tuple) or len(shape) != 1 or shape[0] != 0:
        raise ProtocolError(f"v1 array placeholder must have shape (0,), got {shape!r:.60}")
    return _reconstruct(cls, shape, dtype_code)


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise ProtocolError(f"v1 message uses _codecs.encode with {encoding!r}: only latin1 strings are allowed")
    return codecs.encode(obj, encoding, errors)


def _check_arrays(obj, depth: int = 0) -> None:
    """Refuses object or non-numeric arrays anywhere in a decoded message (dtype state is set after
    construction, so it is checked on the result)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.kind not in "biufc":
            raise ProtocolError(f"v1 message carries an array of dtype {obj.dtype}: only numeric arrays are allowed")
    elif isinstance(obj, (tuple, list)) and depth < 4:
        for item in obj:
            _check_arrays(item, depth + 1)
    elif isinstance(obj, dict) and depth < 4:
        for item in obj.values():
            _check_arrays(item, depth + 1)


def _safe_scalar(dtype, data=None):
    _checked_dtype(dtype)
    return _scalar(dtype, data) if data is not None else _scalar(dtype)


_ALLOWED_GLOBALS = {}
for _mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _safe_reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _safe_scalar
for _mod in ("numpy._core.numeric", "numpy.core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = _safe_frombuffer
_ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
_ALLOWED_GLOBALS[("numpy", "dtype")] = _pickled_dtype
_ALLOWED_GLOBALS[("returnn.util.task_system", "make_numpy_ndarray_fromstring")] = array_from_bytes
_ALLOWED_GLOBALS[("_codecs", "encode")] = _safe_codecs_encode  # how protocol 2 pickles bytes


class SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """An unpickler that resolves only the globals array messages need; anything else raises
    ProtocolError before any code runs.

    It builds on the pure-Python unpickler on purpose: the C one preallocates its memo table up to
    the largest index a message names, so five bytes (``LONG_BINPUT 2**31``) would make it allocate
    gigabytes. Messages have a handful of opcodes, so the pure-Python loop costs microseconds.
    ``BYTEARRAY8`` is read here too: the stock loader allocates the length it is told before it
    reads, so a lying length is refused against the bytes the message really has. ``BUILD`` (an
    object's ``__setstate__``) is allowed for arrays and dtypes only, with a state of the form numpy
    itself writes: numpy's ``dtype.__setstate__`` crashes the interpreter on some malformed states.
    """

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, file, size: Optional[int] = None):
        super().__init__(file)
        if size is None:  # the bytes behind an in-memory file, else no bound beyond the file's own
            size = file.getbuffer().nbytes if hasattr(file, "getbuffer") else 2**63
        self._size = size

    def _load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:
            raise ProtocolError(f"v1 message claims a bytearray of {n} bytes, the message has {self._size}")
        data = bytearray(n)
        if self.readinto(data) != n:
            raise ProtocolError("v1 message ends inside a bytearray")
        self.append(data)

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def _load_build(self):
        if len(self.stack) < 2:
            raise ProtocolError("v1 message sets a state with nothing to set it on")
        inst, state = self.stack[-2], self.stack[-1]
        if type(inst) is np.ndarray:
            _check_array_state(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        else:
            raise ProtocolError(f"v1 message sets the state of a {type(inst).__name__}, which is not allowed")
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ProtocolError(
                f"v1 message references the global {module}.{name}, which is not allowed"
                " (only numpy array reconstruction is)"
            ) from None

    def persistent_load(self, pid):
        raise ProtocolError("v1 message uses a persistent id, which is not allowed")


class _ReturnnStylePickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """RETURNN's v1 writer, for interop fixtures and the v1 benchmark: the pure-Python pickler,
    arrays as a call to ``returnn.util.task_system.make_numpy_ndarray_fromstring``."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_ndarray(self, obj):
        self.save_global(array_from_bytes, name="make_numpy_ndarray_fromstring")
        self.save((obj.tobytes(), str(obj.dtype), obj.shape))
        self.write(pickle.REDUCE)

    dispatch[np.ndarray] = _save_ndarray

    def save_global(self, obj, name=None):
        if obj is array_from_bytes:
            self.save_reduce_global("returnn.util.task_system", "make_numpy_ndarray_fromstring")
            return
        super().save_global(obj, name)

    def save_reduce_global(self, module, name):
        self.save(module)
        self.save(name)
        self.write(pickle.STACK_GLOBAL)


def encode_v1(message: tuple, returnn_style: bool = False) -> bytes:
    """One v1 message: length prefix + pickle. ``returnn_style`` writes arrays as RETURNN does."""
    if not isinstance(message, tuple):
        raise TypeError(f"v1 messages are tuples, got {type(message).__name__}")
    if returnn_style:
        buf = io.BytesIO()
        buf.write(b"\0\0\0\0")
        _ReturnnStylePickler(buf, protocol=4).dump(message)
        data = buf.getbuffer()
        size = len(data) - 4
        if size > V1_MAX_MESSAGE:
            raise ProtocolError(f"v1 message of {size} bytes exceeds the 2 GiB limit of its length field")
        data[:4] = _LEN.pack(size)
        del data
        return buf.getvalue()
    payload = pickle.dumps(message, protocol=4)
    if len(payload) > V1_MAX_MESSAGE:
        raise ProtocolError(f"v1 message of {len(payload)} bytes exceeds the 2 GiB limit of its length field")
    return _LEN.pack(len(payload)) + payload


def decode_v1(data) -> tuple:
    """Decodes one whole v1 message (length prefix included) with the safe reader."""
    mv = memoryview(data).cast("B")
    if len(mv) < 4:
        raise TruncatedFrameError("v1 length prefix", 4, len(mv))
    (size,) = _LEN.unpack(mv[:4])
    if size <= 0:
        raise ProtocolError(f"v1 length prefix {size} is not positive")
    if len(mv) - 4 < size:
        raise TruncatedFrameError("v1 message", size, len(mv) - 4)
    if len(mv) - 4 > size:
        raise ProtocolError(f"{len(mv) - 4 - size} trailing bytes after a v1 message of {size} bytes")
    return _unpickle_v1(mv[4:])


def _unpickle_v1(payload) -> tuple:
    try:
        obj = SafeUnpickler(io.BytesIO(payload), len(payload)).load()
    except ProtocolError:
        raise
    except Exception as exc:  # a corrupt pickle raises a zoo of types; report them as one
        raise ProtocolError(f"undecodable v1 message: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, tuple) or not obj or not isinstance(obj[0], str):
        raise ProtocolError(f"v1 message must be a tuple starting with a str, got {type(obj).__name__}")
    _check_arrays(obj)
    return obj


def _read_exact(fd: int, n: int, what: str) -> bytearray:
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


def _write_all(fd: int, data, timeout: Optional[float] = None) -> None:
    """Writes all of ``data``; with ``timeout`` (the fd is then non-blocking, see ``Link.timeout``)
    the whole write must be done within that many seconds, else SprintTimeoutError."""
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
                f"the child read nothing for {timeout} s: {len(mv)} of {len(data)} bytes of a v1 message unsent"
            )
        try:
            mv = mv[os.write(fd, mv) :]
        except BlockingIOError:  # another writer filled the pipe between poll and write
            continue


def _set_nonblocking(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_NONBLOCK) if on else (flags & ~os.O_NONBLOCK))


# ---------------------------------------------------------------------------------------------
# The link: one side of the two pipes


def _error_text(kind: str, text: str) -> str:
    return f"{kind}: {text}" if kind else text


class Link:
    """One side of a parent/child connection: reads from ``read_fd``, writes to ``write_fd``.

    ``protocol`` starts at 1 and becomes 2 after a successful negotiation. ``max_payload`` bounds
    what a received message may announce; ``timeout`` (seconds, None: wait forever) bounds each
    read of an answer and each write of a request: while it is set, the write end is non-blocking,
    since a blocking ``writev`` of a large frame waits for the reader however long that takes.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        max_payload: int = w.DEFAULT_MAX_PAYLOAD,
        timeout: Optional[float] = None,
    ):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.protocol = PROTOCOL_V1
        self.max_payload = max_payload
        self._timeout: Optional[float] = None
        self._write_nonblocking = False
        self.timeout = timeout
        self.peer_capabilities: dict[str, Any] = {}
        self.seq = 0
        #: the shared region negotiated for this link (protocol 2 option), else None
        self.shm: Optional[shm.SharedRegion] = None
        self._peer_generation = 0
        self._slots: dict[str, np.ndarray] = {}  # parent: this link's scratch matrices in the region
        self._pending_shm: Optional[tuple] = None
        framing.grow_pipe(write_fd)
        framing.grow_pipe(read_fd)

    @property
    def timeout(self) -> Optional[float]:
        """Seconds that each read of an answer and each write of a request may take (None: no bound)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._timeout = value
        bounded = value is not None
        if bounded != self._write_nonblocking and self.write_fd >= 0:
            _set_nonblocking(self.write_fd, bounded)  # one fcntl when the mode changes, none per message
            self._write_nonblocking = bounded

    # -- v1 primitives ------------------------------------------------------------------------

    def send_v1(self, message: tuple) -> None:
        _write_all(self.write_fd, encode_v1(message), self._timeout)

    def recv_v1(self) -> tuple:
        if self.timeout is not None:
            self._wait_readable()
        (size,) = _LEN.unpack(_read_exact(self.read_fd, 4, "v1 length prefix"))
        if size <= 0:
            raise ProtocolError(f"v1 length prefix {size} is not positive")
        if size > self.max_payload + (1 << 20):
            raise ProtocolError(f"v1 message of {size} bytes exceeds the limit of {self.max_payload} bytes")
        return _unpickle_v1(_read_exact(self.read_fd, size, "v1 message"))

    def _wait_readable(self) -> None:
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        if not poller.poll(int(self.timeout * 1000) + 1):
            raise SprintTimeoutError(f"no answer from the child within {self.timeout} s")

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # -- v2 control frames ----------------------------------------------------------------------

    def _send_control(self, message: tuple) -> None:
        payload = np.frombuffer(pickle.dumps(message, protocol=4), dtype=np.uint8)
        framing.write_frame(self.write_fd, w.MSG_CONTROL, "", payload, seq=self._next_seq(), timeout=self._timeout)

    def _send_message(self, message: tuple) -> None:
        if self.protocol == PROTOCOL_V2:
            self._send_control(message)
        else:
            self.send_v1(message)

    def _read_frame(self, out=None):
        return framing.read_frame(self.read_fd, out=out, max_payload=self.max_payload, timeout=self.timeout)

    @staticmethod
    def _control_of(header, arr) -> tuple:
        return _unpickle_v1(arr.tobytes() if arr is not None else b"")

    # =========================================================================================
    # Parent side

    def handshake(self, name: str = "SprintSubprocessInstance", protocol: int = PROTOCOL_V2,
                  options: Optional[dict] = None, shared: Optional[shm.SharedRegion] = None) -> int:
        """Parent: sends v1 ``init``, checks the answer, switches to v2 when both ends can.

        Returns the protocol in use. ``protocol=1`` stays on v1 whatever the child offers. With
        ``shared`` (a region whose fd the child inherited), the matrices travel through it when the
        child can map it; ``self.shm`` tells whether it does.
        """
        self.send_v1(("init", name, INIT_VERSION))
        answer = self.recv_v1()
        if answer[0] == "exception":
            raise SprintRemoteError(f"the child refused init: {answer[1] if len(answer) > 1 else ''}")
        if answer[0] != "ok" or len(answer) < 3 or answer[2] != INIT_VERSION:
            raise ProtocolError(f"unexpected answer to init: {answer!r:.200}")
        caps = answer[3] if len(answer) > 3 and isinstance(answer[3], dict) else {}
        self.peer_capabilities = caps
        if protocol >= PROTOCOL_V2 and PROTOCOL_V2 in caps.get("protocols", ()):
            opts = dict(options or {})
            if shared is not None and caps.get("shm"):
                opts["shm"] = {"fd": shared.fd, "size": shared.size, "generation": shared.generation}
            self.send_v1(("use_protocol", PROTOCOL_V2, opts))
            answer = self.recv_v1()
            if answer[0] != "ok" or len(answer) < 2 or answer[1] != PROTOCOL_V2:
                raise ProtocolError(f"the child did not accept protocol 2: {answer!r:.200}")
            self.protocol = PROTOCOL_V2
            accepted = answer[2] if len(answer) > 2 and isinstance(answer[2], dict) else {}
            if "shm" in opts and accepted.get("shm") is True:
                self.shm = shared
                self._peer_generation = opts["shm"]["generation"]
            elif "shm" in opts:
                logger.warning("the child cannot map the shared region (%s); using the pipe",
                               accepted.get("shm_error", "no reason given"))
        return self.protocol

    def send_loss_request(self, seg_name: str, posteriors: np.ndarray, out: Optional[np.ndarray] = None) -> None:
        """Parent: asks for loss and error signal of one segment; posteriors (time, label) float32.

        On v2 a row-strided slice of a (time, batch, label) batch is written row by row, uncopied.
        With a shared region, only a descriptor is sent: posteriors that already lie in the region
        are not copied at all, others once into this link's slot; ``out`` (the destination that
        ``recv_loss_result`` will be given) lets the child write the error signal straight there.
        """
        if (self.shm is not None and getattr(posteriors, "nbytes", 0) >= self.shm.inline_below
                and self._send_shared_request(seg_name, posteriors, out)):
            return
        if self.protocol == PROTOCOL_V2:
            framing.write_frame(self.write_fd, w.MSG_LOSS_REQUEST, seg_name, posteriors, seq=self._next_seq(),
                                timeout=self._timeout)
        else:
            arr = np.ascontiguousarray(posteriors, dtype=np.float32)
            self.send_v1(("get_loss_and_error_signal", seg_name, int(arr.shape[0]), arr))

    def recv_loss_result(self, shape: tuple[int, int], out: Optional[np.ndarray] = None
                         ) -> tuple[float, np.ndarray]:
        """Parent: reads the answer to ``send_loss_request``: (loss, error signal of ``shape``).

        With ``out`` (a (time, label) view, e.g. into the batch output) the error signal lands there.
        A child-side exception raises SprintRemoteError; the link stays usable.
        """
        if self._pending_shm is not None:
            return self._recv_shared_result(shape, out)
        if self.protocol == PROTOCOL_V2:
            header = framing.read_header(self.read_fd, max_payload=self.max_payload, timeout=self.timeout)
            # ``out`` only takes a LOSS_RESULT payload; an ERROR frame carries its own bytes
            target = out if header.msg_type == w.MSG_LOSS_RESULT else None
            arr = framing.read_payload(self.read_fd, header, out=target, timeout=self.timeout)
            if header.msg_type == w.MSG_LOSS_RESULT:
                if tuple(header.shape) != tuple(shape) or header.dtype != np.float32:
                    raise ProtocolError(
                        f"error signal of shape {header.shape} and dtype {header.dtype} does not match"
                        f" the posteriors' shape {tuple(shape)} (float32)"
                    )
                return header.value, arr
            self._raise_unexpected(header, arr, "LOSS_RESULT")
        answer = self.recv_v1()
        if answer[0] == "ok" and len(answer) == 3:
            loss, err = answer[1], answer[2]
            if not isinstance(err, np.ndarray) or err.shape != tuple(shape):
                got = getattr(err, "shape", type(err).__name__)
                raise ProtocolError(f"error signal of shape {got} does not match the posteriors' shape {shape}")
            err = err.astype(np.float32, copy=False)
            if out is not None:
                out[...] = err
                err = out
            return float(loss), err
        self._raise_v1_failure(answer)

    def _slot(self, which: str, rows: int, cols: int) -> np.ndarray:
        """This link's scratch matrix in the region, grown to the largest segment seen."""
        slot = self._slots.get(which)
        if slot is None or slot.size < rows * cols:
            self._slots.pop(which, None)
            slot = self.shm.empty((max(rows * cols, 1),), np.float32)
            self._slots[which] = slot
        return slot[: rows * cols].reshape(rows, cols)

    def _send_shared_request(self, seg_name: str, posteriors: np.ndarray, out: Optional[np.ndarray]) -> bool:
        region = self.shm
        post = np.asarray(posteriors)
        if post.ndim != 2:
            return False
        rows, cols = post.shape
        try:
            where_in = region.locate(post)
            if where_in is None:
                slot = self._slot("in", rows, cols)
                np.copyto(slot, post, casting="same_kind")
                where_in = region.locate(slot)
            where_out = region.locate(out) if out is not None and out.shape == (rows, cols) else None
            target = out if where_out is not None else None
            if where_out is None:
                # without a destination the answer gets a block of its own, handed to the caller as
                # it is (no copy out); with one outside the region, the reused slot is copied from
                target = region.empty((rows, cols)) if out is None else self._slot("out", rows, cols)
                where_out = region.locate(target)
        except MemoryError as exc:  # the region reached its cap: this segment takes the pipe
            logger.warning("shared region full (%s); sending %r through the pipe", exc, seg_name)
            return False
        if region.generation != self._peer_generation:
            self.call("shm_remap", region.size, region.generation)
            self._peer_generation = region.generation
        seq = self._next_seq()
        desc = shm.Descriptor(region.generation, where_in[0], where_in[1], where_out[0], where_out[1], rows, cols, seq)
        framing.write_frame(self.write_fd, w.MSG_LOSS_REQUEST, seg_name, desc.to_array(), seq=seq, flags=w.FLAG_SHM,
                            timeout=self._timeout)
        self._pending_shm = (desc, target, out is not None and target is out)
        return True

    def _recv_shared_result(self, shape, out: Optional[np.ndarray]) -> tuple[float, np.ndarray]:
        desc, target, in_place = self._pending_shm
        self._pending_shm = None
        header, arr = self._read_frame()
        if header.msg_type != w.MSG_LOSS_RESULT:
            self._raise_unexpected(header, arr, "LOSS_RESULT")
        if not header.flags & w.FLAG_SHM:
            raise ProtocolError("the child answered a shared-memory request through the pipe")
        echo = shm.Descriptor.from_array(arr)
        if echo != desc:
            raise ProtocolError(f"shared-memory answer {tuple(echo)} does not match the request {tuple(desc)}")
        if (desc.time, desc.labels) != tuple(shape):
            raise ProtocolError(f"error signal of shape {(desc.time, desc.labels)} does not match {tuple(shape)}")
        if in_place or out is None:
            return header.value, target
        np.copyto(out, target)
        return header.value, out

    def request_fsa(self, seg_name: str) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Parent: RASR's allophone-state automaton of a segment:
        (num_states, num_edges, edges uint32 (3*E,) from/to/emission rows, weights float32 (E,))."""
        if self.protocol == PROTOCOL_V2:
            framing.write_frame(self.write_fd, w.MSG_FSA_REQUEST, seg_name, None, seq=self._next_seq(),
                                timeout=self._timeout)
            header, arr = self._read_frame()
            if header.msg_type == w.MSG_FSA_RESULT:
                if arr is None or arr.ndim != 2 or arr.shape[0] != 4 or arr.dtype != np.uint32:
                    raise ProtocolError(f"FSA frame must carry a uint32 (4, E) array, got {header.shape}")
                num_edges = arr.shape[1]
                edges = np.ascontiguousarray(arr[:3]).reshape(-1)
                weights = np.ascontiguousarray(arr[3]).view(np.float32)
                return int(header.value), num_edges, edges, weights
            self._raise_unexpected(header, arr, "FSA_RESULT")
        self.send_v1(("export_allophone_state_fsa_by_segment_name", seg_name))
        answer = self.recv_v1()
        if answer[0] == "ok" and len(answer) == 5:
            num_states, num_edges, edges, weights = answer[1:]
            return int(num_states), int(num_edges), np.asarray(edges, np.uint32), np.asarray(weights, np.float32)
        self._raise_v1_failure(answer)

    def call(self, *message) -> tuple:
        """Parent: any other command, answered with ("ok", ...); returns the results after "ok"."""
        self._send_message(tuple(message))
        if self.protocol == PROTOCOL_V2:
            header, arr = self._read_frame()
            if header.msg_type == w.MSG_CONTROL:
                answer = self._control_of(header, arr)
            else:
                self._raise_unexpected(header, arr, "CONTROL")
        else:
            answer = self.recv_v1()
        if answer[0] == "ok":
            return answer[1:]
        self._raise_v1_failure(answer)

    def send_exit(self) -> None:
        """Parent: asks the child to close its pipes and finish."""
        if self.protocol == PROTOCOL_V2:
            framing.write_frame(self.write_fd, w.MSG_EXIT, "", None, seq=self._next_seq(), timeout=self._timeout)
        else:
            self.send_v1(("exit",))

    def _raise_unexpected(self, header, arr, expected: str):
        if header.msg_type == w.MSG_ERROR:
            text = bytes(arr).decode("utf-8", "replace") if arr is not None else ""
            # the headline says what went wrong, as on v1: the traceback's last line, not only its type
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            headline = lines[-1] if lines else header.name
            if header.name and header.name not in headline:
                headline = f"{header.name}: {headline}"
            raise SprintRemoteError(f"the child failed: {headline}", text)
        if header.msg_type == w.MSG_CONTROL:
            self._raise_v1_failure(self._control_of(header, arr))
        raise ProtocolError(f"expected a {expected} frame, got {w.MSG_NAMES.get(header.msg_type)}")

    @staticmethod
    def _raise_v1_failure(answer: tuple):
        if answer[0] == "exception":
            text = str(answer[1]) if len(answer) > 1 else ""
            first = text.strip().splitlines()[-1] if text.strip() else "exception"
            raise SprintRemoteError(f"the child failed: {first}", text)
        raise ProtocolError(f"unexpected answer from the child: {answer!r:.200}")

    # =========================================================================================
    # Child side

    def recv_command(self) -> tuple:
        """Child: the next command as a v1-style tuple ``(cmd, *args)``, whatever the protocol.

        v2 frames map to ``("get_loss_and_error_signal", seg_name, seg_len, posteriors)``,
        ``("export_allophone_state_fsa_by_segment_name", seg_name)``, ``("exit",)`` or the tuple
        of a CONTROL frame. Raises EOFError when the parent closed the pipe.
        """
        while self.protocol == PROTOCOL_V2:
            header, arr = framing.read_frame(self.read_fd, max_payload=self.max_payload)
            t = header.msg_type
            if t == w.MSG_LOSS_REQUEST and header.flags & w.FLAG_SHM:
                return self._shared_request(header, arr)
            if t == w.MSG_LOSS_REQUEST:
                if arr is None or arr.ndim != 2 or arr.dtype != np.float32:
                    raise ProtocolError(
                        f"posteriors must be a float32 (time, label) matrix, got {header.shape} {header.dtype}"
                    )
                return ("get_loss_and_error_signal", header.name, arr.shape[0], arr)
            if t == w.MSG_FSA_REQUEST:
                return ("export_allophone_state_fsa_by_segment_name", header.name)
            if t == w.MSG_EXIT:
                return ("exit",)
            if t == w.MSG_CONTROL:
                message = self._control_of(header, arr)
                if message[0] == "shm_remap" and self.shm is not None and len(message) == 3:
                    self.shm.remap(int(message[1]), int(message[2]))  # transport business: not a command
                    self._send_control(("ok",))
                    continue
                return message
            raise ProtocolError(f"a child does not expect {w.MSG_NAMES.get(t)} frames")
        return self.recv_v1()

    def _shared_request(self, header, arr) -> tuple:
        if self.shm is None:
            raise ProtocolError("shared-memory request, but no shared region was negotiated")
        desc = shm.Descriptor.from_array(arr)
        if desc.generation != self.shm.generation:
            raise ProtocolError(
                f"shared-memory request of generation {desc.generation}, the region is at {self.shm.generation}"
            )
        if desc.seq != header.seq:
            raise ProtocolError(f"shared-memory descriptor seq {desc.seq} differs from the frame's {header.seq}")
        post = self.shm.view(desc.in_offset, desc.time, desc.labels, desc.in_row_stride, "posteriors")
        out = self.shm.view(desc.out_offset, desc.time, desc.labels, desc.out_row_stride, "error signal")
        if not post.flags.c_contiguous:
            post = np.ascontiguousarray(post)  # RASR's fast path wants a column-major (label, time) matrix
        self._pending_shm = (desc, out)
        return ("get_loss_and_error_signal", header.name, desc.time, post)

    def reply_ok(self, *results) -> None:
        """Child: a generic successful answer ("ok", *results)."""
        self._send_message(("ok",) + results)

    def reply_init(self, name: str, capabilities: dict) -> None:
        """Child: answers v1 ``init`` byte-compatibly, announcing what it can do."""
        caps = dict(capabilities)
        caps.setdefault("shm", shm.available())
        self.send_v1(("ok", name, INIT_VERSION, caps))

    def accept_protocol(self, version: int, options: Optional[dict] = None) -> None:
        """Child: confirms a ``use_protocol`` request (in v1) and switches to ``version``."""
        if version not in SUPPORTED_PROTOCOLS:
            raise ProtocolError(f"unsupported protocol {version}: this side speaks {SUPPORTED_PROTOCOLS}")
        accepted: dict[str, Any] = {}
        spec = (options or {}).get("shm")
        if spec is not None and version == PROTOCOL_V2:
            try:
                self.shm = shm.SharedRegion.attach(int(spec["fd"]), int(spec["size"]), int(spec.get("generation", 0)))
                accepted["shm"] = True
            except (ProtocolError, KeyError, TypeError, ValueError, OSError) as exc:
                accepted["shm"] = False
                accepted["shm_error"] = str(exc)
        self.send_v1(("ok", version, accepted))
        self.protocol = version

    def reply_loss(self, seg_name: str, loss: float, error_signal: np.ndarray, skipped: bool = False) -> None:
        """Child: the answer to a loss request; ``error_signal`` (time, label) float32."""
        if self._pending_shm is not None:
            desc, out = self._pending_shm
            self._pending_shm = None
            err = np.asarray(error_signal)
            if err.shape != out.shape:
                raise ValueError(f"error signal of shape {err.shape}, the posteriors were {out.shape}")
            if not (err.ctypes.data == out.ctypes.data and err.strides == out.strides):
                np.copyto(out, err, casting="same_kind")  # the one copy: RASR's result into the parent's buffer
            flags = w.FLAG_SHM | (w.FLAG_SKIPPED if skipped else 0)
            framing.write_frame(self.write_fd, w.MSG_LOSS_RESULT, seg_name, desc.to_array(), value=float(loss),
                                seq=self._next_seq(), flags=flags, timeout=self._timeout)
            return
        if self.protocol == PROTOCOL_V2:
            framing.write_frame(
                self.write_fd, w.MSG_LOSS_RESULT, seg_name, error_signal, value=float(loss),
                seq=self._next_seq(), flags=w.FLAG_SKIPPED if skipped else 0, timeout=self._timeout,
            )
        else:
            self.send_v1(("ok", float(loss), np.ascontiguousarray(error_signal, dtype=np.float32)))

    def reply_fsa(self, num_states: int, num_edges: int, edges: np.ndarray, weights: np.ndarray) -> None:
        """Child: the answer to an FSA export request."""
        edges = np.asarray(edges, dtype=np.uint32).reshape(3, num_edges)
        weights = np.asarray(weights, dtype=np.float32).reshape(num_edges)
        if self.protocol == PROTOCOL_V2:
            packed = np.empty((4, num_edges), dtype=np.uint32)
            packed[:3] = edges
            packed[3] = weights.view(np.uint32)
            framing.write_frame(self.write_fd, w.MSG_FSA_RESULT, "", packed, value=float(num_states),
                                seq=self._next_seq(), timeout=self._timeout)
        else:
            self.send_v1(("ok", int(num_states), int(num_edges), edges.reshape(-1), weights))

    def reply_exception(self, kind: str, text: str) -> None:
        """Child: a command failed; ``text`` carries the traceback. The link stays usable."""
        self._pending_shm = None
        if self.protocol == PROTOCOL_V2:
            payload = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
            framing.write_frame(self.write_fd, w.MSG_ERROR, kind, payload, seq=self._next_seq(), timeout=self._timeout)
        else:
            self.send_v1(("exception", _error_text(kind, text)))

    def close(self) -> None:
        """Closes both pipe ends (idempotent) and lets go of the shared region's slots."""
        self._slots.clear()
        self._pending_shm = None
        self.shm = None
        for attr in ("read_fd", "write_fd"):
            fd = getattr(self, attr)
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)


#: The two halves of a link by side (one class today; the names are what callers use).
ParentLink = Link
ChildLink = Link
