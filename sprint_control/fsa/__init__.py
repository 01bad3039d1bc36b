"""The full-sum kernel: forward-backward and Viterbi over automata, compiled where built, else its numpy twin.

A layer of its own below both of its users: the emulator's criteria (``forward_backward``, one sequence)
and the PyTorch bridge (``fullsum`` and ``viterbi`` over RASR's merged batch automaton; ``batch_layout``
checks such an automaton; ``shared_layout`` one automaton that every sequence of a batch runs through, the
``shared=True`` mode of ``fullsum``). ``API`` is the fixed list of names both implementations provide (a test
checks it). ``SPRINT_CONTROL_PURE_PYTHON=1`` selects the twin even where the kernel is built.
"""

from __future__ import annotations

from .._impl import select

__all__ = ["IMPLEMENTATION", "forward_backward", "fullsum", "viterbi", "batch_layout"]
API = tuple(__all__)
__all__ += ["shared_layout"]  # both provide it too (the compiled kernel takes the twin's)

_core = select(__name__, "_fsa", "_fsa_py")
IMPLEMENTATION: str = _core.IMPLEMENTATION
forward_backward = _core.forward_backward
fullsum = _core.fullsum
viterbi = _core.viterbi
batch_layout = _core.batch_layout
shared_layout = _core.shared_layout
