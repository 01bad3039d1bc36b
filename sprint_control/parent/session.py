"""The life of one Sprint child as the parent sees it: options, spawn, handshake, restart, kill,
close, and the guard around every exchange (``ChildSession``; ``SprintSubprocessInstance`` adds the
segment-level calls on top).

Every exchange with the child runs inside ``_exchange``: the instance marks itself out of step before
the first byte is written and in step only once the exchange has reached a known state (request
written, answer read). Any exception in between (KeyboardInterrupt included) leaves the mark, and the
child is killed and restarted before its next use: a half-written request or a half-read answer can
never be taken for the next one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional, Union

from ..errors import SprintChildError, SprintControlError, SprintRemoteError
from ..wire.child_link import LOSS_COMMAND
from ..wire.protocol import INIT_VERSION, ParentLink
from ..wire.shm import SharedRegion
from . import failures, fork_guard
from .options import DEFAULTS, POOL_FIELDS, ParentOptions, default_module_path
from .output import describe_exit
from .process import KILL_GRACE, ChildProcess, ExecPath, exec_args, register, sprint_command, unregister

logger = logging.getLogger("sprint_control.parent")


class ChildSession:
    """One Sprint child process: its options, its life cycle and the guard of its exchanges.

    The first five parameters are RETURNN's: ``sprintExecPath`` (a path, or a command list such as
    ``emulator_command()``), ``minPythonControlVersion`` (checked by the child),
    ``sprintConfigStr`` (extra Sprint arguments, split like a shell), ``sprintControlConfig``
    (extra ``key:value`` pairs for ``--*.pymod-config``), ``usePythonSegmentOrder`` (Sprint takes
    its segment order from the module). Keyword-only extras (all of them defined, with their defaults
    and checks, in ``options.ParentOptions``; ``options=`` passes a whole one):

    - ``protocol``: 2 (default) uses the binary protocol when the child offers it, else v1;
      1 forces v1.
    - ``timeout``: seconds to wait for each answer (None: forever); on expiry the child is
      restarted and SprintTimeoutError raised. ``start_timeout`` bounds the start-up handshake.
    - ``module_name`` / ``module_path``: the Sprint-side module (default: this package's
      ``sprint_control.control``); ``returnn.sprint.control`` with the directory holding
      ``returnn`` drives RETURNN's child.
    - ``echo_output``: copy the child's stdout/stderr to our stderr (it always goes to the
      ``sprint_control.parent.child`` logger at debug level and into ``stderr_tail``).
    - ``exit_timeout``: how long ``close`` waits for the child after ``exit`` before it
      terminates and then kills it.
    - ``shared_region``: a ``SharedRegion`` (usually the pool's) that the child inherits; when
      both ends agree, the matrices go through it and only descriptors through the pipe.
    - ``max_payload``: the largest posteriors matrix (bytes) sent; larger segments are refused
      before anything is written. The child is told the same limit.
    """

    Version = INIT_VERSION  # the version number inside the v1 "init" message

    def __init__(
        self,
        sprintExecPath: Optional[ExecPath] = None,
        minPythonControlVersion: int = DEFAULTS.min_python_control_version,
        sprintConfigStr: Union[str, Sequence[str]] = "",
        sprintControlConfig: Optional[Mapping[str, Any]] = None,
        usePythonSegmentOrder: bool = True,
        *,
        options: Optional[ParentOptions] = None,
        shared_region: Optional[SharedRegion] = None,
        start: bool = True,
        **extras: Any,
    ):
        """``extras``: the options of ``ParentOptions`` by name (``protocol``, ``timeout``, ...); or
        ``options``, a whole ``ParentOptions`` (a pool passes its own) in place of all the others."""
        who = type(self).__name__
        if options is None:
            if sprintExecPath is None:
                raise TypeError(f"{who} needs sprintExecPath: the Sprint program, or emulator_command()")
            pool_only = sorted(set(extras) & set(POOL_FIELDS))
            if pool_only:
                raise TypeError(f"{who} got the pool's option(s) {', '.join(map(repr, pool_only))}")
            options = ParentOptions.create(
                who, sprint_exec=sprintExecPath, min_python_control_version=minPythonControlVersion,
                sprint_args=sprintConfigStr, control_config=sprintControlConfig,
                use_python_segment_order=usePythonSegmentOrder, **extras)
        elif sprintExecPath is not None or extras:
            raise TypeError(f"{who} takes either options= or the options one by one, not both")
        self.options = options
        self.requested_protocol = options.protocol
        self.timeout = options.timeout
        self.start_timeout = options.start_timeout
        self.exit_timeout: float = options.exit_timeout
        self.max_payload = options.max_payload
        self.sprintExecPath = options.sprint_exec
        self._exec_args = exec_args(options.sprint_exec)
        self.minPythonControlVersion = options.min_python_control_version
        self.sprintConfig = list(options.sprint_args)
        self.sprintControlConfig = dict(options.control_config or {})
        self.usePythonSegmentOrder = options.use_python_segment_order
        self.module_name = options.module_name
        self.module_path = options.module_path or default_module_path()
        self.name = options.name
        self.echo_output = options.echo_output
        self.output_lines = options.output_lines
        self.env = dict(options.env) if options.env is not None else None
        self.cwd = options.cwd
        self.shared_region = shared_region
        self.reject_non_finite = options.reject_non_finite

        self.parent_pid = os.getpid()
        self.protocol: Optional[int] = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.segments_done = 0
        self.restarts = 0
        self.last_error: Optional[BaseException] = None
        self._process: Optional[ChildProcess] = None
        self._link: Optional[ParentLink] = None
        self._out_of_step = False  # an exchange was cut off: what the child will send next is unknown
        self._last_tail = ""  # the output of the last child, kept after it is gone
        self._killed = False  # kill_now() was sent to the running child
        self._lock = threading.RLock()
        self._state = threading.RLock()  # for a moment, never across a read or write (see _close_under)
        self._exchanging: Optional[int] = None  # the thread reading or writing the child's pipes now
        self._close_reason: Optional[str] = None  # e.g. "the pool was closed": no exchange may start
        self._close_deferred = self._closing = False
        self._started = False
        if start:
            self.init()

    # ------------------------------------------------------------------------------------------
    # state

    @property
    def process(self) -> Optional[ChildProcess]:
        """The running child (None before the start and after close/kill)."""
        return self._process

    @property
    def child_pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        """True while the child runs and its link is usable."""
        return self._process is not None and self._link is not None and self._process.poll() is None

    @property
    def out_of_step(self) -> bool:
        """True when an exchange was cut off (an exception between a request and its full answer):
        the child is killed and restarted before its next use. Also true after ``kill_now``."""
        return self._out_of_step or self._killed

    @property
    def is_calculating(self) -> bool:
        """True while a loss request was sent (or is being sent) and its answer not read: the link's
        ``pending`` request, the one record of it."""
        pending = self._link.pending if self._link is not None else None
        return pending is not None and pending.command == LOSS_COMMAND

    @property
    def busy(self) -> bool:
        """True while a request is pending or an exchange is under way."""
        return self.is_calculating or self._out_of_step

    @property
    def uses_shared_memory(self) -> bool:
        link = self._link
        return link is not None and link.shm is not None

    @property
    def stderr_tail(self) -> str:
        """The last lines the child wrote to stdout/stderr."""
        return self._process.tail() if self._process is not None else self._last_tail

    def build_sprint_args(self, c2p_fd: int, p2c_fd: int) -> list[str]:
        """The child's command line for the given child-side fds (reference section 1)."""
        config = {"c2p_fd": c2p_fd, "p2c_fd": p2c_fd, "minPythonControlVersion": self.minPythonControlVersion,
                  "max_payload": self.max_payload}
        return sprint_command(self._exec_args, self.module_path, self.module_name, config, self.sprintControlConfig,
                              self.usePythonSegmentOrder, self.sprintConfig)

    # ------------------------------------------------------------------------------------------
    # life cycle

    def _check_owner(self) -> None:
        # before any lock: a thread of the parent may have held it at the fork
        fork_guard.check_owner(self.parent_pid, "SprintSubprocessInstance")

    def init(self) -> None:
        """(Re)starts the child: closes a running one, spawns a new one, does the handshake."""
        self._check_owner()
        self._close_reason = None  # started again by its user
        with self._lock:
            self.spawn()
            self.handshake()

    def spawn(self) -> None:
        """Starts a new child (closing a running one, which counts as a restart); ``handshake``
        then greets it. A pool spawns all its children first, so their start-ups overlap."""
        self._check_owner()
        with self._lock:
            if self._process is not None:
                self.close()
            if self._started:
                self.restarts += 1
            self._started = True
            region_fds = (self.shared_region.fd,) if self.shared_region is not None else ()
            process = ChildProcess.spawn(self.build_sprint_args, env=self.env, cwd=self.cwd, extra_fds=region_fds,
                                         output_lines=self.output_lines, echo_output=self.echo_output)
            try:
                link = ParentLink(process.read_fd, process.write_fd, timeout=self.timeout,
                                  max_payload=self.max_payload)
            except BaseException:
                os.close(process.read_fd)
                os.close(process.write_fd)
                process.kill_now()
                process.wait_or_kill(1.0)
                raise
            self._process, self._link = process, link
            self._killed = False
            self.protocol = None
            self._out_of_step = False
            register(self)

    def handshake(self) -> None:
        """Greets a freshly spawned child (v1 ``init``, then protocol 2 and shared memory if both
        ends can), bounded by ``start_timeout``."""
        link = self._require_link()
        link.timeout = self.start_timeout
        try:
            with self._exchange("during the start-up handshake", handshake=True):
                self.protocol = link.handshake(self.name, protocol=self.requested_protocol, shared=self.shared_region)
        finally:
            if self._link is link:
                link.timeout = self.timeout
        logger.debug("Sprint child pid %s speaks protocol %s", self.child_pid, self.protocol)

    def needs_restart(self) -> Optional[str]:
        """Why the child must be (re)started before its next use, or None when it is ready."""
        if self._out_of_step:
            return "an exchange with it was interrupted"
        if self._killed:
            return "it was killed when its batch was interrupted"
        process = self._process
        if process is None:
            if not self._started:
                return "it was not started"
            error = self.last_error
            return f"it failed: {error}".splitlines()[0] if error is not None else "it was stopped"
        if process.poll() is not None:
            return f"it {describe_exit(process.returncode)} after its last answer"
        return None

    def ensure_running(self) -> None:
        """Restarts the child when ``needs_restart`` says so: one that is out of step is killed,
        one that died after its last answer is reaped (rather than failing the next request on a
        broken pipe)."""
        self._check_owner()  # in a copy, poll() reads "exited with status 0": no false restart warning
        if self._close_reason is not None:  # its pool was closed: no restart behind the closer's back
            raise _closed_error(self, "")
        with self._lock:
            reason = self.needs_restart()
            if reason is None:
                return
            if self._started:
                pid = self.child_pid
                logger.warning("restarting the Sprint child%s: %s", f" (pid {pid})" if pid else "", reason)
            if self._out_of_step or self._killed:
                self.kill()
            self.init()

    def abandon_request(self) -> None:
        """The answer to the pending request will not be read (its reader was interrupted): the
        child is out of step and restarts before its next use."""
        if self.is_calculating:
            self._out_of_step = True

    def restart(self) -> None:
        """Kills the child (whatever it is doing) and starts a new one."""
        self._check_owner()
        with self._lock:
            self.kill()
            self.init()

    def kill_now(self) -> None:
        """SIGKILL only, from any thread: a thread blocked on this child's pipes then sees EOF or
        EPIPE and cleans up itself (the fds are not touched here)."""
        self._check_owner()
        process = self._process
        if process is not None:
            self._killed = True  # it may take a moment to die: poll() must not be trusted until then
            process.kill_now()

    def kill(self) -> None:
        """Kills the child right away (after a timeout, a broken stream or an interrupted exchange)
        and reaps it."""
        self._check_owner()
        process, link = self._process, self._link
        self._link = None
        if link is not None:
            link.close()
        if process is not None:
            process.kill_now()
            process.wait_or_kill(KILL_GRACE)
            process.join_output(1.0)
            self._last_tail = process.tail()
        self._process = None
        self._out_of_step = False
        unregister(self)

    def close(self, *, reason: Optional[str] = None) -> Optional[int]:
        """Asks the child to exit, waits ``exit_timeout``, then terminates/kills it; reaps it and
        closes every fd. Returns its exit status (None when there was no child). Idempotent. A child
        with a request under way is killed at once: it would not read ``exit``. In a forked copy it
        does nothing (the child is the parent's; ``exit`` would end it). Under an exchange of
        another thread (or of this one, interrupted by a signal handler) see ``_close_under``.
        ``reason`` (e.g. "the pool was closed") refuses every later exchange and restart until ``init()``."""
        if fork_guard.in_copy(self.parent_pid) or _close_under(self, reason):
            return None
        try:
            return self._close_now()
        finally:
            self._closing = False

    def _close_now(self) -> Optional[int]:
        with self._lock:
            process, link = self._process, self._link
            if process is None:
                return None
            if self.busy:
                self.kill()
                return process.returncode
            if link is not None and process.poll() is None:
                try:
                    link.timeout = self.exit_timeout  # a child that reads nothing must not block close()
                    link.send_exit()
                except (OSError, SprintControlError, ValueError):
                    pass
            if link is not None:
                link.close()  # the child also sees EOF on its read end
            self._link = None
            rc = process.wait_or_kill(self.exit_timeout)
            process.join_output(1.0)
            self._last_tail = process.tail()
            self._process = None
            unregister(self)
            if rc not in (0, None):
                logger.debug("Sprint child pid %s %s", process.pid, describe_exit(rc))
            return rc

    def exit_handler(self) -> None:
        """Closes the child (RETURNN's name; called at interpreter exit)."""
        if os.getpid() != self.parent_pid:
            return  # a forked copy of the parent must not touch our children
        self.close()

    def _require_link(self) -> ParentLink:
        self._check_owner()
        if self._close_reason is not None and self._link is None:
            raise _closed_error(self, "")
        if self._link is None or self._process is None:
            raise SprintChildError(
                "the Sprint child is not running (it died or was closed); call init() to restart it",
                None, self.stderr_tail,
            )
        return self._link

    def _exchange(self, what: str, waiting_for: str = "", subject: Any = None, *,
                  sending: bool = False, handshake: bool = False, stay_out_of_step: bool = False) -> _Exchange:
        """One step of an exchange (see ``_Exchange``); ``what`` and ``waiting_for`` describe it for
        the error messages, formatted with ``subject`` only when something fails."""
        return _Exchange(self, what, waiting_for or what, subject, sending, handshake, stay_out_of_step)

    def __del__(self):  # last resort; close() / atexit are the real paths
        try:
            if self._process is not None and self._process.poll() is None and os.getpid() == self.parent_pid:
                self.kill()
        except Exception:
            pass


def _close_under(session: ChildSession, reason: Optional[str]) -> bool:
    """The first step of ``close``: True when a thread is reading or writing the child's pipes. The
    child is then killed (SIGKILL) and nothing else done: that thread's read or write ends, it
    closes the fds itself when its exchange ends (so no fd number is closed while it may still be
    used) and raises ``SprintChildError`` with ``reason``. Else no exchange may start until the
    close is done (False: the caller closes)."""
    with session._state:
        if reason is not None:
            session._close_reason = reason
        if session._exchanging is None:
            session._closing = True
            return False
        session._close_reason = session._close_reason or "the Sprint child was closed"
        session._close_deferred = True
        process = session._process
        if process is not None:
            session._killed = True
            process.kill_now()
        return True


def _closed_error(session: ChildSession, what: str, exc: Optional[BaseException] = None,
                  process: Optional[ChildProcess] = None) -> SprintChildError:
    process = process or session._process
    rc = process.returncode if process is not None else None
    text = f"{session._close_reason or 'the Sprint child was closed'} {what}".rstrip()
    text += "; the Sprint child was killed" if exc is not None else ""
    return SprintChildError(text + " (close() from another thread or a signal handler)", rc, session.stderr_tail)


class _Exchange:
    """A context manager around one step of an exchange with the child: the session is out of step
    from its start until it completes; a failure is translated in one place (``failures.translate``).
    Whether a request is pending is the link's record alone (``ParentLink.pending``). A class, not a
    generator: it runs twice per segment."""

    __slots__ = ("session", "what", "waiting_for", "subject", "sending", "handshake", "stay", "marked")

    def __init__(self, session: ChildSession, what: str, waiting_for: str, subject: Any, sending: bool,
                 handshake: bool, stay: bool):
        self.session = session
        self.what = what
        self.waiting_for = waiting_for
        self.subject = subject
        self.sending = sending
        self.handshake = handshake
        self.stay = stay

    def __enter__(self) -> None:
        session = self.session
        self.marked = False
        try:
            with session._state:
                self._check_free(session)
                self.marked = True
                session._exchanging = threading.get_ident()
            session._out_of_step = True
        except BaseException:
            if self.marked:  # interrupted before anything was read or written
                self._unmark(session)
            raise

    def _check_free(self, session: ChildSession) -> None:
        if session._exchanging == threading.get_ident():
            raise SprintControlError(
                f"re-entered: this thread is already in an exchange with the Sprint child (pid"
                f" {session.child_pid}) {self.what.format(self.subject)} (a call from a signal handler?);"
                " call it after the interrupted call returned")
        if session._exchanging is not None:
            raise SprintControlError("another thread is in an exchange with this Sprint child: an instance serves"
                                     " one thread at a time (a pool's get_free_instance hands out free ones)")
        if session._close_reason is not None or session._closing:
            raise _closed_error(session, self.what.format(self.subject))

    @staticmethod
    def _unmark(session: ChildSession) -> Optional[ChildProcess]:
        """Ends the exchange's mark; when a close() came meanwhile, closes the fds (in the thread that
        used them) and returns the killed child."""
        with session._state:
            session._exchanging = None
            deferred, session._close_deferred = session._close_deferred, False
        if not deferred:
            return None
        process = session._process
        session.kill()
        return process

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        session = self.session
        closed = self._unmark(session)
        if closed is not None:  # close() came during this exchange and killed the child: fds closed above
            err = _closed_error(session, self.what.format(self.subject), exc, closed)
            if exc_type is None or not isinstance(exc, (SprintControlError, EOFError, OSError)):
                return False  # done before the kill took effect, or an interrupt: it goes on as it is
            raise err from exc
        if exc_type is None:
            session._out_of_step = self.stay
            return False
        if not isinstance(exc, (SprintControlError, EOFError, OSError)):
            return False  # not a failure of the exchange (an interrupt): the session stays out of step
        if isinstance(exc, SprintRemoteError) and not self.handshake:
            # the child's error answer was read whole: the stream is in step (the link is idle again)
            session._out_of_step = False
        what, waiting_for = (text.format(self.subject) for text in (self.what, self.waiting_for))
        failure = failures.translate(session.process, exc, what, waiting_for, timeout=session.timeout,
                                     start_timeout=session.start_timeout, handshake=self.handshake,
                                     sending=self.sending)
        if failure is None:
            return False
        error = self._apply(failure)
        if isinstance(error, SprintRemoteError):
            raise error from None
        raise error from exc

    def _apply(self, failure: failures.Failure) -> BaseException:
        """Does what the failure asks to the child, then returns its error (kept and logged if asked)."""
        session = self.session
        process = session.process
        if failure.action is failures.Action.NONE:
            return failure.error(failures.After(None, ""))
        session.kill()
        after = failures.After(process.returncode if process is not None else None, session.stderr_tail)
        if failure.action is failures.Action.RESTART:
            try:
                session.init()
            except SprintControlError as restart_exc:
                after = failures.After(after.returncode, after.tail, restart_exc)
        err = failure.error(after)
        if failure.record:
            session.last_error = err
            logger.warning("%s", failure.summary or str(err).splitlines()[0])
        return err
