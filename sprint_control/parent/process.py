"""Spawning a Sprint child and ending it: ``Popen(pass_fds=...)``, its output drain, exit/terminate/
kill/reap, and the registry of live children that is closed at interpreter exit.

Children are started with ``close_fds=True`` and ``pass_fds``: no Python code runs between fork and
exec, and only the two pipe ends (plus the shared region, and stdio) reach the child.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shlex
import shutil
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from .. import _env
from ..errors import SprintChildError
from .output import OutputDrain, describe_exit

logger = logging.getLogger("sprint_control.parent")

ExecPath = Union[str, os.PathLike, Sequence[str]]

#: Environment of a child: the parent's pid (the module ends the child when that parent is gone), and
#: "1" when the module may ask the kernel to kill the child together with the parent.
PARENT_PID_ENV = _env.PARENT_PID
PDEATHSIG_ENV = _env.PDEATHSIG


def exec_args(path: ExecPath) -> list[str]:
    """The command that starts Sprint: a path (looked up on PATH when bare) or a command list."""
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


def sprint_command(exec_args: Sequence[str], module_path: str, module_name: str, config: Mapping[str, Any],
                   user_config: Mapping[str, Any], python_segment_order: bool, extra: Sequence[str]) -> list[str]:
    """The child's command line (reference section 1): ``config`` first, then ``user_config``
    sorted by key (the last occurrence of a key wins in the module), then ``extra``."""
    pairs = ",".join(f"{k}:{v}" for k, v in [*config.items(), *sorted(user_config.items())])
    args = list(exec_args) + [
        "--*.python-control-enabled=true",
        f"--*.pymod-path={module_path}",
        f"--*.pymod-name={module_name}",
        f"--*.pymod-config={pairs}",
    ]
    if python_segment_order:
        args += [
            "--*.python-segment-order=true",
            f"--*.python-segment-order-pymod-path={module_path}",
            f"--*.python-segment-order-pymod-name={module_name}",
            f"--*.python-segment-order-config={pairs}",
            "--*.python-segment-order-allow-copy=false",
        ]
    return args + list(extra)


def child_env(base: Optional[Mapping[str, str]]) -> dict[str, str]:
    """The child's environment: ours (or ``base``) plus what the Sprint-side module needs to end
    itself when this process dies (see ``sprint_control.sprint.guard``): our pid, and whether the
    kernel may kill it with us (``PR_SET_PDEATHSIG``). Linux sends that signal when the *thread*
    that spawned the child ends, so it is asked for only from the main thread, which lives as
    long as the process; children started in other threads rely on the module's watchdog."""
    env = dict(os.environ if base is None else base)
    env[PARENT_PID_ENV] = str(os.getpid())
    if threading.current_thread() is threading.main_thread():
        env[PDEATHSIG_ENV] = "1"
    else:
        env.pop(PDEATHSIG_ENV, None)
    return env


def _close_quietly(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:  # pragma: no cover - already closed
            pass


class ChildProcess:
    """A started Sprint child: the process, the parent's ends of its two pipes, its output drain."""

    def __init__(self, proc: subprocess.Popen, read_fd: int, write_fd: int, drain: OutputDrain):
        self.proc = proc
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.drain = drain

    @classmethod
    def spawn(cls, command: Callable[[int, int], list[str]], *, env: Optional[Mapping[str, str]],
              cwd: Optional[str], extra_fds: Sequence[int] = (), output_lines: int = 200,
              echo_output: bool = False) -> ChildProcess:
        """Starts ``command(c2p_write_fd, p2c_read_fd)``. Every fd made here is closed again when
        anything fails (a full fd table included), and the failure is a SprintChildError."""
        fds: list[int] = []  # every fd opened here that is ours to close on failure
        proc: Optional[subprocess.Popen] = None
        args: list[str] = []
        try:
            c2p_r, c2p_w = os.pipe()
            fds += (c2p_r, c2p_w)
            p2c_r, p2c_w = os.pipe()
            fds += (p2c_r, p2c_w)
            out_r, out_w = os.pipe()
            fds += (out_r, out_w)
            args = command(c2p_w, p2c_r)
            logger.debug("starting Sprint: %s", shlex.join(args))
            # close_fds + pass_fds: exactly these fds reach the child; no preexec_fn, so no Python runs
            # between fork and exec (safe in a multi-threaded parent).
            proc = subprocess.Popen(args, pass_fds=(c2p_w, p2c_r, *extra_fds), close_fds=True,
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, env=child_env(env), cwd=cwd)
            for fd in (c2p_w, p2c_r, out_w):  # the child's ends: it has its copies now
                fds.remove(fd)
                os.close(fd)
            drain = OutputDrain(out_r, f"sprint[{proc.pid}]", output_lines, echo_output)
            drain.start()
            fds.remove(out_r)  # the drain closes it
        except BaseException as exc:
            _close_quietly(fds)
            if proc is not None:
                kill_and_reap(proc)
            if isinstance(exc, OSError):
                command_text = f" {shlex.join(args)!r}" if args else ""
                raise SprintChildError(f"cannot start Sprint{command_text}: {_os_error_text(exc)}") from exc
            raise
        return cls(proc, c2p_r, p2c_w, drain)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def kill_now(self) -> None:
        """SIGKILL, nothing else: safe from any thread while another one reads or writes the pipes
        (the fds stay open; that thread sees EOF or EPIPE and cleans up)."""
        try:
            self.proc.kill()
        except OSError:  # pragma: no cover - already gone
            pass

    def wait(self, timeout: Optional[float]) -> Optional[int]:
        """The exit status, or None when the child still runs after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_or_kill(self, wait: float) -> Optional[int]:
        """Waits ``wait`` seconds, then SIGTERM and 1 s, then SIGKILL; reaps it."""
        return wait_or_kill(self.proc, wait)

    def tail(self) -> str:
        return self.drain.tail()

    def join_output(self, timeout: float = 1.0) -> None:
        self.drain.join(timeout)


def _os_error_text(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return f"too many open files ({exc}); raise the limit (ulimit -n) or close files"
    return str(exc)


#: After SIGTERM, how long a child may take to end before SIGKILL; after SIGKILL, how long the kernel may
#: take to reap it (a child in uninterruptible sleep) before we give up on it.
TERM_GRACE = 1.0
KILL_GRACE = 5.0


def wait_or_kill(proc: subprocess.Popen, wait: float) -> Optional[int]:
    for action, seconds in ((None, wait), (proc.terminate, TERM_GRACE), (proc.kill, KILL_GRACE)):
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


def kill_and_reap(proc: subprocess.Popen) -> Optional[int]:
    """SIGKILL (it works on a stopped child too, unlike SIGTERM) and reap."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:  # pragma: no cover
            pass
    return wait_or_kill(proc, KILL_GRACE)


__all__ = ["ChildProcess", "ExecPath", "describe_exit", "exec_args", "register", "unregister"]


# Objects with an ``exit_handler()`` alive in this process, closed at interpreter exit (weak: a
# dropped instance is not kept).
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def register(obj: Any) -> None:
    with _LIVE_LOCK:
        _LIVE.add(obj)


def unregister(obj: Any) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(obj)


def _close_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for obj in live:
        try:
            obj.exit_handler()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


def _new_lock_in_a_copy() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()  # a thread that held it at the fork is not in the copy


atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_new_lock_in_a_copy)
