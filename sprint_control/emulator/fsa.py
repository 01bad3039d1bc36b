"""Forward-backward and Viterbi over automata: the compiled kernel when it is built, else its numpy twin.

``forward_backward`` serves the emulator's criteria (one sequence); ``fullsum`` and ``viterbi`` run a batch
over RASR's merged automaton (the PyTorch bridge's CPU path); ``batch_layout`` checks such an automaton.
``API`` is the fixed list of names both implementations provide (a test checks it).
``SPRINT_CONTROL_PURE_PYTHON=1`` selects the twin even where the kernel is built.
"""

from __future__ import annotations

from .._env import pure_python_forced

__all__ = ["IMPLEMENTATION", "forward_backward", "fullsum", "viterbi", "batch_layout"]
API = tuple(__all__)

try:
    if pure_python_forced():  # the twin even where the kernel is built
        raise ImportError("SPRINT_CONTROL_PURE_PYTHON is set")
    from ._fsa import IMPLEMENTATION, batch_layout, forward_backward, fullsum, viterbi
except ImportError:  # not built, or the twin is forced
    from ._fsa_py import IMPLEMENTATION, batch_layout, forward_backward, fullsum, viterbi  # type: ignore[no-redef]
