"""sprint_control: a fast, safe link between a Python training process and RASR (Sprint).

The parent side (``SprintSubprocessInstance``, ``SprintInstancePool``, ``SprintPool``) spawns
Sprint children and exchanges posteriors and error signals with them; the Sprint side
(``sprint_control.control``, re-exported here so RASR can load ``--*.pymod-name=sprint_control``)
is the module RASR imports. ``IMPLEMENTATION`` says whether the compiled core ("cython") or its
pure-Python twin ("python") is active.
"""

from __future__ import annotations

from ._version import __version__
from .errors import (
    ProtocolError,
    SprintChildError,
    SprintControlError,
    SprintRemoteError,
    SprintTimeoutError,
    TruncatedFrameError,
)
from .wire.framing import IMPLEMENTATION

# The Sprint-side API (what RASR calls on ``--*.pymod-name=sprint_control``) and the parent-side API
# are loaded on first use, so that importing the package stays cheap inside RASR and in the parent.
_LAZY = {
    # Sprint side: the module RASR loads
    "init": "control",
    "getSegmentList": "control",
    "SprintNnPythonLayer": "control",
    "PythonControl": "control",
    "print": "control",
    # parent side: the training process
    "SprintSubprocessInstance": "parent",
    "SprintInstancePool": "parent",
    "SprintPool": "parent",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sprint_control' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"sprint_control.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "IMPLEMENTATION",
    "ProtocolError",
    "SprintChildError",
    "SprintControlError",
    "SprintRemoteError",
    "SprintTimeoutError",
    "TruncatedFrameError",
    "__version__",
    *_LAZY,  # loaded on first use, see __getattr__
]
