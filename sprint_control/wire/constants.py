"""Constants of wire protocol v2 for the pure-Python twin, and the wording of every header error.

``csrc/frame.h`` defines the layout for the compiled core, which declares its numbers from that
header (``_framing.WIRE_CONSTANTS``); this module is the twin's definition of the same numbers.
``tests/wire/test_constants.py`` checks that they agree with the header and with the compiled core,
so a number changed in one place fails the tests until it is changed in the other.
Both twins raise the header errors worded here, so they say the same thing.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from ..errors import ProtocolError

MAGIC = b"SCF2"
VERSION = 2
HEADER_SIZE = 64
MAX_NDIM = 3
#: magic, version, type, dtype, ndim, flags, name_len, payload_len, value, seq, shape[3]
HEADER_STRUCT = struct.Struct("<4sBBBBIIQdQ3Q")
assert HEADER_STRUCT.size == HEADER_SIZE

# Message types (see csrc/frame.h).
MSG_LOSS_REQUEST = 1
MSG_LOSS_RESULT = 2
MSG_FSA_REQUEST = 3
MSG_FSA_RESULT = 4
MSG_CONTROL = 5
MSG_ERROR = 6
MSG_EXIT = 7
MSG_MAX = MSG_EXIT
MSG_NAMES = {
    MSG_LOSS_REQUEST: "LOSS_REQUEST",
    MSG_LOSS_RESULT: "LOSS_RESULT",
    MSG_FSA_REQUEST: "FSA_REQUEST",
    MSG_FSA_RESULT: "FSA_RESULT",
    MSG_CONTROL: "CONTROL",
    MSG_ERROR: "ERROR",
    MSG_EXIT: "EXIT",
}

FLAG_SKIPPED = 0x1
FLAG_SHM = 0x2
KNOWN_FLAGS = FLAG_SKIPPED | FLAG_SHM

# Array element types; dtype code <-> numpy dtype (little-endian, as on the wire).
DTYPE_NONE = 0
DTYPE_FLOAT32 = 1
DTYPE_UINT32 = 2
DTYPE_FLOAT64 = 3
DTYPE_INT32 = 4
DTYPE_UINT8 = 5
DTYPE_UINT64 = 6  # shared-memory descriptors
DTYPE_MAX = DTYPE_UINT64
DTYPE_CODES: dict[int, np.dtype] = {
    DTYPE_FLOAT32: np.dtype("<f4"),
    DTYPE_UINT32: np.dtype("<u4"),
    DTYPE_FLOAT64: np.dtype("<f8"),
    DTYPE_INT32: np.dtype("<i4"),
    DTYPE_UINT8: np.dtype("u1"),
    DTYPE_UINT64: np.dtype("<u8"),
}
CODE_OF_DTYPE = {dt: code for code, dt in DTYPE_CODES.items()}

#: Default payload limit: four (2000, 12001) float32 matrices, the largest batch slice we expect.
DEFAULT_MAX_PAYLOAD = 4 * 2000 * 12001 * 4
#: Default limit on a segment name (bytes of UTF-8).
DEFAULT_MAX_NAME = 64 * 1024

# Header check results, in the order the checks run (csrc/frame.h: sc_header_check).
OK = 0
ERR_MAGIC = 1
ERR_VERSION = 2
ERR_TYPE = 3
ERR_DTYPE = 4
ERR_NDIM = 5
ERR_FLAGS = 6
ERR_NAME_TOO_LONG = 7
ERR_PAYLOAD_TOO_LARGE = 8
ERR_SHAPE_UNUSED = 9
ERR_PAYLOAD_MISMATCH = 10
ERR_NO_ARRAY = 11
ERR_DIM_TOO_LARGE = 12


class FrameHeader(NamedTuple):
    """A decoded, validated frame header (plus the segment name that follows it)."""

    msg_type: int
    flags: int
    name: str
    dtype: Optional[np.dtype]
    shape: tuple[int, ...]
    payload_len: int
    value: float
    seq: int


def name_padding(name_len: int) -> int:
    """Zero bytes after a name of ``name_len`` bytes, so the payload starts 8-byte aligned."""
    return (8 - (name_len & 7)) & 7


def check_header_fields(fields: tuple[Any, ...], max_payload: int, max_name: int) -> int:
    """Pure-Python mirror of ``sc_header_check``: the same checks, in the same order."""
    magic, version, msg_type, dtype, ndim, flags, name_len, payload_len, _value, _seq, s0, s1, s2 = fields
    shape = (s0, s1, s2)
    if magic != MAGIC:
        return ERR_MAGIC
    if version != VERSION:
        return ERR_VERSION
    if not 1 <= msg_type <= MSG_MAX:
        return ERR_TYPE
    if dtype != DTYPE_NONE and dtype not in DTYPE_CODES:
        return ERR_DTYPE
    if ndim > MAX_NDIM:
        return ERR_NDIM
    if flags & ~KNOWN_FLAGS:
        return ERR_FLAGS
    if name_len > max_name:
        return ERR_NAME_TOO_LONG
    if payload_len > max_payload:
        return ERR_PAYLOAD_TOO_LARGE
    if any(shape[i] != 0 for i in range(ndim, MAX_NDIM)):
        return ERR_SHAPE_UNUSED
    if any(shape[i] > max_payload for i in range(ndim)):
        return ERR_DIM_TOO_LARGE
    if dtype == DTYPE_NONE:
        return ERR_NO_ARRAY if (ndim != 0 or payload_len != 0) else OK
    n = DTYPE_CODES[dtype].itemsize
    for i in range(ndim):
        n *= shape[i]
    return OK if n == payload_len else ERR_PAYLOAD_MISMATCH


def header_error(code: int, fields: tuple[Any, ...], max_payload: int, max_name: int) -> ProtocolError:
    """The ProtocolError for a failed header check; the one wording both twins use."""
    magic, version, msg_type, dtype, ndim, flags, name_len, payload_len, _value, _seq, s0, s1, s2 = fields
    shape = (s0, s1, s2)
    if code == ERR_MAGIC:
        hint = " (the peer seems to speak protocol v1)" if magic[:1] != b"S" else ""
        msg = f"bad frame magic {bytes(magic)!r}: expected {MAGIC!r}{hint}"
    elif code == ERR_VERSION:
        msg = f"unknown frame version {version}: this side speaks version {VERSION}"
    elif code == ERR_TYPE:
        msg = f"unknown message type {msg_type}: expected 1..{MSG_MAX}"
    elif code == ERR_DTYPE:
        msg = f"unknown dtype code {dtype}: expected 0..{DTYPE_MAX}"
    elif code == ERR_NDIM:
        msg = f"array has ndim {ndim}: at most {MAX_NDIM} dimensions are allowed"
    elif code == ERR_FLAGS:
        msg = f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:x} in flags 0x{flags:x}"
    elif code == ERR_NAME_TOO_LONG:
        msg = f"segment name of {name_len} bytes exceeds the limit of {max_name} bytes"
    elif code == ERR_PAYLOAD_TOO_LARGE:
        msg = (
            f"payload of {payload_len} bytes exceeds the limit of {max_payload} bytes"
            " (raise max_payload if such segments are real)"
        )
    elif code == ERR_SHAPE_UNUSED:
        msg = f"shape {list(shape)} has non-zero entries beyond ndim {ndim}"
    elif code == ERR_PAYLOAD_MISMATCH:
        dt = DTYPE_CODES[dtype]
        msg = (
            f"payload length {payload_len} does not match shape {tuple(shape[:ndim])} of {dt.name}"
            f" ({dt.itemsize} bytes per element)"
        )
    elif code == ERR_DIM_TOO_LARGE:
        msg = f"shape {tuple(shape[:ndim])} has a side larger than the payload limit of {max_payload} bytes"
    elif code == ERR_NO_ARRAY:
        msg = f"frame without dtype must have ndim 0 and no payload, got ndim {ndim}, payload {payload_len}"
    else:  # pragma: no cover - codes are exhaustive
        msg = f"invalid frame header (code {code})"
    return ProtocolError(msg)


def decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"segment name is not valid UTF-8: {bytes(raw[:64])!r} ({exc.reason})") from None


def encode_name(name: Union[str, bytes]) -> bytes:
    if isinstance(name, bytes):
        name.decode("utf-8")  # refuse names that the receiver could not decode
        return name
    if not isinstance(name, str):
        raise TypeError(f"segment name must be str or bytes, got {type(name).__name__}")
    return name.encode("utf-8")


def wire_dtype_code(dtype: np.dtype) -> int:
    """The wire code of ``dtype`` (any byte order), or raise TypeError."""
    code = CODE_OF_DTYPE.get(dtype.newbyteorder("<"))
    if code is None:
        names = ", ".join(dt.name for dt in DTYPE_CODES.values())
        raise TypeError(f"arrays of dtype {dtype} cannot be framed: expected one of {names}")
    return code
