"""The parent side: what a training framework calls to get losses and error signals from Sprint.

Three layers, from low to high:

- ``SprintSubprocessInstance``: one Sprint child process and its two pipes. Same constructor and
  methods as RETURNN's class of that name (``get_loss_and_error_signal__send/__have_data/__read``,
  ``init``, ``exit_handler``), plus keyword-only extras (``protocol``, ``timeout``, module name/path).
- ``SprintInstancePool``: RETURNN's pool (``get_global_instance``, ``get_batch_loss_and_error_signal``,
  ``get_automata_for_batch``, ``get_free_instance``). A batch is spread over the children
  longest-sequence-first; each child is served by its own thread, and the error signals land
  straight in one preallocated (time, batch, label) array.
- ``SprintPool``: the documented modern entry point; a context manager with snake_case options
  and typed results (``BatchResult``, ``SegmentResult``, ``Automata``).

Children are started with ``subprocess.Popen(pass_fds=..., close_fds=True)``: no Python code runs
between fork and exec, only the two pipe ends (plus stdio) reach the child. Its stdout and stderr
go through one pipe that a daemon thread drains into a bounded tail (shown when the child dies)
and into the ``sprint_control.parent.child`` logger at debug level (or echoed, ``echo_output``).
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import dataclasses
import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from .errors import (
    ProtocolError,
    SprintChildError,
    SprintControlError,
    SprintRemoteError,
    SprintTimeoutError,
)
from .wire import framing
from .wire import shm as shm_module
from .wire.protocol import PROTOCOL_V1, PROTOCOL_V2, V1_MAX_MESSAGE, Link
from .wire.shm import SharedRegion

__all__ = [
    "SprintSubprocessInstance",
    "SprintInstancePool",
    "SprintPool",
    "BatchResult",
    "SegmentResult",
    "Automata",
    "emulator_command",
    "default_module_path",
    "DEFAULT_MODULE_NAME",
]

logger = logging.getLogger("sprint_control.parent")
child_logger = logging.getLogger("sprint_control.parent.child")

#: The Sprint-side module the children load unless told otherwise.
DEFAULT_MODULE_NAME = "sprint_control.control"
#: Environment of a child: the parent's pid (the module ends the child when that parent is gone), and
#: "1" when the module may ask the kernel to kill the child together with the parent.
PARENT_PID_ENV = "SPRINT_CONTROL_PARENT_PID"
PDEATHSIG_ENV = "SPRINT_CONTROL_PDEATHSIG"
#: Seconds to wait after a child reported a failure, in case it ends on it (see ``_after_remote_error``).
REMOTE_ERROR_GRACE = 0.2

ExecPath = Union[str, os.PathLike, Sequence[str]]


def default_module_path() -> str:
    """The directory that makes this package importable (what ``--*.pymod-path`` needs)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emulator_command() -> list[str]:
    """The command line that starts the bundled RASR emulator with this interpreter."""
    return [sys.executable, "-m", "sprint_control.emulator"]


def _describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)(: |$)")


def _last_words(tail: str) -> str:
    """The child's last output line, preceded by the last exception line of a traceback when there
    is one before it (e.g. ``ImportError: ...`` then RASR's critical error about it)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    exc_line = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
    if exc_line is None or exc_line == last:
        return last
    return f"{exc_line} | {last}"


# Instances alive in this process, closed at interpreter exit (weak: a dropped instance is not kept).
_LIVE: weakref.WeakSet[SprintSubprocessInstance] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _close_all_at_exit() -> None:
    with _LIVE_LOCK:
        instances = list(_LIVE)
    for inst in instances:
        try:
            inst.exit_handler()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_close_all_at_exit)


class _OutputDrain:
    """Drains a child's stdout/stderr pipe in a daemon thread: bounded tail + logger (+ echo)."""

    def __init__(self, fd: int, label: str, max_lines: int, echo: bool):
        self.fd = fd
        self.label = label
        self.echo = echo
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self.thread = threading.Thread(target=self._run, name=f"{label} output", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except InterruptedError:  # pragma: no cover
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                if self.echo:
                    try:
                        sys.stderr.write(chunk.decode("utf-8", "replace"))
                        sys.stderr.flush()
                    except Exception:  # pragma: no cover - a closed stderr must not kill the drain
                        pass
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._line(raw)
            if pending:
                self._line(pending)
        finally:
            try:
                os.close(self.fd)
            except OSError:  # pragma: no cover
                pass

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        child_logger.debug("%s: %s", self.label, line)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def tail(self) -> str:
        return "\n".join(self.lines)


def _as_exec_args(path: ExecPath) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        exe = os.fspath(path)
        if os.sep not in exe:
            found = shutil.which(exe)
            if found:
                exe = found
        if not os.path.exists(exe):
            raise SprintChildError(f"Sprint executable {exe!r} does not exist (expected a path to nn-trainer or"
                                   " a command list such as [python, -m, sprint_control.emulator])")
        return [exe]
    args = [os.fspath(a) for a in path]
    if not args:
        raise SprintChildError("the Sprint command is an empty list")
    return args


class SprintSubprocessInstance:
    """One Sprint child process that computes loss and error signal of one segment at a time.

    The first five parameters are RETURNN's: ``sprintExecPath`` (a path, or a command list such as
    ``emulator_command()``), ``minPythonControlVersion`` (checked by the child),
    ``sprintConfigStr`` (extra Sprint arguments, split like a shell), ``sprintControlConfig``
    (extra ``key:value`` pairs for ``--*.pymod-config``), ``usePythonSegmentOrder`` (Sprint takes
    its segment order from the module). Keyword-only extras:

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
    """

    Version = 1  # the version number inside the v1 "init" message

    def __init__(
        self,
        sprintExecPath: ExecPath,
        minPythonControlVersion: int = 2,
        sprintConfigStr: Union[str, Sequence[str]] = "",
        sprintControlConfig: Optional[Mapping[str, Any]] = None,
        usePythonSegmentOrder: bool = True,
        *,
        protocol: int = PROTOCOL_V2,
        timeout: Optional[float] = None,
        start_timeout: Optional[float] = 120.0,
        exit_timeout: float = 5.0,
        module_name: str = DEFAULT_MODULE_NAME,
        module_path: Optional[str] = None,
        name: str = "SprintSubprocessInstance",
        echo_output: bool = False,
        output_lines: int = 200,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        shared_region: Optional[SharedRegion] = None,
        reject_non_finite: bool = False,
        start: bool = True,
    ):
        if protocol not in (PROTOCOL_V1, PROTOCOL_V2):
            raise ValueError(f"protocol must be 1 or 2, got {protocol!r}")
        self.sprintExecPath = sprintExecPath
        self._exec_args = _as_exec_args(sprintExecPath)
        self.minPythonControlVersion = int(minPythonControlVersion)
        if isinstance(sprintConfigStr, str):
            self.sprintConfig = shlex.split(sprintConfigStr)
        else:
            self.sprintConfig = [str(a) for a in sprintConfigStr]
        self.sprintControlConfig = dict(sprintControlConfig or {})
        self.usePythonSegmentOrder = bool(usePythonSegmentOrder)
        self.requested_protocol = protocol
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.exit_timeout = exit_timeout
        self.module_name = module_name
        self.module_path = module_path or default_module_path()
        self.name = name
        self.echo_output = echo_output
        self.output_lines = output_lines
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.shared_region = shared_region
        self.reject_non_finite = bool(reject_non_finite)

        self.parent_pid = os.getpid()
        self.protocol: Optional[int] = None
        self.is_calculating = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.segments_done = 0
        self.restarts = 0
        self.last_error: Optional[BaseException] = None
        self._proc: Optional[subprocess.Popen] = None
        self._link: Optional[Link] = None
        self._drain: Optional[_OutputDrain] = None
        self._cur_seg_name: Optional[str] = None
        self._cur_shape: Optional[tuple[int, int]] = None
        self._lock = threading.RLock()
        self._started = False
        if start:
            self.init()

    # ------------------------------------------------------------------------------------------
    # life cycle

    @property
    def child_pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the child runs and its link is usable."""
        return self._proc is not None and self._link is not None and self._proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        """The last lines the child wrote to stdout/stderr."""
        return self._drain.tail() if self._drain is not None else ""

    def build_sprint_args(self, c2p_fd: int, p2c_fd: int) -> list[str]:
        """The child's command line for the given child-side fds (reference section 1)."""
        config = f"c2p_fd:{c2p_fd},p2c_fd:{p2c_fd},minPythonControlVersion:{self.minPythonControlVersion}"
        if self.sprintControlConfig:
            config += "," + ",".join(f"{k}:{v}" for k, v in sorted(self.sprintControlConfig.items()))
        args = list(self._exec_args) + [
            "--*.python-control-enabled=true",
            f"--*.pymod-path={self.module_path}",
            f"--*.pymod-name={self.module_name}",
            f"--*.pymod-config={config}",
        ]
        if self.usePythonSegmentOrder:
            args += [
                "--*.python-segment-order=true",
                f"--*.python-segment-order-pymod-path={self.module_path}",
                f"--*.python-segment-order-pymod-name={self.module_name}",
                f"--*.python-segment-order-config={config}",
                "--*.python-segment-order-allow-copy=false",
            ]
        return args + self.sprintConfig

    def init(self) -> None:
        """(Re)starts the child: closes a running one, spawns a new one, does the handshake."""
        with self._lock:
            if self._proc is not None:
                self.close()
            if self._started:
                self.restarts += 1
            self._started = True
            self._spawn()
            self._handshake()

    def _spawn(self) -> None:
        if os.getpid() != self.parent_pid:
            raise SprintControlError("this SprintSubprocessInstance belongs to another process (forked parent)")
        c2p_r, c2p_w = os.pipe()
        p2c_r, p2c_w = os.pipe()
        out_r, out_w = os.pipe()
        args = self.build_sprint_args(c2p_w, p2c_r)
        logger.debug("starting Sprint: %s", shlex.join(args))
        try:
            # close_fds + pass_fds: exactly the two pipe ends reach the child; no preexec_fn, so no
            # Python runs between fork and exec (safe in a multi-threaded parent).
            region_fds = (self.shared_region.fd,) if self.shared_region is not None else ()
            proc = subprocess.Popen(
                args,
                pass_fds=(c2p_w, p2c_r) + region_fds,
                close_fds=True,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                env=self._child_env(),
                cwd=self.cwd,
            )
        except OSError as exc:
            for fd in (c2p_r, p2c_w, out_r):
                os.close(fd)
            raise SprintChildError(f"cannot start Sprint {shlex.join(args)!r}: {exc}") from exc
        finally:
            for fd in (c2p_w, p2c_r, out_w):
                os.close(fd)
        self._proc = proc
        self._drain = _OutputDrain(out_r, f"sprint[{proc.pid}]", self.output_lines, self.echo_output)
        self._link = Link(c2p_r, p2c_w, timeout=self.timeout)
        self.protocol = None
        self.is_calculating = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _child_env(self) -> dict[str, str]:
        """The child's environment: ours (or ``env``) plus what the Sprint-side module needs to end
        itself when this process dies (see ``sprint_control.control``): our pid, and whether the
        kernel may kill it with us (``PR_SET_PDEATHSIG``). Linux sends that signal when the *thread*
        that spawned the child ends, so it is asked for only from the main thread, which lives as
        long as the process; children started in other threads rely on the module's watchdog."""
        env = dict(os.environ if self.env is None else self.env)
        env[PARENT_PID_ENV] = str(os.getpid())
        if threading.current_thread() is threading.main_thread():
            env[PDEATHSIG_ENV] = "1"
        else:
            env.pop(PDEATHSIG_ENV, None)
        return env

    def _handshake(self) -> None:
        link = self._link
        assert link is not None
        link.timeout = self.start_timeout
        try:
            self.protocol = link.handshake(self.name, protocol=self.requested_protocol, shared=self.shared_region)
        except SprintRemoteError as exc:
            proc = self._proc
            self._kill()
            raise SprintChildError(f"Sprint child refused the handshake: {exc}",
                                   proc.returncode if proc is not None else None, self.stderr_tail) from exc
        except SprintTimeoutError as exc:
            self._kill()
            raise SprintTimeoutError(
                f"Sprint child (pid {self.child_pid}) did not answer the handshake within {self.start_timeout} s"
                + (f"\n--- last lines of its output ---\n{self.stderr_tail}" if self.stderr_tail else "")
            ) from exc
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died("during the start-up handshake", exc) from exc
        finally:
            link.timeout = self.timeout
        logger.debug("Sprint child pid %s speaks protocol %s", self.child_pid, self.protocol)

    def close(self) -> Optional[int]:
        """Asks the child to exit, waits ``exit_timeout``, then terminates/kills it; reaps it and
        closes every fd. Returns its exit status (None when there was no child). Idempotent."""
        with self._lock:
            proc, link = self._proc, self._link
            if proc is None:
                return None
            if link is not None and proc.poll() is None and not self.is_calculating:
                try:
                    link.timeout = self.exit_timeout  # a child that reads nothing must not block close()
                    link.send_exit()
                except (OSError, SprintControlError, ValueError):
                    pass
            if link is not None:
                link.close()  # the child also sees EOF on its read end
            self._link = None
            rc = self._wait_or_kill(proc, self.exit_timeout)
            if self._drain is not None:
                self._drain.join(1.0)
            self._proc = None
            self.is_calculating = False
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if rc not in (0, None):
                logger.debug("Sprint child pid %s %s", proc.pid, _describe_exit(rc))
            return rc

    def exit_handler(self) -> None:
        """Closes the child (RETURNN's name; called at interpreter exit)."""
        if os.getpid() != self.parent_pid:
            return  # a forked copy of the parent must not touch our children
        self.close()

    @staticmethod
    def _wait_or_kill(proc: subprocess.Popen, wait: float) -> Optional[int]:
        for action, seconds in ((None, wait), (proc.terminate, 1.0), (proc.kill, 5.0)):
            if action is not None:
                try:
                    action()
                except OSError:  # pragma: no cover - already gone
                    pass
            try:
                return proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                continue
        logger.error("Sprint child pid %s did not die after SIGKILL", proc.pid)  # pragma: no cover
        return None  # pragma: no cover

    def _kill(self) -> None:
        """Kills the child right away (after a timeout or a broken stream) and reaps it."""
        proc = self._proc
        if self._link is not None:
            self._link.close()
            self._link = None
        if proc is not None:
            self._wait_or_kill(proc, 0.0) if proc.poll() is None else proc.wait()
            if self._drain is not None:
                self._drain.join(1.0)
        self._proc = None
        self.is_calculating = False
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _returncode(self) -> Optional[int]:
        return self._proc.returncode if self._proc is not None else None

    def _died(self, what: str, exc: BaseException) -> SprintChildError:
        """The pipe broke: collect exit status and output tail, clean up, build the error."""
        proc = self._proc
        pid = proc.pid if proc is not None else None
        rc: Optional[int] = None
        if isinstance(exc, ProtocolError) and not isinstance(exc, EOFError):
            # a malformed answer: the stream is out of step and the child of no further use
            self._kill()
            err = SprintChildError(
                f"Sprint child (pid {pid}) sent a malformed answer {what} and was stopped: {exc}",
                proc.returncode if proc is not None else None, self.stderr_tail,
            )
            self.last_error = err
            logger.warning("%s", str(err).splitlines()[0])
            return err
        if proc is not None:
            try:
                rc = proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                # it closed the pipe but lives on: it is of no use any more
                self._wait_or_kill(proc, 0.0)
                rc = proc.returncode
                what += " (it had closed the pipe and was killed)"
        self._kill()
        tail = self._drain.tail() if self._drain is not None else ""
        # the pipe error says little; the child's last words usually say why (a critical error, the
        # exception of a failed import, ...), so they go into the first line too
        words = _last_words(tail)
        err = SprintChildError(
            f"Sprint child (pid {pid}) {_describe_exit(rc)} {what}: {type(exc).__name__}: {exc}"
            + (f"; the child said: {words}" if words else "; it wrote no output"),
            rc, tail,
        )
        self.last_error = err
        logger.warning("%s", str(err).splitlines()[0])
        return err

    def _after_remote_error(self, exc: SprintRemoteError) -> SprintRemoteError:
        """RASR may end on the failure it just reported (a critical error in its own trainer): wait a
        moment for that, so a child that dies is reaped now and restarted before the next batch,
        instead of failing it on a broken pipe. A child that lives on costs this wait once per error."""
        proc = self._proc
        if proc is None:
            return exc
        try:
            rc = proc.wait(timeout=REMOTE_ERROR_GRACE)
        except subprocess.TimeoutExpired:
            return exc  # it serves on
        self._kill()
        note = f"; the Sprint child (pid {proc.pid}) then {_describe_exit(rc)}"
        logger.warning("%s", (str(exc).splitlines()[0] + note))
        err = SprintRemoteError(str(exc).split("\n--- child traceback ---\n")[0] + note, exc.remote_traceback)
        self.last_error = err
        return err

    def _timed_out(self, what: str, exc: SprintTimeoutError, sending: bool = False) -> SprintTimeoutError:
        pid = self.child_pid
        self._kill()
        if sending:
            msg = f"Sprint child (pid {pid}) did not take the request within {self.timeout} s {what}"
        else:
            msg = f"Sprint child (pid {pid}) gave no answer within {self.timeout} s {what}"
        try:
            self.init()
            msg += "; it was restarted"
        except SprintControlError as restart_exc:
            msg += f"; restarting it failed: {restart_exc}"
        err = SprintTimeoutError(msg)
        self.last_error = err
        logger.warning("%s", msg)
        return err

    def _require_link(self) -> Link:
        if os.getpid() != self.parent_pid:
            raise SprintControlError("this SprintSubprocessInstance belongs to another process (forked parent)")
        if self._link is None or self._proc is None:
            raise SprintChildError(
                "the Sprint child is not running (it died or was closed); call init() to restart it",
                self._returncode(), self.stderr_tail,
            )
        return self._link

    # ------------------------------------------------------------------------------------------
    # the segment-level calls (RETURNN's names)

    def get_loss_and_error_signal__send(self, seg_name: Union[str, bytes], seg_len: int,
                                        log_posteriors: np.ndarray, out: Optional[np.ndarray] = None) -> None:
        """Sends one segment's log-posteriors, (time, label) float32 (a row-strided view is fine).

        ``out``: where ``__read`` will be asked to put the error signal; over shared memory the child
        then writes it there itself.
        """
        if self.is_calculating:
            raise SprintControlError("a request is still pending on this instance: read its answer first")
        if isinstance(seg_name, bytes):
            seg_name = seg_name.decode("utf-8")
        if not seg_name:
            raise ValueError("seg_name must be a non-empty segment name")
        post = np.asarray(log_posteriors)
        if post.ndim != 2:
            raise ValueError(f"log_posteriors must be a (time, label) matrix, got shape {post.shape}")
        _check_real_dtype(post)
        if int(seg_len) != post.shape[0]:
            raise ValueError(f"seg_len {seg_len} does not match the posteriors' {post.shape[0]} frames")
        if post.shape[0] == 0:
            raise ValueError(f"segment {seg_name!r} has no frames: Sprint computes no criterion on an empty"
                             " segment (a pool answers such sequences itself with loss 0)")
        if post.dtype != np.float32:
            post = post.astype(np.float32)
        if self.reject_non_finite:
            _check_finite(post, seg_name)
        link = self._require_link()
        if link.protocol == PROTOCOL_V1 and post.nbytes > V1_MAX_MESSAGE - (1 << 20):
            # refuse before anything is written: the stream stays usable
            raise ProtocolError(f"posteriors of {post.nbytes} bytes do not fit a v1 message (2 GiB limit)")
        try:
            link.send_loss_request(seg_name, post, out=out)
        except SprintTimeoutError as exc:
            raise self._timed_out(f"while sending {seg_name!r}", exc, sending=True) from exc
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(f"while sending segment {seg_name!r}", exc) from exc
        self._cur_seg_name = seg_name
        self._cur_shape = (int(post.shape[0]), int(post.shape[1]))
        self.bytes_sent += post.nbytes
        self.is_calculating = True

    def get_loss_and_error_signal__have_data(self) -> bool:
        """True when the answer to the pending request can be read without blocking."""
        if not self.is_calculating:
            raise SprintControlError("no request is pending on this instance")
        link = self._require_link()
        poller = select.poll()
        poller.register(link.read_fd, select.POLLIN | select.POLLHUP)
        return bool(poller.poll(0))

    def get_loss_and_error_signal__read(self, out: Optional[np.ndarray] = None
                                        ) -> tuple[str, float, np.ndarray]:
        """Reads the pending answer: ``(seg_name, loss, error_signal)``, error signal of the
        posteriors' shape. With ``out`` (a (time, label) float32 view with contiguous rows) it is
        read straight into ``out`` (v2) and ``out`` is returned."""
        if not self.is_calculating:
            raise SprintControlError("no request is pending on this instance")
        link = self._require_link()
        seg_name, shape = self._cur_seg_name, self._cur_shape
        assert seg_name is not None and shape is not None
        if out is not None:
            # a caller's mistake must not be taken for a broken stream: check before reading
            if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32:
                raise ValueError(f"out must be a float32 array of shape {shape}, got"
                                 f" {getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
            if not out.flags.writeable or (out.size and out.strides[1] != 4):
                raise ValueError("out must be writeable with contiguous rows (a (time, label) slice of a"
                                 " (time, batch, label) array is fine)")
        try:
            loss, err = link.recv_loss_result(shape, out=out)
        except SprintRemoteError as exc:
            self.is_calculating = False
            raise self._after_remote_error(exc) from None
        except SprintTimeoutError as exc:
            raise self._timed_out(f"for segment {seg_name!r}", exc) from exc
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(f"while computing segment {seg_name!r}", exc) from exc
        self.is_calculating = False
        self.bytes_received += shape[0] * shape[1] * 4
        self.segments_done += 1
        return seg_name, float(loss), err

    def get_loss_and_error_signal(self, seg_name: Union[str, bytes], log_posteriors: np.ndarray,
                                  out: Optional[np.ndarray] = None) -> tuple[str, float, np.ndarray]:
        """``__send`` then ``__read`` in one call."""
        post = np.asarray(log_posteriors)
        self.get_loss_and_error_signal__send(seg_name, post.shape[0], post, out=out)
        return self.get_loss_and_error_signal__read(out=out)

    def export_allophone_state_fsa(self, seg_name: Union[str, bytes]
                                   ) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Sprint's automaton of one segment: (num_states, num_edges, edges uint32 (3*E,), weights (E,))."""
        if isinstance(seg_name, bytes):
            seg_name = seg_name.decode("utf-8")
        if self.is_calculating:
            raise SprintControlError("a request is still pending on this instance: read its answer first")
        link = self._require_link()
        try:
            return link.request_fsa(seg_name)
        except SprintRemoteError as exc:
            raise self._after_remote_error(exc) from None
        except SprintTimeoutError as exc:
            raise self._timed_out(f"for the automaton of {seg_name!r}", exc) from exc
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(f"while exporting the automaton of {seg_name!r}", exc) from exc

    def call(self, *message) -> tuple:
        """Any other command of the control module; returns what follows "ok"."""
        link = self._require_link()
        try:
            return link.call(*message)
        except SprintRemoteError:
            raise
        except SprintTimeoutError as exc:
            raise self._timed_out(f"for command {message[:1]!r}", exc) from exc
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(f"during command {message[:1]!r}", exc) from exc

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<SprintSubprocessInstance pid={self.child_pid} protocol={self.protocol} {state}>"

    def __del__(self):  # last resort; close() / atexit are the real paths
        try:
            if self._proc is not None and self._proc.poll() is None and os.getpid() == self.parent_pid:
                self._kill()
        except Exception:
            pass


# ==============================================================================================
# typed results


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    """Loss and error signal of one segment. ``skipped``: Sprint discarded it (loss inf)."""

    name: str
    loss: float
    error_signal: np.ndarray

    @property
    def skipped(self) -> bool:
        return bool(np.isinf(self.loss))


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Losses ``(batch,)`` and error signals ``(time, batch, label)`` of one batch.

    Frames past a sequence's length are zero in ``error_signal``. ``protocol`` is the protocol the
    children spoke, ``seconds`` the wall time, ``bytes_moved`` the array bytes over the pipes.
    """

    loss: np.ndarray
    error_signal: np.ndarray
    seconds: float
    bytes_moved: int
    protocol: int

    @property
    def skipped(self) -> np.ndarray:
        """Boolean mask (batch,) of the segments Sprint discarded."""
        return np.isinf(self.loss)

    def __iter__(self):  # allows ``loss, error_signal = pool.compute(...)``
        return iter((self.loss, self.error_signal))


@dataclasses.dataclass(frozen=True)
class Automata:
    """One automaton for a whole batch (RETURNN's layout).

    ``edges`` uint32 (4, E): from-state, to-state, emission index, sequence index; states are
    offset so that sequence ``b`` owns ``start_end_states[0, b] .. start_end_states[1, b]``.
    ``weights`` float32 (E,); ``start_end_states`` uint32 (2, batch).
    """

    edges: np.ndarray
    weights: np.ndarray
    start_end_states: np.ndarray

    @property
    def num_states(self) -> int:
        return int(self.start_end_states[1, -1]) + 1 if self.start_end_states.shape[1] else 0

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[1])

    def __iter__(self):  # allows ``edges, weights, start_end_states = pool.automata(...)``
        return iter((self.edges, self.weights, self.start_end_states))


# ==============================================================================================
# the pool


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, set):
        return tuple(sorted(_hashable(v) for v in value))
    return value


def _check_real_dtype(post: np.ndarray) -> None:
    """Posteriors must be real numbers; a complex, bool, object or text array is a caller's mistake
    that a silent conversion would hide."""
    if post.dtype.kind not in "fiu":
        raise TypeError(f"log_posteriors must be a real floating-point array (float32 preferred), got {post.dtype}")


def _check_finite(post: np.ndarray, seg_name: str) -> None:
    """``reject_non_finite``: NaN/inf in a segment's posteriors is refused before anything is sent."""
    finite = np.isfinite(post)
    if not finite.all():
        t, label = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"log_posteriors of segment {seg_name!r} hold {int(finite.size - finite.sum())} non-finite values"
            f" (first: {post[t, label]} at frame {t}, label {label}); reject_non_finite is on"
        )


def _tag_names(tags: Any, n_batch: Optional[int] = None) -> list[str]:
    """Segment names from a list of str/bytes or an array (str, bytes, or uint8 (batch, max_len))."""
    if isinstance(tags, np.ndarray) and tags.dtype == np.uint8 and tags.ndim == 2:
        names = [bytes(row).rstrip(b"\0").decode("utf-8") for row in tags]
    else:
        names = []
        for t in list(tags):
            if isinstance(t, np.ndarray):
                t = t.item()
            if isinstance(t, (bytes, np.bytes_)):
                t = bytes(t).decode("utf-8")
            names.append(str(t))
    if n_batch is not None and len(names) != n_batch:
        raise ValueError(f"got {len(names)} tags for a batch of {n_batch} sequences")
    return names


def schedule_longest_first(seq_lengths: Sequence[int], num_instances: int) -> list[list[int]]:
    """Greedy split of a batch: longest sequence first, each to the least-loaded instance."""
    order = sorted(range(len(seq_lengths)), key=lambda b: (-int(seq_lengths[b]), b))
    jobs: list[list[int]] = [[] for _ in range(num_instances)]
    load = [0] * num_instances
    for b in order:
        j = min(range(num_instances), key=lambda i: (load[i], i))
        jobs[j].append(b)
        load[j] += int(seq_lengths[b])
    return jobs


class SprintInstancePool:
    """A set of Sprint children that share the work of a batch (RETURNN's class of that name).

    ``sprint_opts`` holds ``numInstances`` (default 1) and the keyword arguments of
    ``SprintSubprocessInstance`` (``sprintExecPath``, ``sprintConfigStr``, ... and the extras such
    as ``protocol`` or ``timeout``). Children start on first use; ``start()`` starts all at once.
    Options: ``restart_dead`` (default True) restarts a child that died before the next batch;
    ``gather`` sends each sequence as a contiguous copy instead of row by row from the batch (default
    None: row by row with the compiled framing core, a copy with its pure-Python twin);
    ``shm`` (False; True or an initial size in bytes) moves the matrices through one shared region
    that every child maps, capped at ``shm_max_size`` bytes; ``empty``/``zeros`` then allocate
    arrays in it, and posteriors written there cost no copy at all. Matrices smaller than
    ``shm_inline_below`` bytes (default 128 KiB) still go through the pipe, which is faster for them.
    """

    class_lock = threading.RLock()
    global_instances: dict[Any, SprintInstancePool] = {}

    @classmethod
    def get_global_instance(cls, sprint_opts: Mapping[str, Any]) -> SprintInstancePool:
        """The one pool for these options in this process (created on first call)."""
        key = _hashable(sprint_opts)
        with cls.class_lock:
            pool = cls.global_instances.get(key)
            if pool is None or pool.closed:
                pool = SprintInstancePool(sprint_opts=dict(sprint_opts))
                cls.global_instances[key] = pool
            return pool

    def __init__(self, sprint_opts: Mapping[str, Any]):
        self.lock = threading.RLock()
        opts = dict(sprint_opts)
        self.max_num_instances = int(opts.pop("numInstances", 1))
        if self.max_num_instances < 1:
            raise ValueError(f"numInstances must be at least 1, got {self.max_num_instances}")
        self.restart_dead = bool(opts.pop("restart_dead", True))
        self.reject_non_finite = bool(opts.get("reject_non_finite", False))  # the instances get it too
        gather = opts.pop("gather", None)
        # Measured (docs/parent-side.md): the compiled core's writev of row pointers beats a gather
        # copy (up to 2x for thousands of labels, equal for 88); the pure-Python twin's os.writev over
        # one memoryview per row loses to one copy.
        self.gather = (framing.IMPLEMENTATION != "cython") if gather is None else bool(gather)
        shm_opt = opts.pop("shm", False)
        shm_max = int(opts.pop("shm_max_size", 8 << 30))
        shm_inline = int(opts.pop("shm_inline_below", shm_module.DEFAULT_INLINE_BELOW))
        self.region: Optional[SharedRegion] = None
        if shm_opt:
            size = 64 << 20 if shm_opt is True else int(shm_opt)
            self.region = SharedRegion.create(size, max_size=shm_max, inline_below=shm_inline)
            opts["shared_region"] = self.region
            self.gather = False  # the descriptor path reads the rows where they are
        self.sprint_opts = opts
        self.instances: list[SprintSubprocessInstance] = []
        self.closed = False
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.segments_done = 0
        self.bytes_moved = 0
        self.seconds = 0.0

    @property
    def numInstances(self) -> int:
        return self.max_num_instances

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An uninitialised array for batch data: in the shared region when the pool uses one
        (the children then read and write it in place), else an ordinary numpy array."""
        if self.region is not None:
            try:
                return self.region.empty(shape, dtype)
            except MemoryError as exc:  # at its cap: the children still serve it through their slots or the pipe
                logger.warning("shared region full (%s); allocating %s outside it", exc, shape)
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype=np.float32) -> np.ndarray:
        """Like ``empty``, filled with zeros."""
        arr = self.empty(shape, dtype)
        arr[...] = 0
        return arr

    @property
    def uses_shared_memory(self) -> bool:
        """True when every running child moves its matrices through the shared region."""
        running = [i for i in self.instances if i._link is not None]
        return bool(running) and all(i._link.shm is not None for i in running)

    @property
    def protocol(self) -> Optional[int]:
        """The protocol the running children speak (the lowest, if they differ)."""
        protos = [i.protocol for i in self.instances if i.protocol is not None]
        return min(protos) if protos else None

    def _new_instance(self, start: bool = True) -> SprintSubprocessInstance:
        if self.closed:
            raise SprintControlError("this pool is closed")
        return SprintSubprocessInstance(**self.sprint_opts, start=start)

    def start(self) -> SprintInstancePool:
        """Starts every child now: all spawn first, then each handshakes (start-ups overlap)."""
        with self.lock:
            fresh = []
            while len(self.instances) < self.max_num_instances:
                inst = self._new_instance(start=False)
                self.instances.append(inst)
                fresh.append(inst)
            try:
                for inst in fresh:
                    inst._started = True
                    inst._spawn()
                for inst in fresh:
                    inst._handshake()
            except BaseException:
                self.close()
                raise
        return self

    def _maybe_create_new_instance(self) -> Optional[SprintSubprocessInstance]:
        if len(self.instances) < self.max_num_instances:
            self.instances.append(self._new_instance())
            return self.instances[-1]
        return None

    def _get_instance(self, i: int) -> SprintSubprocessInstance:
        if not 0 <= i < self.max_num_instances:
            raise IndexError(f"instance {i} of a pool of {self.max_num_instances}")
        while i >= len(self.instances):
            self._maybe_create_new_instance()
        inst = self.instances[i]
        if self.restart_dead and inst._proc is not None and inst._proc.poll() is not None:
            # it died after its last answer (e.g. RASR ended on a critical error it had reported as an
            # exception): reap it now rather than fail the next batch on a broken pipe
            logger.warning("Sprint instance %d %s after its last answer; restarting it", i,
                           _describe_exit(inst._proc.returncode))
            inst.close()
        if inst._proc is None and self.restart_dead:
            logger.warning("restarting Sprint instance %d (%s)", i,
                           f"it failed: {inst.last_error}".splitlines()[0] if inst.last_error else "it was stopped")
            inst.init()
        return inst

    def get_free_instance(self) -> Optional[SprintSubprocessInstance]:
        """An instance with no pending request (starting one if the pool is not full), else None."""
        with self.lock:
            for inst in self.instances:
                if not inst.is_calculating:
                    if self.restart_dead and inst._proc is not None and inst._proc.poll() is not None:
                        inst.close()  # died after its last answer
                    if inst._proc is None and self.restart_dead:
                        inst.init()
                    return inst
            return self._maybe_create_new_instance()

    def _run_parallel(self, fn, jobs: list[list[int]]) -> None:
        """Runs ``fn(instance, idxs)`` for every non-empty job, one thread per instance; raises the
        first failure after all have finished (so no thread writes into a returned array)."""
        active = [(i, job) for i, job in enumerate(jobs) if job]
        instances = {i: self._get_instance(i) for i, _ in active}
        if len(active) <= 1:
            for i, job in active:
                fn(instances[i], job)
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.max_num_instances, thread_name_prefix="sprint-pool")
        futures = [self._executor.submit(fn, instances[i], job) for i, job in active]
        errors = []
        for (i, _), fut in zip(active, futures):
            exc = fut.exception()
            if exc is not None:
                errors.append((i, exc))
        if errors:
            for i, exc in errors[1:]:
                logger.error("Sprint instance %d also failed: %s", i, str(exc).splitlines()[0])
            raise errors[0][1]

    def get_batch_loss_and_error_signal(self, log_posteriors: np.ndarray, seq_lengths: Sequence[int],
                                        tags: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Loss (batch,) float32 and error signal (time, batch, label) float32 of a batch.

        ``log_posteriors`` (time, batch, label), ``seq_lengths`` (batch,), ``tags`` the segment
        names. Frames past a sequence's length get a zero error signal.
        """
        post = np.asarray(log_posteriors)
        raw_lengths = np.asarray(seq_lengths)
        if raw_lengths.dtype.kind not in "iu" and not (
            raw_lengths.dtype.kind == "f" and np.array_equal(raw_lengths, np.round(raw_lengths))
        ):
            raise ValueError(f"seq_lengths must be whole numbers of frames, got {raw_lengths.tolist()!r:.200}")
        lengths = raw_lengths.astype(np.int64, copy=False)
        if post.ndim != 3:
            raise ValueError(f"log_posteriors must be (time, batch, label), got shape {post.shape}")
        _check_real_dtype(post)
        if lengths.ndim != 1 or lengths.shape[0] != post.shape[1]:
            raise ValueError(f"seq_lengths must be (batch,) = ({post.shape[1]},), got shape {lengths.shape}")
        if tags is None:
            raise ValueError("tags (the segment names) are required: Sprint looks the segments up by name")
        if (lengths < 0).any() or (lengths > post.shape[0]).any():
            raise ValueError(f"seq_lengths must lie in [0, {post.shape[0]}], got {lengths.tolist()}")
        names = _tag_names(tags, post.shape[1])
        # one conversion for the whole batch, never per sequence
        if post.dtype != np.float32 or post.strides[2] != 4:
            post = np.ascontiguousarray(post, dtype=np.float32)
        if self.reject_non_finite:  # before anything is sent: no child sees a part of a refused batch
            for b in range(post.shape[1]):
                _check_finite(post[: int(lengths[b]), b], names[b])
        n_batch = post.shape[1]
        loss = np.zeros((n_batch,), dtype=np.float32)
        error_signal = self.empty(post.shape)
        for b in range(n_batch):  # zero only the padding: a child's answer overwrites every other frame
            error_signal[int(lengths[b]) :, b] = 0
        gather = self.gather

        def work(inst: SprintSubprocessInstance, idxs: list[int]) -> None:
            for b in idxs:
                t = int(lengths[b])
                seq = post[:t, b]
                if gather:
                    seq = np.ascontiguousarray(seq)
                inst.get_loss_and_error_signal__send(names[b], t, seq, out=error_signal[:t, b])
                _, value, _ = inst.get_loss_and_error_signal__read(out=error_signal[:t, b])
                loss[b] = value

        # a sequence without frames has nothing for Sprint to compute (RASR refuses empty segments):
        # loss 0 and no error signal, without a round trip
        jobs = [[b for b in job if lengths[b] > 0] for job in schedule_longest_first(lengths, self.max_num_instances)]
        started = time.perf_counter()
        with self.lock:
            if self.closed:
                raise SprintControlError("this pool is closed")
            self._run_parallel(work, jobs)
        self.seconds += time.perf_counter() - started
        self.segments_done += n_batch
        self.bytes_moved += 2 * int(lengths.sum()) * post.shape[2] * 4
        return loss, error_signal

    def get_automata_for_batch(self, tags: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One automaton for the batch: ``(edges uint32 (4, E), weights float32 (E,),
        start_end_states uint32 (2, batch))``; edge rows are from, to, emission index, sequence
        index, with each sequence's states offset by the states of the sequences before it."""
        names = _tag_names(tags)
        parts: list[Optional[tuple[int, int, np.ndarray, np.ndarray]]] = [None] * len(names)
        jobs: list[list[int]] = [[] for _ in range(self.max_num_instances)]
        for b in range(len(names)):
            jobs[b % self.max_num_instances].append(b)

        def work(inst: SprintSubprocessInstance, idxs: list[int]) -> None:
            for b in idxs:
                parts[b] = inst.export_allophone_state_fsa(names[b])

        with self.lock:
            if self.closed:
                raise SprintControlError("this pool is closed")
            self._run_parallel(work, jobs)
        return merge_automata(parts)  # type: ignore[arg-type]

    def close(self) -> None:
        """Closes every child (exit, bounded wait, terminate/kill) and the worker threads."""
        with self.lock:
            self.closed = True
            errors = []
            for inst in self.instances:
                try:
                    inst.close()
                except Exception as exc:  # pragma: no cover - close is best effort per child
                    errors.append(exc)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self.region is not None:
                self.region.close()  # arrays handed out keep their pages until they die
            for exc in errors:  # pragma: no cover
                logger.error("closing a Sprint child failed: %s", exc)

    exit_handler = close

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def merge_automata(parts: Sequence[tuple[int, int, np.ndarray, np.ndarray]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merges per-sequence automata ``(num_states, num_edges, edges (3*E,), weights (E,))`` into
    RETURNN's batch layout (see ``SprintInstancePool.get_automata_for_batch``)."""
    total_edges = sum(int(p[1]) for p in parts)
    edges = np.empty((4, total_edges), dtype=np.uint32)
    weights = np.empty((total_edges,), dtype=np.float32)
    start_end = np.empty((2, len(parts)), dtype=np.uint32)
    offset = 0
    pos = 0
    for b, (num_states, num_edges, e, wts) in enumerate(parts):
        num_states, num_edges = int(num_states), int(num_edges)
        e = np.asarray(e, dtype=np.uint32).reshape(3, num_edges)
        if num_edges and int(e[:2].max()) >= num_states:
            raise ProtocolError(f"automaton {b} has an edge to state {int(e[:2].max())} but only {num_states} states")
        sl = slice(pos, pos + num_edges)
        edges[0:2, sl] = e[0:2] + np.uint32(offset)
        edges[2, sl] = e[2]
        edges[3, sl] = b
        weights[sl] = np.asarray(wts, dtype=np.float32).reshape(num_edges)
        start_end[0, b] = offset
        start_end[1, b] = offset + num_states - 1
        offset += num_states
        pos += num_edges
    return edges, weights, start_end


class SprintPool(SprintInstancePool):
    """A started pool of Sprint children, to be used as a context manager::

        with SprintPool(num_instances=3, sprint_args="--*.training-criterion=ctc") as pool:
            result = pool.compute(log_posteriors, seq_lengths, tags)   # BatchResult
            result.loss, result.error_signal

    ``sprint_exec`` defaults to the bundled RASR emulator; give the path of RASR's ``nn-trainer``
    for the real thing. ``sprint_args`` (a string split like a shell, or a list) are appended to
    the Sprint command line. Every child is closed when the ``with`` block ends (and at exit).
    """

    def __init__(
        self,
        num_instances: int = 1,
        sprint_exec: Optional[ExecPath] = None,
        sprint_args: Union[str, Sequence[str]] = "",
        *,
        control_config: Optional[Mapping[str, Any]] = None,
        protocol: int = PROTOCOL_V2,
        use_python_segment_order: bool = True,
        min_python_control_version: int = 2,
        timeout: Optional[float] = None,
        start_timeout: Optional[float] = 120.0,
        exit_timeout: float = 5.0,
        module_name: str = DEFAULT_MODULE_NAME,
        module_path: Optional[str] = None,
        echo_output: bool = False,
        env: Optional[Mapping[str, str]] = None,
        restart_dead: bool = True,
        gather: Optional[bool] = None,
        shm: Union[bool, int] = False,
        shm_max_size: int = 8 << 30,
        shm_inline_below: int = shm_module.DEFAULT_INLINE_BELOW,
        reject_non_finite: bool = False,
        start: bool = True,
    ):
        super().__init__(dict(
            numInstances=num_instances,
            sprintExecPath=sprint_exec if sprint_exec is not None else emulator_command(),
            minPythonControlVersion=min_python_control_version,
            sprintConfigStr=sprint_args,
            sprintControlConfig=control_config,
            usePythonSegmentOrder=use_python_segment_order,
            protocol=protocol,
            timeout=timeout,
            start_timeout=start_timeout,
            exit_timeout=exit_timeout,
            module_name=module_name,
            module_path=module_path,
            echo_output=echo_output,
            env=env,
            restart_dead=restart_dead,
            gather=gather,
            shm=shm,
            shm_max_size=shm_max_size,
            reject_non_finite=reject_non_finite,
            shm_inline_below=shm_inline_below,
        ))
        if start:
            self.start()

    @property
    def num_instances(self) -> int:
        return self.max_num_instances

    def compute(self, log_posteriors: np.ndarray, seq_lengths: Sequence[int], tags: Any) -> BatchResult:
        """Loss and error signal of a batch (see ``get_batch_loss_and_error_signal``)."""
        before = self.bytes_moved
        started = time.perf_counter()
        loss, err = self.get_batch_loss_and_error_signal(log_posteriors, seq_lengths, tags)
        return BatchResult(loss, err, time.perf_counter() - started, self.bytes_moved - before,
                           self.protocol or PROTOCOL_V1)

    def compute_segment(self, name: str, log_posteriors: np.ndarray) -> SegmentResult:
        """Loss and error signal of one segment, (time, label), on a free child."""
        with self.lock:
            inst = self.get_free_instance()
            if inst is None:
                raise SprintControlError("every Sprint child is busy")
            seg, loss, err = inst.get_loss_and_error_signal(name, log_posteriors)
        return SegmentResult(seg, loss, err)

    def automata(self, tags: Any) -> Automata:
        """The batch automaton (see ``get_automata_for_batch``)."""
        return Automata(*self.get_automata_for_batch(tags))
