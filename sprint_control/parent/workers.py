"""The pool's worker threads: one daemon thread per child slot, and the batch they work on.

Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit *before* the atexit hooks
run, so a worker blocked on a stopped child would keep the process from ever exiting. Daemon
threads do not, and ``run`` stops its workers itself when the caller is interrupted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Optional

from .instance import SprintSubprocessInstance

logger = logging.getLogger("sprint_control.parent")

#: Seconds an interrupted batch waits for its workers (whose children it kills) before it gives up.
CANCEL_BOUND = 10.0


class Batch:
    """The jobs of one batch on the workers: how many are left, their failures, cancellation."""

    def __init__(self, count: int):
        self._cond = threading.Condition()
        self._left = count
        self.errors: list[tuple[int, BaseException]] = []
        #: set when the caller was interrupted: a worker stops before its next segment
        self.cancelled = False

    def finished(self, slot: int, exc: Optional[BaseException]) -> None:
        with self._cond:
            if exc is not None:
                self.errors.append((slot, exc))
            self._left -= 1
            if self._left <= 0:  # below 0 only when an interrupt also counted a job a worker took
                self._cond.notify_all()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once every job has finished (interruptible: KeyboardInterrupt reaches the caller)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._left <= 0, timeout)


Job = Callable[[SprintSubprocessInstance, Sequence[int], Optional[Batch]], None]


class Workers:
    """One daemon thread per slot, started on first use; ``run`` spreads a batch over them."""

    def __init__(self, name: str = "sprint-pool"):
        self.name = name
        self._queues: dict[int, queue.SimpleQueue] = {}
        self._threads: dict[int, threading.Thread] = {}

    def _queue(self, slot: int) -> queue.SimpleQueue:
        q = self._queues.get(slot)
        if q is None:
            q = self._queues[slot] = queue.SimpleQueue()
            thread = threading.Thread(target=self._serve, args=(q,), name=f"{self.name}-{slot}", daemon=True)
            thread.start()
            self._threads[slot] = thread
        return q

    @staticmethod
    def _serve(q: queue.SimpleQueue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            batch, slot, job, inst, idxs = item
            del item
            exc: Optional[BaseException] = None
            try:
                job(inst, idxs, batch)
            except BaseException as e:  # handed to the caller's thread
                exc = e
            batch.finished(slot, exc)
            del batch, job, inst, idxs, exc

    def run(self, job: Job, work: Sequence[tuple[int, SprintSubprocessInstance, Sequence[int]]]) -> None:
        """Runs ``job(instance, idxs, batch)`` for every ``(slot, instance, idxs)`` on the slot's thread;
        raises the first failure (by slot) once all have finished, so no worker writes into an array
        after it was returned. When the caller is interrupted (any exception, KeyboardInterrupt
        included), the batch is cancelled, the children the workers wait on are killed so their
        reads end, and the workers are waited for before the exception goes on."""
        batch = Batch(len(work))
        submitted = 0
        try:
            for slot, inst, idxs in work:
                self._queue(slot).put((batch, slot, job, inst, idxs))
                submitted += 1
            batch.wait()
        except BaseException:
            for slot, _, _ in work[submitted:]:  # never handed to a worker
                batch.finished(slot, None)
            self._cancel(batch, [inst for _, inst, _ in work])
            raise
        if batch.errors:
            errors = sorted(batch.errors, key=lambda e: e[0])
            for slot, exc in errors[1:]:
                logger.error("Sprint instance %d also failed: %s", slot, str(exc).splitlines()[0])
            raise errors[0][1]

    @staticmethod
    def _cancel(batch: Batch, instances: Sequence[SprintSubprocessInstance]) -> None:
        batch.cancelled = True
        deadline = time.monotonic() + CANCEL_BOUND
        while True:
            # a worker in the middle of an exchange cannot be told to stop: its child is killed, so its
            # read or write ends (EOF, EPIPE) and it returns; the instance restarts before its next use
            for inst in instances:
                if inst.busy:
                    inst.kill_now()
            if batch.wait(0.2):
                return
            if time.monotonic() > deadline:  # pragma: no cover - a worker stuck outside any pipe
                logger.error("the pool's workers did not stop within %s s after an interrupt", CANCEL_BOUND)
                return

    def stop(self, timeout: float = CANCEL_BOUND) -> None:
        """Ends every worker thread (after its current job) and waits for them."""
        for q in self._queues.values():
            q.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._queues.clear()
        self._threads.clear()
