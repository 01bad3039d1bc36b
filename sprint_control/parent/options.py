"""The parent side's defaults, held once: what a child is started with and how long each step may take.

``SprintSubprocessInstance``, ``SprintInstancePool`` (its ``sprint_opts``) and ``SprintPool`` take their
defaults from ``DEFAULTS`` and check their values with the functions here, so the three agree.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import sys
from typing import Any, Optional

from ..wire.constants import DEFAULT_MAX_PAYLOAD
from ..wire.protocol import PROTOCOL_V1, PROTOCOL_V2
from ..wire.shm import DEFAULT_INLINE_BELOW, DEFAULT_MAX_SIZE, DEFAULT_SIZE

#: The Sprint-side module the children load unless told otherwise.
DEFAULT_MODULE_NAME = "sprint_control.control"


def default_module_path() -> str:
    """The directory that makes this package importable (what ``--*.pymod-path`` needs)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def emulator_command() -> list[str]:
    """The command line that starts the bundled RASR emulator with this interpreter."""
    return [sys.executable, "-m", "sprint_control.emulator"]


@dataclasses.dataclass(frozen=True)
class ParentOptions:
    """Defaults of the parent-side classes (see their docstrings for what each option does)."""

    num_instances: int = 1
    protocol: int = PROTOCOL_V2
    min_python_control_version: int = 2
    #: seconds for each answer and each request write (None: no bound)
    timeout: Optional[float] = None
    #: seconds for the start-up handshake
    start_timeout: Optional[float] = 120.0
    #: seconds ``close`` waits after ``exit`` before SIGTERM, then SIGKILL
    exit_timeout: float = 5.0
    module_name: str = DEFAULT_MODULE_NAME
    echo_output: bool = False
    #: lines of child output kept for error messages
    output_lines: int = 200
    reject_non_finite: bool = False
    #: largest array payload (bytes) a request or answer may carry; also given to the child
    max_payload: int = DEFAULT_MAX_PAYLOAD
    restart_dead: bool = True
    #: initial size of the shared region when ``shm=True``
    shm_size: int = DEFAULT_SIZE
    shm_max_size: int = DEFAULT_MAX_SIZE
    shm_inline_below: int = DEFAULT_INLINE_BELOW


DEFAULTS = ParentOptions()


def checked_protocol(protocol: Any) -> int:
    if protocol not in (PROTOCOL_V1, PROTOCOL_V2):
        raise ValueError(f"protocol must be 1 or 2, got {protocol!r}")
    return int(protocol)


def checked_seconds(name: str, value: Any, *, allow_none: bool = True) -> Optional[float]:
    """A positive, finite number of seconds (or None where that means "no bound")."""
    if value is None and allow_none:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)) or isinstance(value, bool):
        what = "a positive number of seconds" + (" or None (no bound)" if allow_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return seconds


def checked_max_payload(value: Any) -> int:
    try:
        size = operator.index(value)
    except TypeError:
        size = 0
    if isinstance(value, bool) or size < 1:
        raise ValueError(f"max_payload must be a positive whole number of bytes, got {value!r}")
    return size
