"""Protocol v1 (RETURNN's): a 4-byte little-endian signed length, then a pickle of a tuple.

Parent to child ``(cmd, *args)``, child to parent ``("ok", *results)`` or ``("exception", text)``.
The reader here is safe: it resolves only the globals that array messages need (see
``SafeUnpickler``). The same pickles travel inside protocol v2's CONTROL frames.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from typing import Any, ClassVar, Optional

import numpy as np

from ..errors import ProtocolError, TruncatedFrameError

__all__ = [
    "INIT_VERSION",
    "V1_MAX_MESSAGE",
    "SafeUnpickler",
    "encode_v1",
    "decode_v1",
    "unpickle_v1",
    "array_from_bytes",
    "error_text",
]

#: The version number inside the v1 ``init`` message (RETURNN's ``SprintSubprocessInstance.Version``).
INIT_VERSION = 1
#: v1 length prefix is a signed 32-bit int.
V1_MAX_MESSAGE = 2**31 - 1
LENGTH = struct.Struct("<i")

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
        dt: np.dtype = np.dtype(*args, **kwargs)
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


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {}
for _mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _safe_reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _safe_scalar
for _mod in ("numpy._core.numeric", "numpy.core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = _safe_frombuffer
_ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
_ALLOWED_GLOBALS[("numpy", "dtype")] = _pickled_dtype
_ALLOWED_GLOBALS[("returnn.util.task_system", "make_numpy_ndarray_fromstring")] = array_from_bytes
_ALLOWED_GLOBALS[("_codecs", "encode")] = _safe_codecs_encode  # how protocol 2 pickles bytes


class SafeUnpickler(pickle._Unpickler):
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

    dispatch: ClassVar[dict[int, Any]] = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

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
        pickle._Unpickler.load_build(self)

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


class _ReturnnStylePickler(pickle._Pickler):
    """RETURNN's v1 writer, for interop fixtures and the v1 benchmark: the pure-Python pickler,
    arrays as a call to ``returnn.util.task_system.make_numpy_ndarray_fromstring``."""

    dispatch: ClassVar[dict[Any, Any]] = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

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
        data[:4] = LENGTH.pack(size)
        del data
        return buf.getvalue()
    payload = pickle.dumps(message, protocol=4)
    if len(payload) > V1_MAX_MESSAGE:
        raise ProtocolError(f"v1 message of {len(payload)} bytes exceeds the 2 GiB limit of its length field")
    return LENGTH.pack(len(payload)) + payload


def decode_v1(data) -> tuple:
    """Decodes one whole v1 message (length prefix included) with the safe reader."""
    mv = memoryview(data).cast("B")
    if len(mv) < 4:
        raise TruncatedFrameError("v1 length prefix", 4, len(mv))
    (size,) = LENGTH.unpack(mv[:4])
    if size <= 0:
        raise ProtocolError(f"v1 length prefix {size} is not positive")
    if len(mv) - 4 < size:
        raise TruncatedFrameError("v1 message", size, len(mv) - 4)
    if len(mv) - 4 > size:
        raise ProtocolError(f"{len(mv) - 4 - size} trailing bytes after a v1 message of {size} bytes")
    return unpickle_v1(mv[4:])


def unpickle_v1(payload) -> tuple:
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



def error_text(kind: str, text: str) -> str:
    """The text of a v1 ``("exception", text)`` answer: the exception's type, then its traceback."""
    return f"{kind}: {text}" if kind else text
