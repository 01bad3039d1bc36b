"""Choosing between a compiled module and its pure-Python twin.

``SPRINT_CONTROL_PURE_PYTHON=1`` forces the twins (setup.py honours the same variable and then
builds no extension); otherwise a compiled module is used when it was built.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

ENV_VAR = "SPRINT_CONTROL_PURE_PYTHON"


def pure_python_forced() -> bool:
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def load(compiled: str, twin: str) -> ModuleType:
    """Imports ``sprint_control.<compiled>``, or ``sprint_control.<twin>`` when forced or missing."""
    if not pure_python_forced():
        try:
            return importlib.import_module(f"sprint_control.{compiled}")
        except ImportError:
            pass
    return importlib.import_module(f"sprint_control.{twin}")
