"""Protocol v2 framing: the compiled core when it is built, else its pure-Python twin.

``API`` is the fixed list of names both implementations provide (a test checks it).
"""

from __future__ import annotations

from . import _impl

API = (
    "IMPLEMENTATION",
    "stats",
    "encode_frame",
    "decode_frame",
    "write_frame",
    "read_frame",
    "read_header",
    "read_payload",
    "grow_pipe",
)

_backend = _impl.load("_framing", "_framing_py")

IMPLEMENTATION: str = _backend.IMPLEMENTATION
stats = _backend.stats
encode_frame = _backend.encode_frame
decode_frame = _backend.decode_frame
write_frame = _backend.write_frame
read_frame = _backend.read_frame
read_header = _backend.read_header
read_payload = _backend.read_payload
grow_pipe = _backend.grow_pipe

__all__ = list(API)
