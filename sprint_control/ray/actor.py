"""What runs inside one Ray actor: a one-child ``SprintPool`` on the actor's node, serving its share of
each batch segment by segment, and reporting a failed segment as a ``Failure`` (which segment, what
happened, whether the child was restarted) instead of raising it through Ray, so that the driver can
name the actor, the node and the segment in one error of the usual hierarchy."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import SprintChildError, SprintControlError, SprintRemoteError, SprintTimeoutError
from ..parent import SprintPool

#: The error classes a ``Failure`` carries over, by name (anything else becomes SprintControlError).
ERROR_CLASSES = {cls.__name__: cls for cls in (SprintChildError, SprintRemoteError, SprintTimeoutError,
                                               SprintControlError)}


@dataclasses.dataclass(frozen=True)
class Failure:
    """A segment the actor's Sprint child failed on. ``kind`` names the error class; ``restart`` says
    what became of the child (restarted with its new pid, or why not)."""

    kind: str
    message: str
    segment: Optional[str]  # None: the child failed to start
    index: int
    returncode: Optional[int] = None
    stderr_tail: str = ""
    remote_traceback: str = ""
    restart: str = ""

    def error(self, where: str) -> SprintControlError:
        """The error to raise in the driver: same class as in the actor, ``where`` (actor, node) first."""
        what = "its Sprint child could not start" if self.segment is None else f"segment {self.segment!r} failed"
        restart = f" ({self.restart})" if self.restart else ""
        text = f"{where}: {what}{restart}: {self.message}"
        # the message holds the output tail or traceback already; the attributes are set for callers
        err = ERROR_CLASSES.get(self.kind, SprintControlError)(text)
        if isinstance(err, SprintChildError):
            err.returncode, err.stderr_tail = self.returncode, self.stderr_tail
        elif isinstance(err, SprintRemoteError):
            err.remote_traceback = self.remote_traceback
        return err


def _failure(exc: SprintControlError, segment: Optional[str], index: int) -> Failure:
    message = str(exc)  # with the child's output tail or traceback, as the local pool shows them
    return Failure(type(exc).__name__ if type(exc).__name__ in ERROR_CLASSES else "SprintControlError", message,
                   segment, index, getattr(exc, "returncode", None), getattr(exc, "stderr_tail", ""),
                   getattr(exc, "remote_traceback", ""))


class SprintActor:
    """One Sprint child and the pool (of one) that owns it; the body of the pool's Ray actor class.

    ``pool_options`` are ``SprintPool``'s keyword arguments; ``sprint_exec`` None means the emulator
    of this node's interpreter.
    """

    def __init__(self, sprint_exec: Any, sprint_args: Union[str, Sequence[str]], pool_options: dict[str, Any]):
        self.pool = SprintPool(1, sprint_exec, sprint_args, start=False, **pool_options)
        #: why the child did not start (reported by ``info``, so the driver can name actor and node)
        self.start_error: Optional[Failure] = None
        try:
            self.pool.start()
        except SprintControlError as exc:
            self.start_error = _failure(exc, None, -1)

    def info(self) -> dict[str, Any]:
        """Where this actor and its child live (for error messages and the process checks); the driver
        adds the node's address (``node_ip``) from Ray's node table."""
        import ray

        inst = self.pool.instances[0] if self.pool.instances else None
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "child_pid": inst.child_pid if inst is not None else None,
            "protocol": self.pool.protocol,
            "segments_done": self.pool.segments_done,
            "start_error": self.start_error,
        }

    def _restart_note(self) -> str:
        """After a failure: the child restarted now (so the next batch finds it ready), or why not."""
        if not self.pool.restart_dead:
            return "the child was not restarted (restart_dead is off)"
        inst = self.pool.instances[0]
        try:
            inst.ensure_running()
        except SprintControlError as exc:
            return f"restarting the child failed: {str(exc).splitlines()[0]}"
        return f"the child was restarted (pid {inst.child_pid})"

    def _instance(self):
        """The actor's child, restarted first if it died: a failed restart is the segment's failure too,
        so the driver learns which actor, node and segment it was."""
        inst = self.pool.get_free_instance()
        if inst is None:
            raise SprintControlError("the actor's Sprint child is busy")
        return inst

    def compute(self, log_posteriors: np.ndarray, seq_lengths: Sequence[int], names: Sequence[str]
                ) -> Union[tuple[np.ndarray, np.ndarray], Failure]:
        """Loss (n,) and error signal (time, n, label) of this actor's share, in the order given;
        frames past a length are zero. The share was checked by the driver."""
        post = log_posteriors  # from the object store: read-only, read in place
        loss = np.zeros((post.shape[1],), dtype=np.float32)
        err = np.empty(post.shape, dtype=np.float32)
        for j, name in enumerate(names):
            t = int(seq_lengths[j])
            err[t:, j] = 0
            if t == 0:
                continue
            try:
                _, value, _ = self._instance().get_loss_and_error_signal(name, post[:t, j], out=err[:t, j])
            except SprintControlError as exc:
                return dataclasses.replace(_failure(exc, name, j), restart=self._restart_note())
            loss[j] = value
        self.pool.segments_done += len(names)
        return loss, err

    def automata(self, names: Sequence[str]) -> Union[list[tuple[int, int, np.ndarray, np.ndarray]], Failure]:
        """Sprint's automaton of each segment (``export_allophone_state_fsa``), in the order given."""
        parts = []
        for j, name in enumerate(names):
            try:
                parts.append(self._instance().export_allophone_state_fsa(name))
            except SprintControlError as exc:
                return dataclasses.replace(_failure(exc, name, j), restart=self._restart_note())
        return parts

    def close(self) -> None:
        """Ends the child (exit, bounded wait, terminate/kill)."""
        self.pool.close()
