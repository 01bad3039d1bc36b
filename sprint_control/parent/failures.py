"""The one place where a failed exchange with a child becomes an error of the hierarchy in
``sprint_control.errors`` (and the child is stopped, reaped or restarted as the failure requires).

``translate`` is called by the instance for every step of every exchange (handshake, request,
answer, automaton, other commands), so each failure reads and behaves the same whatever was asked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from ..errors import ProtocolError, SprintChildError, SprintControlError, SprintRemoteError, SprintTimeoutError
from .output import child_cause, describe_exit, last_words

if TYPE_CHECKING:  # pragma: no cover
    from .instance import SprintSubprocessInstance

logger = logging.getLogger("sprint_control.parent")

class MalformedAnswerError(ProtocolError, SprintChildError):
    """The child's answer was malformed or did not belong to the request (another segment or
    sequence number): a ProtocolError, never a wrong loss. The child was stopped (the stream is out
    of step), so it is a SprintChildError too, with ``returncode`` and ``stderr_tail``."""


#: Seconds to wait after a child reported a failure, in case it ends on it (see ``_after_remote_error``).
REMOTE_ERROR_GRACE = 0.2


def translate(inst: SprintSubprocessInstance, exc: BaseException, what: str, waiting_for: str, *,
              handshake: bool = False, sending: bool = False) -> Optional[BaseException]:
    """The error to raise for ``exc``, raised ``what`` (e.g. "while computing segment 'x'"; a timeout
    says what it waited ``waiting_for``). None: not a failure of the exchange; the caller re-raises
    ``exc`` and the instance stays marked as out of step."""
    if isinstance(exc, SprintRemoteError):
        return _refused_handshake(inst, exc) if handshake else _after_remote_error(inst, exc)
    if isinstance(exc, SprintTimeoutError):
        return _handshake_timed_out(inst) if handshake else _timed_out(inst, waiting_for, sending)
    if isinstance(exc, (EOFError, OSError, ProtocolError)):
        return _died(inst, what, exc)
    return None


def _record(inst: SprintSubprocessInstance, err: SprintControlError, note: Optional[str] = None) -> SprintControlError:
    inst.last_error = err
    logger.warning("%s", note or str(err).splitlines()[0])
    return err


def _refused_handshake(inst: SprintSubprocessInstance, exc: SprintRemoteError) -> SprintChildError:
    process = inst.process
    inst.kill()
    return SprintChildError(f"Sprint child refused the handshake: {exc}",
                            process.returncode if process is not None else None, inst.stderr_tail)


def _handshake_timed_out(inst: SprintSubprocessInstance) -> SprintTimeoutError:
    pid, tail = inst.child_pid, inst.stderr_tail
    inst.kill()
    return SprintTimeoutError(
        f"Sprint child (pid {pid}) did not answer the handshake within {inst.start_timeout} s"
        + (f"\n--- last lines of its output ---\n{tail}" if tail else ""))


def _died(inst: SprintSubprocessInstance, what: str, exc: BaseException) -> SprintChildError:
    """The pipe broke or the stream is out of step: collect exit status and output tail, clean up."""
    process = inst.process
    pid = process.pid if process is not None else None
    if isinstance(exc, ProtocolError) and not isinstance(exc, EOFError):
        # a malformed answer: the stream is out of step and the child of no further use
        inst.kill()
        return _record(inst, MalformedAnswerError(
            f"Sprint child (pid {pid}) sent a malformed answer {what} and was stopped: {exc}",
            process.returncode if process is not None else None, inst.stderr_tail))
    rc: Optional[int] = None
    if process is not None:
        rc = process.wait(2.0)
        if rc is None:  # it closed the pipe but lives on: it is of no use any more
            rc = process.wait_or_kill(0.0)
            what += " (it had closed the pipe and was killed)"
    inst.kill()
    tail = inst.stderr_tail
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
    return _record(inst, SprintChildError(message, rc, tail))


def _after_remote_error(inst: SprintSubprocessInstance, exc: SprintRemoteError) -> SprintRemoteError:
    """RASR may end on the failure it just reported (a critical error in its own trainer): wait a
    moment for that, so a child that dies is reaped now and restarted before the next batch,
    instead of failing it on a broken pipe. A child that lives on costs this wait once per error."""
    process = inst.process
    if process is None:
        return exc
    rc = process.wait(REMOTE_ERROR_GRACE)
    if rc is None:
        return exc  # it serves on
    inst.kill()
    note = f"; the Sprint child (pid {process.pid}) then {describe_exit(rc)}"
    err = SprintRemoteError(str(exc).split("\n--- child traceback ---\n")[0] + note, exc.remote_traceback)
    return _record(inst, err, str(exc).splitlines()[0] + note)  # type: ignore[return-value]


def _timed_out(inst: SprintSubprocessInstance, what: str, sending: bool) -> SprintTimeoutError:
    pid = inst.child_pid
    inst.kill()
    if sending:
        msg = f"Sprint child (pid {pid}) did not take the request within {inst.timeout} s {what}"
    else:
        msg = f"Sprint child (pid {pid}) gave no answer within {inst.timeout} s {what}"
    try:
        inst.init()
        msg += "; it was restarted"
    except SprintControlError as restart_exc:
        msg += f"; restarting it failed: {restart_exc}"
    return _record(inst, SprintTimeoutError(msg))  # type: ignore[return-value]
