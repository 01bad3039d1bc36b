"""Protocol v2 framing: the compiled core when it is built, else its pure-Python twin.

``API`` is the fixed list of names both implementations provide (a test checks it).
``SPRINT_CONTROL_PURE_PYTHON=1`` selects the twin even where the core is built.
"""

from __future__ import annotations

from .._env import pure_python_forced

__all__ = [
    "IMPLEMENTATION",
    "stats",
    "encode_frame",
    "decode_frame",
    "write_frame",
    "read_frame",
    "read_header",
    "read_payload",
    "grow_pipe",
]
API = tuple(__all__)

try:
    if pure_python_forced():  # the twin even where the core is built
        raise ImportError("SPRINT_CONTROL_PURE_PYTHON is set")
    from ._framing import (
        IMPLEMENTATION,
        decode_frame,
        encode_frame,
        grow_pipe,
        read_frame,
        read_header,
        read_payload,
        stats,
        write_frame,
    )
except ImportError:  # not built (a pure install, a source tree without build_ext), or the twin is forced
    from ._framing_py import (  # type: ignore[no-redef]
        IMPLEMENTATION,
        decode_frame,
        encode_frame,
        grow_pipe,
        read_frame,
        read_header,
        read_payload,
        stats,
        write_frame,
    )
