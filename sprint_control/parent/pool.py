"""The pools: ``SprintInstancePool`` (RETURNN's class: a batch spread over several children) and
``SprintPool`` (the context manager with snake_case options and typed results)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import numpy as np

from ..errors import SprintControlError
from ..wire import framing
from ..wire.protocol import PROTOCOL_V1
from ..wire.shm import SharedRegion
from . import fork_guard
from .batch import (
    Automata,
    BatchResult,
    SegmentResult,
    check_finite_batch,
    check_names,
    check_payload,
    checked_batch,
    merge_automata,
    schedule_longest_first,
    sent_nbytes,
    tag_names,
)
from .instance import SprintSubprocessInstance
from .options import DEFAULTS, FIELDS, ParentOptions
from .process import ExecPath
from .workers import Batch, Workers

logger = logging.getLogger("sprint_control.parent")

#: what an exchange cut off by ``close()`` (from another thread or a signal handler) reads
POOL_CLOSED = "the pool was closed"


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, set):
        return tuple(sorted(_hashable(v) for v in value))
    return value


class SprintInstancePool:
    """A set of Sprint children that share the work of a batch (RETURNN's class of that name).

    ``sprint_opts`` holds ``numInstances`` (default 1) and the keyword arguments of
    ``SprintSubprocessInstance`` (``sprintExecPath``, ``sprintConfigStr``, ... and the extras such
    as ``protocol``, ``timeout`` or ``max_payload``). Children start on first use; ``start()`` starts
    all at once. Options: ``restart_dead`` (default True) restarts a child that died before the next
    batch; ``gather`` sends each sequence as a contiguous copy instead of row by row from the batch
    (default None: row by row with the compiled framing core, a copy with its pure-Python twin);
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
            if pool is None or pool.closed or fork_guard.in_copy(pool.owner_pid):  # a copy's: the parent's pool
                pool = SprintInstancePool(sprint_opts=dict(sprint_opts))
                cls.global_instances[key] = pool
            return pool

    def __init__(self, sprint_opts: Union[Mapping[str, Any], ParentOptions]):
        self.owner_pid = os.getpid()  # a forked copy refuses every call (fork_guard)
        self.lock = threading.RLock()
        if isinstance(sprint_opts, ParentOptions):
            options = sprint_opts
        else:
            options = ParentOptions.from_returnn(sprint_opts, who=type(self).__name__)
        #: every option, checked once; each child is started with it
        self.options = options
        self.max_num_instances = options.num_instances
        self.restart_dead = options.restart_dead
        self.reject_non_finite = options.reject_non_finite
        # Measured (docs/parent-side.md): the compiled core's writev of row pointers beats a gather
        # copy (up to 2x for thousands of labels, equal for 88); the pure-Python twin's os.writev over
        # one memoryview per row loses to one copy.
        self.gather = (framing.IMPLEMENTATION != "cython") if options.gather is None else options.gather
        self.region: Optional[SharedRegion] = None
        if options.shm:
            size = options.shm_size if options.shm is True else int(options.shm)
            self.region = SharedRegion.create(size, max_size=options.shm_max_size,
                                              inline_below=options.shm_inline_below)
            self.gather = False  # the descriptor path reads the rows where they are
        self.max_payload = options.max_payload
        #: the children's options under SprintSubprocessInstance's names (RETURNN's first)
        self.sprint_opts = dict(options.returnn_view(), shared_region=self.region)
        self.instances: list[SprintSubprocessInstance] = []
        self.closed = False
        self._batch_thread: Optional[int] = None  # the thread whose call holds the lock for its exchanges
        self._workers = Workers()
        # a pool dropped without close() must not leave its idle worker threads behind
        weakref.finalize(self, self._workers.stop, 0.0)
        self.segments_done = 0
        self.bytes_moved = 0
        self.seconds = 0.0

    @property
    def numInstances(self) -> int:
        return self.max_num_instances

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An uninitialised array for batch data: in the shared region when the pool uses one
        (the children then read and write it in place), else an ordinary numpy array."""
        self._check_owner()  # a forked copy, a call from a signal handler inside a call
        self._check_open()
        if self.region is not None:
            # under the pool's lock: the region grows between batches, never while another thread's
            # batch has requests out (whose children would be told of the growth too late)
            with self.lock:
                self._check_open()
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
        running = [i for i in self.instances if i.alive]
        return bool(running) and all(i.uses_shared_memory for i in running)

    @property
    def protocol(self) -> Optional[int]:
        """The protocol the running children speak (the lowest, if they differ)."""
        protos = [i.protocol for i in self.instances if i.protocol is not None]
        return min(protos) if protos else None

    def _check_owner(self) -> None:
        """At the top of every public method, before any lock: refuses a forked copy and a call from
        a signal handler of the thread inside one of this pool's calls."""
        fork_guard.check_owner(self.owner_pid, "pool")
        fork_guard.check_not_reentered(self._batch_thread)

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """The pool's lock for one call's exchanges, marked with the calling thread: a call from a
        signal handler of that thread is refused (``_check_owner``), and a ``close()`` that came
        meanwhile is finished when the call ends."""
        with self.lock:
            self._check_open()
            self._batch_thread = threading.get_ident()
            try:
                yield
            finally:
                self._batch_thread = None
                if self.closed:
                    self._close_now()

    def _check_open(self) -> None:
        fork_guard.check_owner(self.owner_pid, "pool")  # first: a copy must not even look at the children
        if self.closed:
            raise SprintControlError("this pool is closed (a closed pool cannot be restarted; create a new one)")

    def _new_instance(self, start: bool = True) -> SprintSubprocessInstance:
        self._check_open()
        return SprintSubprocessInstance(options=self.options, shared_region=self.region, start=start)

    def start(self) -> SprintInstancePool:
        """Starts every child now: all spawn first, then each handshakes (start-ups overlap)."""
        self._check_owner()  # before the lock: a thread of the parent may have held it at the fork
        with self.lock:
            self._check_open()
            fresh = []
            while len(self.instances) < self.max_num_instances:
                inst = self._new_instance(start=False)
                self.instances.append(inst)
                fresh.append(inst)
            try:
                for inst in fresh:
                    inst.spawn()
                for inst in fresh:
                    inst.handshake()
            except BaseException:
                self.close()
                raise
        return self

    def _maybe_create_new_instance(self) -> Optional[SprintSubprocessInstance]:
        if len(self.instances) < self.max_num_instances:
            self.instances.append(self._new_instance())
            return self.instances[-1]
        return None

    def _ready(self, inst: SprintSubprocessInstance) -> SprintSubprocessInstance:
        """The instance, restarted first when it is out of step (always) or dead (``restart_dead``)."""
        reason = inst.needs_restart()
        if reason is not None and (inst.out_of_step or self.restart_dead):
            inst.ensure_running()
        return inst

    def _get_instance(self, i: int) -> SprintSubprocessInstance:
        if not 0 <= i < self.max_num_instances:
            raise IndexError(f"instance {i} of a pool of {self.max_num_instances}")
        while i >= len(self.instances):
            self._maybe_create_new_instance()
        inst = self.instances[i]
        # a batch owns its instances: a request still pending was left by an interrupted batch
        inst.abandon_request()
        return self._ready(inst)

    def get_free_instance(self) -> Optional[SprintSubprocessInstance]:
        """An instance with no pending request (starting one if the pool is not full), else None."""
        self._check_owner()
        with self.lock:
            return self._free_instance()

    def _free_instance(self) -> Optional[SprintSubprocessInstance]:
        with self.lock:
            self._check_open()
            for inst in self.instances:
                # one thread's instance until its answer is read: threads never share a child's stream
                if (inst.out_of_step or not inst.is_calculating) and inst.claim():
                    return self._ready(inst)
            new = self._maybe_create_new_instance()
            if new is not None:
                new.claim()
            return new

    def _run_parallel(self, job, jobs: list[list[int]]) -> None:
        """Runs ``job(instance, idxs, batch)`` for every non-empty job: in this thread when there is
        one, else one worker thread per instance (see ``Workers.run``)."""
        work = [(i, self._get_instance(i), idxs) for i, idxs in enumerate(jobs) if idxs]
        if len(work) <= 1:
            for _, inst, idxs in work:
                job(inst, idxs, None)
            return
        self._workers.run(job, work)

    def get_batch_loss_and_error_signal(self, log_posteriors: np.ndarray, seq_lengths: Sequence[int],
                                        tags: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Loss (batch,) float32 and error signal (time, batch, label) float32 of a batch.

        ``log_posteriors`` (time, batch, label), ``seq_lengths`` (batch,), ``tags`` the segment
        names. Frames past a sequence's length get a zero error signal.
        """
        self._check_owner()  # a forked copy, a call from a signal handler inside a call
        self._check_open()
        post, lengths, names = checked_batch(log_posteriors, seq_lengths, tags)
        if self.region is None and post.shape[1]:  # refused before anything is sent (or converted)
            b = int(np.argmax(lengths))
            shape = (int(lengths[b]), post.shape[2])
            check_payload(sent_nbytes(shape), self.max_payload, names[b], shape)
        # one conversion for the whole batch, never per sequence
        if post.dtype != np.float32 or post.strides[2] != 4:
            post = np.ascontiguousarray(post, dtype=np.float32)
        if self.reject_non_finite:  # before anything is sent: no child sees a part of a refused batch
            check_finite_batch(post, lengths, names)
        n_batch = post.shape[1]
        loss = np.zeros((n_batch,), dtype=np.float32)
        error_signal = self.empty(post.shape)
        for b in range(n_batch):  # zero only the padding: a child's answer overwrites every other frame
            error_signal[int(lengths[b]) :, b] = 0
        gather = self.gather

        def job(inst: SprintSubprocessInstance, idxs: Sequence[int], batch: Optional[Batch]) -> None:
            for b in idxs:
                if batch is not None and batch.cancelled:
                    return
                t = int(lengths[b])
                seq = post[:t, b]
                if gather:
                    seq = np.ascontiguousarray(seq)
                # checked above, once for the batch: names, payload limit, finite values
                _, value, _ = inst._round_trip_checked(names[b], seq, error_signal[:t, b])
                loss[b] = value

        # a sequence without frames has nothing for Sprint to compute (RASR refuses empty segments):
        # loss 0 and no error signal, without a round trip
        jobs = [[b for b in job if lengths[b] > 0] for job in schedule_longest_first(lengths, self.max_num_instances)]
        started = time.perf_counter()
        with self._batch():
            self._run_parallel(job, jobs)
        self.seconds += time.perf_counter() - started
        self.segments_done += n_batch
        self.bytes_moved += 2 * int(lengths.sum()) * post.shape[2] * post.itemsize
        return loss, error_signal

    def get_automata_for_batch(self, tags: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One automaton for the batch: ``(edges uint32 (4, E), weights float32 (E,),
        start_end_states uint32 (2, batch))``; edge rows are from, to, emission index, sequence
        index, with each sequence's states offset by the states of the sequences before it."""
        self._check_owner()  # a forked copy, a call from a signal handler inside a call
        self._check_open()
        names = tag_names(tags)
        check_names(names)
        parts: list[Optional[tuple[int, int, np.ndarray, np.ndarray]]] = [None] * len(names)
        jobs: list[list[int]] = [[] for _ in range(self.max_num_instances)]
        for b in range(len(names)):
            jobs[b % self.max_num_instances].append(b)

        def job(inst: SprintSubprocessInstance, idxs: Sequence[int], batch: Optional[Batch]) -> None:
            for b in idxs:
                if batch is not None and batch.cancelled:
                    return
                parts[b] = inst.export_allophone_state_fsa(names[b])

        with self._batch():
            self._run_parallel(job, jobs)
        return merge_automata(parts)  # type: ignore[arg-type]

    def close(self) -> None:
        """Closes every child (exit, bounded wait, terminate/kill) and ends the worker threads. In a
        forked copy it does nothing: the children are the parent's.

        From another thread (or a signal handler) while a call exchanges with the children, their
        children are killed at once, but no fd is closed under the threads that use it: each closes
        its own when its read or write ended and raises ``SprintChildError: the pool was closed
        ...``; ``close()`` then waits for the call to end (bounded: its children are dead) and
        closes the rest. From a signal handler inside a call it returns at once and the call
        finishes the close when it ends."""
        if fork_guard.in_copy(self.owner_pid):
            return
        self.closed = True
        if self._batch_thread is not None:
            self._close_instances()
            if self._batch_thread == threading.get_ident():
                return
        while not self.lock.acquire(timeout=0.1):  # another thread's call: kill its children until it ends
            self._close_instances()
        try:
            self._close_now()
        finally:
            self.lock.release()

    def _close_instances(self) -> None:
        for inst in list(self.instances):
            try:
                inst.close(reason=POOL_CLOSED)
            except Exception as exc:  # pragma: no cover - close is best effort per child
                logger.error("closing a Sprint child failed: %s", exc)

    def _close_now(self) -> None:
        with self.lock:
            self.closed = True
            self._workers.stop()
            errors = []
            for inst in self.instances:
                try:
                    inst.close(reason=POOL_CLOSED)
                except Exception as exc:  # pragma: no cover - close is best effort per child
                    errors.append(exc)
            if self.region is not None:
                self.region.close()  # arrays handed out keep their pages until they die
            for error in errors:  # pragma: no cover
                logger.error("closing a Sprint child failed: %s", error)

    exit_handler = close

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SprintPool(SprintInstancePool):
    """A started pool of Sprint children, to be used as a context manager::

        with SprintPool(num_instances=3, sprint_args="--*.training-criterion=ctc") as pool:
            result = pool.compute(log_posteriors, seq_lengths, tags)   # BatchResult
            result.loss, result.error_signal

    ``sprint_exec`` defaults to the bundled RASR emulator; give the path of RASR's ``nn-trainer``
    for the real thing. ``sprint_args`` (a string split like a shell, or a list) are appended to
    the Sprint command line. Every child is closed when the ``with`` block ends (and at exit).
    Defaults of the options: ``options.DEFAULTS``.
    """

    def __init__(self, num_instances: int = DEFAULTS.num_instances, sprint_exec: Optional[ExecPath] = None,
                 sprint_args: Union[str, Sequence[str]] = "", *, start: bool = True, **options: Any):
        """``options``: any field of ``ParentOptions`` by name (the signature lists them all)."""
        super().__init__(ParentOptions.create(type(self).__name__, num_instances=num_instances,
                                              sprint_exec=sprint_exec, sprint_args=sprint_args, **options))
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
        self._check_owner()
        with self._batch():
            inst = self._free_instance()
            if inst is None:
                raise SprintControlError("every Sprint child is busy")
            try:
                seg, loss, err = inst.get_loss_and_error_signal(name, log_posteriors)
            finally:
                inst.release()
        return SegmentResult(seg, loss, err)

    def automata(self, tags: Any) -> Automata:
        """The batch automaton (see ``get_automata_for_batch``)."""
        return Automata(*self.get_automata_for_batch(tags))


def _new_class_lock_in_a_copy() -> None:
    SprintInstancePool.class_lock = threading.RLock()  # a thread that held it at the fork is not in the copy


os.register_at_fork(after_in_child=_new_class_lock_in_a_copy)


def _pool_signature() -> inspect.Signature:
    """``SprintPool.__init__``'s signature as help() and ``inspect`` should show it: every option of
    ``ParentOptions`` keyword-only with its default (the options are defined there, once)."""
    fields = {f.name: f for f in dataclasses.fields(ParentOptions)}
    first = ("num_instances", "sprint_exec", "sprint_args")
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=fields[n].default) for n in first]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=fields[n].default)
               for n in FIELDS if n not in first]
    params.append(inspect.Parameter("start", inspect.Parameter.KEYWORD_ONLY, default=True))
    return inspect.Signature(params)


SprintPool.__init__.__signature__ = _pool_signature()  # type: ignore[attr-defined]
