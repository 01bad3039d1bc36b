"""``RaySprintPool``: ``SprintPool``'s interface with each Sprint child in a Ray actor on some node of a
Ray cluster. A batch is split longest-first over the actors as in the local pool; each actor's share
goes through Ray's object store (numpy arrays are read in place there), and the answers are written
into one (time, batch, label) output array."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import numpy as np
import ray

from ..errors import SprintControlError
from ..parent import (
    DEFAULTS,
    SegmentResult,
    SprintPool,
    fork_guard,
    merge_automata,
    schedule_longest_first,
)
from ..parent.batch import check_finite_batch, checked_batch, tag_names
from ..parent.process import ExecPath
from .options import RAY_GRACE, RayOptions, checked_pool_options
from .slots import ActorSlot, collect


class RaySprintPool:
    """Sprint children in Ray actors, used like ``SprintPool``::

        with RaySprintPool(4, sprint_exec="/opt/rasr/nn-trainer", sprint_args=args,
                           address="auto", resources={"num_cpus": 1}, placement="SPREAD") as pool:
            result = pool.compute(log_posteriors, seq_lengths, tags)   # BatchResult

    The first three arguments and every keyword argument of ``SprintPool`` (``timeout``,
    ``protocol``, ``shm``, ``env``, ...) apply to each actor's own one-child pool on its node
    (``sprint_exec`` None: the emulator of that node's interpreter). The Ray options:

    - ``address``: the cluster to join when Ray is not initialised yet (``ray.init(address, **ray_init)``;
      a pool that started Ray shuts it down on ``close``). With Ray initialised, the pool uses it.
    - ``resources``: what each child's actor reserves, e.g. ``{"num_cpus": 1}`` (the default);
      other keys are custom resources (``{"num_cpus": 1, "rasr": 1}``).
    - ``placement``: "PACK", "SPREAD", "STRICT_PACK" or "STRICT_SPREAD": one placement group with a
      bundle of ``resources`` per child, removed on ``close``. Or ``scheduling_strategy``: any of
      Ray's (``"SPREAD"``, a ``NodeAffinitySchedulingStrategy``, ...).
    - ``node_label``: only nodes with these labels (``ray start --labels``), e.g. ``{"rasr": "yes"}``.
    - ``actor_timeout``: seconds a call to an actor may take before it counts as lost (its node gone,
      or the actor stuck); it is then killed and replaced, and SprintTimeoutError raised. Default:
      ``start_timeout`` plus ``timeout`` per segment of the actor's share, plus a grace for Ray;
      none when ``timeout`` is None (Ray still reports a dead node or actor).

    Failures name the actor, its node and the segment: a child that dies or times out is the same
    error class as in the local pool (and restarted by its actor, with ``restart_dead``); an actor
    that is lost is a SprintChildError, and a new actor is started. ``close`` ends every actor.
    """

    def __init__(
        self,
        num_instances: int = DEFAULTS.num_instances,
        sprint_exec: Optional[ExecPath] = None,
        sprint_args: Union[str, Sequence[str]] = "",
        *,
        address: Optional[str] = None,
        resources: Optional[Mapping[str, float]] = None,
        placement: Optional[str] = None,
        scheduling_strategy: Any = None,
        node_label: Optional[Mapping[str, str]] = None,
        actor_timeout: Optional[float] = None,
        ray_init: Optional[Mapping[str, Any]] = None,
        start: bool = True,
        **pool_options: Any,
    ):
        if isinstance(num_instances, bool) or not isinstance(num_instances, int) or num_instances < 1:
            raise ValueError(f"num_instances must be a whole number of at least 1, got {num_instances!r}")
        self.ray_options = RayOptions.checked(
            address=address, resources=resources, placement=placement, scheduling_strategy=scheduling_strategy,
            node_label=node_label, actor_timeout=actor_timeout, ray_init=ray_init)
        options = checked_pool_options(pool_options)
        # SprintPool checks its own options (nothing is started): a mistake is refused here, not on a node
        probe = SprintPool(1, sprint_exec, sprint_args, start=False, **options)
        probe.close()
        self._timeout: Optional[float] = probe.sprint_opts["timeout"]
        self._start_timeout: Optional[float] = probe.sprint_opts["start_timeout"]
        self._exit_timeout: float = probe.sprint_opts["exit_timeout"]
        self.reject_non_finite = probe.reject_non_finite
        self._actor_args = (sprint_exec, sprint_args, options)
        self.max_num_instances = num_instances
        self.owner_pid = os.getpid()  # a forked copy refuses every call (fork_guard)
        self.lock = threading.RLock()
        self._calling_thread: Optional[int] = None  # the thread inside a call, for the re-entry check
        self.closed = False
        self.slots: list[ActorSlot] = []
        self._placement_group: Any = None
        self._owns_ray = False
        self._next_slot = 0
        self.segments_done = 0
        self.bytes_moved = 0
        self.seconds = 0.0
        if start:
            self.start()

    # -- life cycle ---------------------------------------------------------------------------------------

    def _start_bound(self) -> Optional[float]:
        if self.ray_options.actor_timeout is not None:
            return self.ray_options.actor_timeout
        return None if self._start_timeout is None else self._start_timeout + RAY_GRACE

    def _call_bound(self, segments: int) -> Optional[float]:
        """Seconds a call covering ``segments`` segments may take (see ``actor_timeout``)."""
        if self.ray_options.actor_timeout is not None:
            return self.ray_options.actor_timeout
        if self._timeout is None:
            return None
        return (self._start_timeout or 0.0) + self._timeout * max(segments, 1) + RAY_GRACE

    def _check_open(self) -> None:
        if self.closed:
            raise SprintControlError("this pool is closed")

    @contextmanager
    def _call(self) -> Iterator[None]:
        """The pool's lock for one call, after the checks that must come before it: not in a forked copy
        (the lock may be held for ever there), not re-entered from a signal handler of the calling
        thread, not closed."""
        fork_guard.check_owner(self.owner_pid, "Ray pool")
        fork_guard.check_not_reentered(self._calling_thread)
        with self.lock:
            self._check_open()
            self._calling_thread = threading.get_ident()
            try:
                yield
            finally:
                self._calling_thread = None

    def start(self) -> RaySprintPool:
        """Starts every actor and its child now (they start together); waits until all run."""
        with self._call():
            try:
                self._ready()
            except BaseException:
                self.close()
                raise
        return self

    def _ready(self) -> None:
        """Every slot with a running actor: made on first use, replacements waited for."""
        if not self.slots:
            opts = self.ray_options
            if not ray.is_initialized():
                ray.init(address=opts.address, **opts.ray_init)
                self._owns_ray = True
            if opts.placement is not None:
                self._placement_group = _placement_group(opts, self.max_num_instances, self._start_bound())
            self.slots = [ActorSlot(i, self._actor_args, opts, self._placement_group)
                          for i in range(self.max_num_instances)]
            for slot in self.slots:
                slot.spawn()
        for slot in self.slots:
            slot.wait_ready(self._start_bound())

    def close(self) -> None:
        """Ends every child and actor (the child's exit first, bounded) and what the pool made in Ray.
        In a forked copy it does nothing: the actors are the parent's."""
        if fork_guard.in_copy(self.owner_pid):
            return
        with self.lock:
            self.closed = True
            if not ray.is_initialized():  # Ray was shut down under the pool: its actors went with it
                self.slots, self._placement_group, self._owns_ray = [], None, False
                return
            for slot in self.slots:
                slot.close(self._exit_timeout + RAY_GRACE)
            if self._placement_group is not None:
                ray.util.remove_placement_group(self._placement_group)
                self._placement_group = None
            if self._owns_ray:
                ray.shutdown()
                self._owns_ray = False

    exit_handler = close

    def __enter__(self) -> RaySprintPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- what the local pool offers -------------------------------------------------------------------------

    @property
    def num_instances(self) -> int:
        return self.max_num_instances

    numInstances = num_instances

    @property
    def protocol(self) -> Optional[int]:
        """The protocol the running children speak (the lowest, if they differ)."""
        protos = [s.info["protocol"] for s in self.slots if s.info is not None and s.info["protocol"] is not None]
        return min(protos) if protos else None

    def actor_info(self) -> list[Optional[dict[str, Any]]]:
        """Per child, asked of its actor now: node id and address, host name, actor pid, Sprint child pid,
        segments done (None: no actor running)."""
        with self._call():
            return [slot.refresh(self._start_bound()) for slot in self.slots]

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An array for batch data (the actors' nodes have their own memory: an ordinary array)."""
        fork_guard.check_owner(self.owner_pid, "Ray pool")
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype=np.float32) -> np.ndarray:
        fork_guard.check_owner(self.owner_pid, "Ray pool")
        return np.zeros(shape, dtype)

    def get_batch_loss_and_error_signal(self, log_posteriors: np.ndarray, seq_lengths: Sequence[int],
                                        tags: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Loss (batch,) float32 and error signal (time, batch, label) float32, as ``SprintPool``'s."""
        post, lengths, names = checked_batch(log_posteriors, seq_lengths, tags)
        if post.dtype != np.float32:
            post = post.astype(np.float32)
        if self.reject_non_finite:  # before anything is sent, as in the local pool
            check_finite_batch(post, lengths, names)
        loss = np.zeros((post.shape[1],), dtype=np.float32)
        error_signal = np.empty(post.shape, dtype=np.float32)
        error_signal[:, lengths == 0] = 0  # nothing to compute: loss 0, no error signal, no round trip
        started = time.perf_counter()
        with self._call():
            self._ready()
            jobs = [[b for b in job if lengths[b] > 0]
                    for job in schedule_longest_first(lengths, self.max_num_instances)]
            shares = [(slot, idxs, int(lengths[idxs].max())) for slot, idxs in zip(self.slots, jobs) if idxs]
            # each share is gathered into one contiguous (time, n, label) array: the object store holds it once
            calls = [(slot, slot.handle.compute.remote(np.ascontiguousarray(post[:t, idxs]), lengths[idxs],
                                                       [names[b] for b in idxs]), [names[b] for b in idxs])
                     for slot, idxs, t in shares]

            def on_result(k: int, value: tuple[np.ndarray, np.ndarray]) -> None:
                _, idxs, t = shares[k]
                loss[idxs] = value[0]
                error_signal[:t, idxs] = value[1]
                error_signal[t:, idxs] = 0

            collect(calls, self._call_bound(max((len(j) for j in jobs), default=0)), "its share of a batch",
                    on_result)
        self.seconds += time.perf_counter() - started
        self.segments_done += len(names)
        self.bytes_moved += 2 * int(lengths.sum()) * post.shape[2] * 4
        return loss, error_signal

    # the typed results: SprintPool's own wrappers, over this pool's RETURNN-style calls
    compute = SprintPool.compute
    automata = SprintPool.automata

    def compute_segment(self, name: str, log_posteriors: np.ndarray) -> SegmentResult:
        """Loss and error signal of one segment, (time, label), on the actors in turn."""
        (name,) = tag_names([name])
        if not name:
            raise ValueError("the segment name must not be empty")
        post = np.asarray(log_posteriors)
        if post.ndim != 2:
            raise ValueError(f"log_posteriors must be a (time, label) matrix, got shape {post.shape}")
        if post.shape[0] == 0:
            raise ValueError(f"segment {name!r} has no frames: Sprint computes no criterion on an empty segment")
        loss, err = self.get_batch_loss_and_error_signal(post[:, None, :], [post.shape[0]], [name])
        return SegmentResult(name, float(loss[0]), err[:, 0])

    def get_automata_for_batch(self, tags: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One automaton for the batch, as ``SprintInstancePool.get_automata_for_batch``."""
        names = tag_names(tags)
        parts: list[Any] = [None] * len(names)
        with self._call():
            self._ready()
            n = self.max_num_instances
            shares = [(slot, list(range(i, len(names), n))) for i, slot in enumerate(self.slots) if i < len(names)]
            calls = [(slot, slot.handle.automata.remote([names[b] for b in idxs]), [names[b] for b in idxs])
                     for slot, idxs in shares]

            def on_result(k: int, value: list) -> None:
                for b, part in zip(shares[k][1], value):
                    parts[b] = part

            collect(calls, self._call_bound(-(-len(names) // n)), "the automata", on_result)
        return merge_automata(parts)

    def __repr__(self) -> str:
        running = sum(s.info is not None for s in self.slots)
        return f"<RaySprintPool {running}/{self.max_num_instances} actors running{' closed' if self.closed else ''}>"


def _placement_group(opts: RayOptions, n: int, bound: Optional[float]) -> Any:
    """One bundle per child, placed as ``opts.placement`` says; given up (and removed) past ``bound``."""
    from ray.exceptions import GetTimeoutError

    from ..errors import SprintTimeoutError

    group = ray.util.placement_group([opts.bundle() for _ in range(n)], strategy=opts.placement)
    try:
        ray.get(group.ready(), timeout=bound)
    except GetTimeoutError:
        ray.util.remove_placement_group(group)
        raise SprintTimeoutError(f"Ray could not place {n} bundles of {opts.bundle()} ({opts.placement}) within"
                                 f" {bound} s: the cluster lacks the resources") from None
    return group
