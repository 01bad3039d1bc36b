"""The control loop: serving the parent's commands, in RASR's thread (RASR's
``run_control_loop``) or in a daemon thread of this module's own (when RASR drives the corpus).

The loop owns the callback it runs with: RASR's, or the module's own threaded one. It knows nothing
of the facade above it (``control.PythonControl``); it gets the segment hand-off (for its
condition and its end), that own callback, and the calls it makes: serve the next command, tell the parent why the loop
died, and ask why the pipes failed (if they did).
"""

from __future__ import annotations

import threading
import traceback
from typing import TYPE_CHECKING, Callable, Optional

from ..errors import SprintControlError
from .log import log as _log
from .segments import WAIT_STEP

if TYPE_CHECKING:  # pragma: no cover
    from .segments import SegmentHandoff

__all__ = ["ControlLoop"]


class ControlLoop:
    """Runs ``handle_next`` until the parent is done; its state is guarded by the segment
    hand-off's ``cond``.

    :param segments: the hand-off between the control thread and RASR's thread
    :param own_callback: the callback the threaded loop runs with, in place of RASR's
    :param handle_next: serves one command of the parent; False when the loop should end
    :param send_error: ``send_error(exc, traceback_text)`` tells the parent why the loop died
    :param pipe_failure: why reading or writing the parent's pipes failed (not the parent's EOF), else None
    """

    def __init__(self, segments: SegmentHandoff, own_callback: Callable, handle_next: Callable[[], bool],
                 send_error: Callable[[BaseException, str], None],
                 pipe_failure: Callable[[], Optional[str]] = lambda: None):
        self.segments = segments
        self.own_callback = own_callback
        self.handle_next = handle_next
        self.send_error = send_error
        self.pipe_failure = pipe_failure
        self.cond = segments.cond
        self.started = False
        self.exited = False
        #: the callback of the running loop: RASR's, or ``own_callback``; None before it starts
        self.callback: Optional[Callable] = None
        self.error: Optional[str] = None  # the traceback that ended the loop
        self.thread: Optional[threading.Thread] = None  # the control thread, when the loop has its own

    @property
    def threaded(self) -> bool:
        """The loop runs with the module's own callback: loss requests go to RASR's thread."""
        return self.callback is not None and self.callback == self.own_callback

    @property
    def rasr_callback(self) -> Optional[Callable]:
        """RASR's callback when the loop runs with it, else None."""
        return None if self.callback is None or self.threaded else self.callback

    def run(self, callback: Callable) -> None:
        """Serves the parent's commands until it sends ``exit`` or closes the pipe (see
        ``PythonControl.run_control_loop``)."""
        with self.cond:
            already = self.started
            if not already:
                self.started = True
                self.callback = callback
                self.cond.notify_all()
        if already:
            # e.g. the segment order started the threaded loop first: serve through it until it ends.
            _log("run_control_loop: the control loop already runs in its own thread; waiting for it to end")
            with self.cond:
                while not self.exited:
                    self.cond.wait(WAIT_STEP)
            return
        try:
            version = callback("version")
        except Exception as exc:
            version = f"<unknown: {exc!r}>"
        _log(f"control loop running (callback version: {version!r})")
        try:
            while self.handle_next():
                pass
            failure = self.pipe_failure()
            if failure:  # not the parent's EOF: RASR must not end as if all went well
                raise SprintControlError(f"the control loop ended: {failure}")
        except BaseException as exc:
            text = traceback.format_exc()
            with self.cond:
                self.error = text
            _log(f"the control loop died: {exc!r}\n{text}", error=True)
            self.send_error(exc, text)
            raise
        finally:
            with self.cond:
                self.exited = True
            pending = self.segments.end()
            if pending is not None:
                _log(f"segment {pending.name!r} was never handed to RASR: the control loop ended", verbose=True)
            _log("control loop ended")

    def ensure_running(self) -> None:
        """Starts the threaded loop unless a control loop already runs."""
        with self.cond:
            if self.started:
                return
        self.run_threaded()

    def run_threaded(self) -> None:
        """Starts the loop in a daemon thread with ``own_callback`` and returns once it runs. A
        failure in that thread reaches the parent as an error message and ends RASR's segment list."""

        def control_loop():
            try:
                self.run(self.own_callback)
            except BaseException:  # already logged and sent by run
                pass

        thread = threading.Thread(target=control_loop, name="sprint_control.control_loop", daemon=True)
        with self.cond:
            if self.started:
                return
            self.thread = thread
        thread.start()
        with self.cond:
            while not self.started:
                if not thread.is_alive():
                    details = self.error or "no details"
                    raise SprintControlError(f"the control thread ended before it started: {details}")
                self.cond.wait(WAIT_STEP)
