"""The exceptions of sprint_control: one base class, one subclass per kind of failure."""

from __future__ import annotations

__all__ = [
    "SprintControlError",
    "ProtocolError",
    "TruncatedFrameError",
    "SprintChildError",
    "SprintRemoteError",
    "SprintTimeoutError",
    "MalformedAnswerError",
]


class SprintControlError(Exception):
    """Base class of every error this package raises on purpose."""


class ProtocolError(SprintControlError, ValueError):
    """A message on the wire is malformed, unexpected or not allowed (e.g. a forbidden pickle global)."""


class TruncatedFrameError(ProtocolError, EOFError):
    """The pipe ended in the middle of a message.

    It is both a ProtocolError and an EOFError, so code written against the old link
    (which caught EOFError) still works.
    """

    def __init__(self, what: str, expected: int, got: int):
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(f"pipe closed in the middle of the {what}: expected {expected} bytes, got {got}")


class SprintChildError(SprintControlError):
    """The Sprint child process died, failed to start, or closed the pipe.

    ``returncode`` is the exit status (negative: killed by that signal) or None when it is still
    running; ``stderr_tail`` holds the last lines it wrote to stderr, when they were captured.
    """

    def __init__(self, message: str, returncode: int | None = None, stderr_tail: str = ""):
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        full = message
        if stderr_tail:
            full += "\n--- last lines of the child's stderr ---\n" + stderr_tail.rstrip()
        super().__init__(full)


class SprintRemoteError(SprintControlError):
    """The child raised an exception while handling a command; the link itself is still usable.

    ``remote_traceback`` is the formatted traceback from the child.
    """

    def __init__(self, message: str, remote_traceback: str = ""):
        self.remote_traceback = remote_traceback
        super().__init__(message if not remote_traceback else f"{message}\n--- child traceback ---\n{remote_traceback}")


class SprintTimeoutError(SprintControlError, TimeoutError):
    """No answer arrived from the child within the configured timeout."""


class MalformedAnswerError(ProtocolError, SprintChildError):
    """The child's answer was malformed or did not belong to the request (another segment or
    sequence number): a ProtocolError, never a wrong loss. The child was stopped (the stream is out
    of step), so it is a SprintChildError too, with ``returncode`` and ``stderr_tail``."""
