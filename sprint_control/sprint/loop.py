"""The control loop: serving the parent's commands, in RASR's thread (RASR's
``run_control_loop``) or in a daemon thread of this module's own (when RASR drives the corpus)."""

from __future__ import annotations

import threading
import traceback
from typing import TYPE_CHECKING, Callable, Optional

from ..errors import SprintControlError
from .log import log as _log
from .segments import WAIT_STEP

if TYPE_CHECKING:  # pragma: no cover
    from ..control import PythonControl

__all__ = ["ControlLoop"]


class ControlLoop:
    """Runs ``control.handle_next`` until the parent is done; its state is guarded by the
    control's ``cond`` (the segment hand-off's)."""

    def __init__(self, control: PythonControl):
        self.control = control
        self.cond = control.segments.cond
        self.started = False
        self.exited = False
        self.error: Optional[str] = None  # the traceback that ended the loop
        self.thread: Optional[threading.Thread] = None  # the control thread, when the loop has its own

    def run(self, callback: Callable) -> None:
        """Serves the parent's commands until it sends ``exit`` or closes the pipe (see
        ``PythonControl.run_control_loop``)."""
        control = self.control
        with self.cond:
            already = self.started
            if not already:
                self.started = True
                control.callback = callback
                self.cond.notify_all()
        own = callback == control.own_threaded_callback
        if not own and control.sprint_callback is None:
            control.sprint_callback = callback
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
            while control.handle_next():
                pass
            if control.server.failure:  # not the parent's EOF: RASR must not end as if all went well
                raise SprintControlError(f"the control loop ended: {control.server.failure}")
        except BaseException as exc:
            text = traceback.format_exc()
            with self.cond:
                self.error = text
            _log(f"the control loop died: {exc!r}\n{text}", error=True)
            control.server.send_error(exc, text)
            raise
        finally:
            with self.cond:
                self.exited = True
            pending = control.segments.end()
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
        """Starts the loop in a daemon thread and returns once it runs. A failure in that thread
        reaches the parent as an error message and ends RASR's segment list."""
        control = self.control

        def control_loop():
            try:
                control.run_control_loop(control.own_threaded_callback)
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
