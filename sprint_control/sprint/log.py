"""The module's ``print`` and its log lines (RASR interleaves them with its own log)."""

from __future__ import annotations

import builtins
import logging
import os
import sys

__all__ = ["print", "log", "log_state"]

logger = logging.getLogger("sprint_control.control")

_builtin_print = builtins.print


class _LogState:
    verbose = False
    quiet = False


#: ``verbose`` and ``quiet`` from the config string (process-wide, like the module's instance).
log_state = _LogState()


# noinspection PyShadowingBuiltins
def print(*args, error: bool = False, **kwargs) -> None:  # noqa: A001 - the seed API's name
    """The module's own ``print``: every log line of the module goes through it.

    ``quiet`` in the config silences it, except for lines marked ``error=True`` (which go to
    stderr by default). Output is flushed at once, since RASR interleaves it with its own log.
    """
    if log_state.quiet and not error:
        return
    if error:
        kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("flush", True)
    _builtin_print(*args, **kwargs)


def log(message: str, *, error: bool = False, verbose: bool = False) -> None:
    """One log line, prefixed with the pid so that lines of several children can be told apart."""
    if verbose and not log_state.verbose:
        return
    print(f"sprint_control[pid {os.getpid()}] {message}", error=error)
    if error:
        logger.debug("%s", message)
