"""sprint_control: a fast, safe link between a Python training process and RASR (Sprint).

The parent side (``SprintSubprocessInstance``, ``SprintInstancePool``, ``SprintPool``) spawns
Sprint children and exchanges posteriors and error signals with them; the Sprint side
(``sprint_control.control``, re-exported here so RASR can load ``--*.pymod-name=sprint_control``)
is the module RASR imports. ``IMPLEMENTATION`` says whether the compiled core ("cython") or its
pure-Python twin ("python") is active.
"""

from __future__ import annotations

from .errors import (
    ProtocolError,
    SprintChildError,
    SprintControlError,
    SprintRemoteError,
    SprintTimeoutError,
    TruncatedFrameError,
)
from .framing import IMPLEMENTATION

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "ProtocolError",
    "SprintChildError",
    "SprintControlError",
    "SprintRemoteError",
    "SprintTimeoutError",
    "TruncatedFrameError",
    "__version__",
]
