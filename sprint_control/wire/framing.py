"""Protocol v2 framing: the compiled core when it is built, else its pure-Python twin.

``API`` is the fixed list of names both implementations provide (a test checks it).
``SPRINT_CONTROL_PURE_PYTHON=1`` selects the twin even where the core is built.
"""

from __future__ import annotations

from .._impl import select

__all__ = [
    "IMPLEMENTATION",
    "stats",
    "encode_frame",
    "decode_frame",
    "write_frame",
    "read_frame",
    "read_answer",
    "read_header",
    "read_payload",
    "grow_pipe",
]
API = tuple(__all__)

_core = select(__name__.rpartition(".")[0], "_framing", "_framing_py")
IMPLEMENTATION: str = _core.IMPLEMENTATION
stats = _core.stats
encode_frame = _core.encode_frame
decode_frame = _core.decode_frame
write_frame = _core.write_frame
read_frame = _core.read_frame
read_answer = _core.read_answer
read_header = _core.read_header
read_payload = _core.read_payload
grow_pipe = _core.grow_pipe
