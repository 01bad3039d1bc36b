"""The one place where a failed exchange with a child becomes an error of the hierarchy in
``sprint_control.errors``, together with what must happen to the child (nothing, kill it, or kill
it and start a new one).

``translate`` is called by the session for every step of every exchange (handshake, request,
answer, automaton, other commands), so each failure reads and behaves the same whatever was asked.
It only looks at the child (its exit status, its output); the session applies the action and then
asks the failure for its error, so the message can say how the action went.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import MalformedAnswerError, ProtocolError, SprintChildError, SprintRemoteError, SprintTimeoutError
from .output import child_cause, describe_exit, last_words
from .process import ChildProcess

__all__ = ["Action", "After", "Failure", "translate", "MalformedAnswerError", "REMOTE_ERROR_GRACE"]

#: Seconds to wait after a child reported a failure, in case it ends on it (see ``_after_remote_error``).
REMOTE_ERROR_GRACE = 0.2


class Action(enum.Enum):
    """What the session does to its child on a failure, before it raises the error."""

    NONE = "none"  # the child serves on
    KILL = "kill"  # kill and reap it
    RESTART = "restart"  # kill and reap it, then start a new one


@dataclass(frozen=True)
class After:
    """The child as the action left it: the old child's exit status and last output, and why the
    restart failed (None: it did not fail, or there was none)."""

    returncode: Optional[int]
    tail: str
    restart_error: Optional[BaseException] = None


@dataclass(frozen=True)
class Failure:
    """A failed exchange: the action, then ``error(after)`` is the exception to raise. ``record``:
    the session keeps it as ``last_error`` and logs ``summary`` (or the error's first line)."""

    action: Action
    error: Callable[[After], BaseException]
    record: bool = True
    summary: Optional[str] = None


def translate(process: Optional[ChildProcess], exc: BaseException, what: str, waiting_for: str, *,
              timeout: Optional[float], start_timeout: Optional[float], handshake: bool = False,
              sending: bool = False) -> Optional[Failure]:
    """The failure ``exc`` stands for, raised ``what`` (e.g. "while computing segment 'x'"; a timeout
    says what it waited ``waiting_for``) with ``process`` the child of the exchange. None: not a
    failure of the exchange; the caller re-raises ``exc`` and the session stays marked as out of step."""
    pid = process.pid if process is not None else None
    if isinstance(exc, SprintRemoteError):
        return _refused_handshake(exc) if handshake else _after_remote_error(process, exc)
    if isinstance(exc, SprintTimeoutError):
        return _handshake_timed_out(pid, start_timeout) if handshake else _timed_out(pid, waiting_for, sending,
                                                                                      timeout)
    if isinstance(exc, (EOFError, OSError, ProtocolError)):
        return _died(process, what, exc)
    return None


def _refused_handshake(exc: SprintRemoteError) -> Failure:
    return Failure(Action.KILL, lambda after: SprintChildError(f"Sprint child refused the handshake: {exc}",
                                                               after.returncode, after.tail), record=False)


def _handshake_timed_out(pid: Optional[int], start_timeout: Optional[float]) -> Failure:
    def error(after: After) -> BaseException:
        return SprintTimeoutError(
            f"Sprint child (pid {pid}) did not answer the handshake within {start_timeout} s"
            + (f"\n--- last lines of its output ---\n{after.tail}" if after.tail else ""))

    return Failure(Action.KILL, error, record=False)


def _died(process: Optional[ChildProcess], what: str, exc: BaseException) -> Failure:
    """The pipe broke or the stream is out of step: the exit status and output tail say why."""
    pid = process.pid if process is not None else None
    if isinstance(exc, ProtocolError) and not isinstance(exc, EOFError):
        # a malformed answer: the stream is out of step and the child of no further use
        return Failure(Action.KILL, lambda after: MalformedAnswerError(
            f"Sprint child (pid {pid}) sent a malformed answer {what} and was stopped: {exc}",
            after.returncode, after.tail))
    if process is not None and process.wait(2.0) is None:  # it closed the pipe but lives on: of no use any more
        what += " (it had closed the pipe and was killed)"

    def error(after: After) -> BaseException:
        rc, tail = after.returncode, after.tail
        # the pipe error says little; the child's output usually says why (its Python exception, RASR's
        # critical error), so the message leads with that
        event = f"Sprint child (pid {pid}) {describe_exit(rc)} {what}"
        cause = child_cause(tail)
        if cause:
            message = f"{cause} -- {event} ({type(exc).__name__}: {exc})"
        else:
            words = last_words(tail)
            message = f"{event}: {type(exc).__name__}: {exc}" + (f"; the child said: {words}" if words
                                                                  else "; it wrote no output")
        return SprintChildError(message, rc, tail)

    return Failure(Action.KILL, error)


def _after_remote_error(process: Optional[ChildProcess], exc: SprintRemoteError) -> Failure:
    """RASR may end on the failure it just reported (a critical error in its own trainer): wait a
    moment for that, so a child that dies is reaped now and restarted before the next batch,
    instead of failing it on a broken pipe. A child that lives on costs this wait once per error."""
    rc = process.wait(REMOTE_ERROR_GRACE) if process is not None else None
    if process is None or rc is None:
        return Failure(Action.NONE, lambda after: exc, record=False)  # it serves on
    note = f"; the Sprint child (pid {process.pid}) then {describe_exit(rc)}"
    return Failure(Action.KILL, lambda after: SprintRemoteError(
        str(exc).split("\n--- child traceback ---\n")[0] + note, exc.remote_traceback),
        summary=str(exc).splitlines()[0] + note)


def _timed_out(pid: Optional[int], what: str, sending: bool, timeout: Optional[float]) -> Failure:
    if sending:
        msg = f"Sprint child (pid {pid}) did not take the request within {timeout} s {what}"
    else:
        msg = f"Sprint child (pid {pid}) gave no answer within {timeout} s {what}"

    def error(after: After) -> BaseException:
        problem = after.restart_error
        return SprintTimeoutError(msg + ("; it was restarted" if problem is None
                                         else f"; restarting it failed: {problem}"))

    return Failure(Action.RESTART, error)

