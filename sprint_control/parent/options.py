"""The parent side's options, defined once: ``ParentOptions`` (what a child is started with, how long
each step may take, how a pool spreads its work), checked when it is made.

``SprintPool`` builds one from its keyword arguments, ``SprintInstancePool`` from RETURNN's
``sprint_opts`` (``ParentOptions.from_returnn``) and ``SprintSubprocessInstance`` from its RETURNN
parameters and extras; a pool hands its object to every child it starts. ``DEFAULTS`` holds the defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

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


#: keys of ``--*.pymod-config`` that the parent writes itself: ``control_config`` must not set them
RESERVED_CONFIG_KEYS = ("c2p_fd", "p2c_fd", "minPythonControlVersion", "max_payload")

#: RETURNN's ``sprint_opts`` keys (and ``SprintSubprocessInstance``'s parameters) -> the option's name
RETURNN_KEYS = {
    "numInstances": "num_instances",
    "sprintExecPath": "sprint_exec",
    "minPythonControlVersion": "min_python_control_version",
    "sprintConfigStr": "sprint_args",
    "sprintControlConfig": "control_config",
    "usePythonSegmentOrder": "use_python_segment_order",
}


@dataclasses.dataclass(frozen=True)
class ParentOptions:
    """Every option of the parent side, defined once and checked once, when the object is made.

    ``SprintPool`` takes the fields as keyword arguments, ``SprintInstancePool`` and
    ``SprintSubprocessInstance`` under RETURNN's names too (``from_returnn``); a pool hands the same
    object to each of its children. ``DEFAULTS`` holds the defaults. What each option does: see
    ``SprintSubprocessInstance`` (the child's) and ``SprintInstancePool`` (the pool's).
    """

    # -- the child: what is started and how it is configured
    #: the Sprint program, a path or a command list (None: the bundled emulator, ``emulator_command()``)
    sprint_exec: Any = None
    #: extra Sprint arguments, a string split like a shell or a sequence
    sprint_args: Union[str, Sequence[str]] = ""
    #: extra ``key:value`` pairs for ``--*.pymod-config`` (not the parent's own, ``RESERVED_CONFIG_KEYS``)
    control_config: Optional[Mapping[str, Any]] = None
    use_python_segment_order: bool = True
    min_python_control_version: int = 2
    module_name: str = DEFAULT_MODULE_NAME
    #: the directory that makes the module importable (None: this package's, ``default_module_path()``)
    module_path: Optional[str] = None
    env: Optional[Mapping[str, str]] = None
    cwd: Optional[str] = None
    name: str = "SprintSubprocessInstance"
    # -- the link
    protocol: int = PROTOCOL_V2
    #: seconds for each answer and each request write (None: no bound)
    timeout: Optional[float] = None
    #: seconds for the start-up handshake
    start_timeout: Optional[float] = 120.0
    #: seconds ``close`` waits after ``exit`` before SIGTERM, then SIGKILL
    exit_timeout: float = 5.0
    reject_non_finite: bool = False
    #: largest array payload (bytes) a request or answer may carry; also given to the child
    max_payload: int = DEFAULT_MAX_PAYLOAD
    echo_output: bool = False
    #: lines of child output kept for error messages
    output_lines: int = 200
    # -- the pool
    num_instances: int = 1
    restart_dead: bool = True
    #: send each sequence as a contiguous copy (None: only with the pure-Python framing twin)
    gather: Optional[bool] = None
    #: move the matrices through a shared region: False, True, or its initial size in bytes
    shm: Union[bool, int] = False
    #: initial size of the shared region when ``shm=True``
    shm_size: int = DEFAULT_SIZE
    shm_max_size: int = DEFAULT_MAX_SIZE
    shm_inline_below: int = DEFAULT_INLINE_BELOW

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)
        if self.sprint_exec is None:
            put("sprint_exec", emulator_command())
        put("protocol", checked_protocol(self.protocol))
        put("timeout", checked_seconds("timeout", self.timeout))
        put("start_timeout", checked_seconds("start_timeout", self.start_timeout))
        put("exit_timeout", checked_seconds("exit_timeout", self.exit_timeout, allow_none=False))
        put("max_payload", checked_max_payload(self.max_payload))
        put("num_instances", _checked_count("num_instances", self.num_instances))
        put("min_python_control_version", int(self.min_python_control_version))
        put("control_config", checked_control_config(self.control_config))
        if isinstance(self.sprint_args, str):
            put("sprint_args", tuple(shlex.split(self.sprint_args)))
        else:
            put("sprint_args", tuple(str(a) for a in self.sprint_args))
        for key in ("use_python_segment_order", "reject_non_finite", "echo_output", "restart_dead"):
            put(key, bool(getattr(self, key)))
        if self.gather is not None:
            put("gather", bool(self.gather))
        if self.env is not None:
            put("env", dict(self.env))
        for key in ("output_lines", "shm_size", "shm_max_size", "shm_inline_below"):
            put(key, int(getattr(self, key)))

    @classmethod
    def create(cls, who: str, **options: Any) -> ParentOptions:
        """The options from keyword arguments; an unknown name is refused, naming ``who`` got it."""
        unknown = sorted(set(options) - set(FIELDS))
        if unknown:
            raise TypeError(f"{who} got unknown option(s) {', '.join(map(repr, unknown))};"
                            f" it takes {', '.join(FIELDS)}")
        return cls(**options)

    @classmethod
    def from_returnn(cls, sprint_opts: Mapping[str, Any], who: str = "SprintInstancePool") -> ParentOptions:
        """The options for RETURNN's ``sprint_opts`` (``numInstances``, ``sprintExecPath``,
        ``sprintConfigStr``, ``sprintControlConfig``, ``usePythonSegmentOrder``,
        ``minPythonControlVersion``; the other keys by their own names, e.g. ``timeout``)."""
        options: dict[str, Any] = {}
        for key, value in sprint_opts.items():
            field = RETURNN_KEYS.get(key, key)
            if field in options:
                raise TypeError(f"{who} got option {field!r} twice (as {key!r} too)")
            options[field] = value
        if "sprint_exec" not in options:
            raise TypeError(f"{who} needs sprint_opts['sprintExecPath']: the Sprint program, or emulator_command()")
        return cls.create(who, **options)

    def replace(self, **changes: Any) -> ParentOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def returnn_view(self) -> dict[str, Any]:
        """The options as ``SprintSubprocessInstance``'s keyword arguments (RETURNN's names first)."""
        back = {field: key for key, field in RETURNN_KEYS.items()}
        return {back.get(f, f): getattr(self, f) for f in FIELDS if f not in POOL_FIELDS}


#: the names of the options, in their order
FIELDS = tuple(f.name for f in dataclasses.fields(ParentOptions))
#: the options only a pool uses
POOL_FIELDS = ("num_instances", "restart_dead", "gather", "shm", "shm_size", "shm_max_size", "shm_inline_below")


def _checked_positive_int(value: Any, message: str) -> int:
    """``value`` as an int of at least 1 (no bool, no float); else ValueError(message)."""
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(message)
    return number


def _checked_count(name: str, value: Any) -> int:
    return _checked_positive_int(value, f"{name} must be a whole number of at least 1, got {value!r}")


def checked_control_config(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """``control_config`` as a dict; the parent's own keys (``RESERVED_CONFIG_KEYS``) refused, named."""
    result = dict(config or {})
    reserved = [k for k in RESERVED_CONFIG_KEYS if k in result]
    if reserved:
        raise ValueError(
            f"control_config (sprintControlConfig) must not set {', '.join(reserved)}: the parent passes"
            " these keys to the child itself (c2p_fd and p2c_fd are the pipes it opens; set the limits with"
            " the options max_payload= and min_python_control_version=, RETURNN's minPythonControlVersion)")
    return result


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
    return _checked_positive_int(value, f"max_payload must be a positive whole number of bytes, got {value!r}")


#: the defaults of every option
DEFAULTS = ParentOptions()
