"""One rule for choosing a compiled module or its pure-Python twin (the wire's framing, the fsa kernel).

The compiled module is taken where it is built, unless ``SPRINT_CONTROL_PURE_PYTHON`` forces the twin;
both must provide the names their package lists in ``API`` (a test checks it on both).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._env import pure_python_forced


def select(package: str, compiled: str, twin: str) -> ModuleType:
    """``package.compiled`` where it is built and not overridden by the environment, else ``package.twin``."""
    if not pure_python_forced():
        try:
            return importlib.import_module(f"{package}.{compiled}")
        except ImportError:  # not built: a pure install, or a source tree without build_ext
            pass
    return importlib.import_module(f"{package}.{twin}")
