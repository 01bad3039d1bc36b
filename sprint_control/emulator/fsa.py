"""Forward-backward over an automaton: the compiled kernel when it is built, else its numpy twin.

``API`` is the fixed list of names both implementations provide (a test checks it).
``SPRINT_CONTROL_PURE_PYTHON=1`` selects the twin even where the kernel is built.
"""

from __future__ import annotations

from .._env import pure_python_forced

__all__ = ["IMPLEMENTATION", "forward_backward"]
API = tuple(__all__)

try:
    if pure_python_forced():  # the twin even where the kernel is built
        raise ImportError("SPRINT_CONTROL_PURE_PYTHON is set")
    from ._fsa import IMPLEMENTATION, forward_backward
except ImportError:  # not built, or the twin is forced
    from ._fsa_py import IMPLEMENTATION, forward_backward  # type: ignore[no-redef]
