"""Writes to a peer never raise SIGPIPE (the pure-Python side of what ``csrc/frame_io.c`` does).

A pipe has no ``MSG_NOSIGNAL`` (the flag socket libraries pass to ``send`` for this), and CPython
only sets SIGPIPE to ``SIG_IGN`` at start-up: a program that sets it back to ``SIG_DFL`` (as many
command-line tools do) is killed by a write to a child that is gone. So the writing thread blocks
SIGPIPE around the write (the mask is per thread; other threads keep theirs), and after
``EPIPE`` takes the SIGPIPE the write queued for it (``sigtimedwait`` with a zero timeout)
before unblocking: the caller gets ``BrokenPipeError`` and nothing else. A thread that blocks
SIGPIPE itself is left as it is.
"""

from __future__ import annotations

import signal

__all__ = ["guarded"]

_PIPE = frozenset({signal.SIGPIPE}) if hasattr(signal, "SIGPIPE") else frozenset()
_AVAILABLE = bool(_PIPE) and hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait")


def guarded(write, *args):
    """``write(*args)`` with SIGPIPE blocked in this thread; a SIGPIPE it caused is taken, not delivered."""
    if not _AVAILABLE:
        return write(*args)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _PIPE)
    if signal.SIGPIPE in old:  # the caller blocks it: its business
        return write(*args)
    try:
        return write(*args)
    except BrokenPipeError:
        signal.sigtimedwait(_PIPE, 0)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

