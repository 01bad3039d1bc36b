"""The parent side: what a training framework calls to get losses and error signals from Sprint.

Three layers, from low to high:

- ``SprintSubprocessInstance``: one Sprint child process and its two pipes. Same constructor and
  methods as RETURNN's class of that name (``get_loss_and_error_signal__send/__have_data/__read``,
  ``init``, ``exit_handler``), plus keyword-only extras (``protocol``, ``timeout``, module name/path).
- ``SprintInstancePool``: RETURNN's pool (``get_global_instance``, ``get_batch_loss_and_error_signal``,
  ``get_automata_for_batch``, ``get_free_instance``). A batch is spread over the children
  longest-sequence-first; each child is served by its own thread, and the error signals land
  straight in one preallocated (time, batch, label) array.
- ``SprintPool``: the documented modern entry point; a context manager with snake_case options
  and typed results (``BatchResult``, ``SegmentResult``, ``Automata``).

Modules by concern: ``options`` (the defaults, held once), ``process`` (spawning, ending, the
atexit registry), ``output`` (the children's output), ``session`` (one child's life cycle and the
guard of its exchanges), ``failures`` (failures into the error hierarchy), ``instance``, ``workers``
(the pool's threads), ``pool``, and ``batch`` (results, tags, scheduling, automata; shared with the
torch bridge), and ``builder_source`` (``BuilderAutomata``: the pool's automaton calls over an in-process
builder with librasr's API, no child).
"""

from __future__ import annotations

from ..errors import MalformedAnswerError

# The former single module's public names stay importable from here (the main ones in __all__).
from .batch import Automata, BatchResult, SegmentResult, merge_automata, schedule_longest_first  # noqa: F401
from .builder_source import BuilderAutomata
from .failures import REMOTE_ERROR_GRACE  # noqa: F401
from .instance import SprintSubprocessInstance
from .options import DEFAULT_MODULE_NAME, DEFAULTS, ParentOptions, default_module_path, emulator_command  # noqa: F401
from .output import child_logger  # noqa: F401
from .pool import SprintInstancePool, SprintPool
from .process import PARENT_PID_ENV, PDEATHSIG_ENV, ExecPath, logger  # noqa: F401

__all__ = [
    "SprintSubprocessInstance",
    "SprintInstancePool",
    "SprintPool",
    "BatchResult",
    "SegmentResult",
    "Automata",
    "BuilderAutomata",
    "emulator_command",
    "default_module_path",
    "DEFAULT_MODULE_NAME",
    "MalformedAnswerError",
    "DEFAULTS",
    "ParentOptions",
    "merge_automata",
    "schedule_longest_first",
]
