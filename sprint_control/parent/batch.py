"""Batch-level pieces shared by the pool and the torch bridge: the typed results, segment names from
the tags a framework hands over, input checks, the longest-first schedule, and automaton merging."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import ProtocolError
from ..wire.constants import DEFAULT_MAX_NAME
from ..wire.limits import check_name
from ..wire.limits import check_payload as check_payload_limit

__all__ = [
    "SegmentResult",
    "BatchResult",
    "Automata",
    "tag_names",
    "checked_lengths",
    "check_real_dtype",
    "check_finite",
    "check_payload",
    "check_names",
    "schedule_longest_first",
    "merge_automata",
]


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
        mask: np.ndarray = np.isinf(self.loss)
        return mask

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


def _tag_name(tag: Any) -> str:
    if isinstance(tag, np.ndarray):
        if tag.dtype == np.uint8 and tag.ndim == 1:  # one row of RETURNN's (batch, len) byte array
            tag = bytes(tag).rstrip(b"\0")
        else:
            tag = tag.item()
    if isinstance(tag, (bytes, bytearray, np.bytes_)):
        tag = bytes(tag).decode("utf-8")
    if not isinstance(tag, str):
        raise TypeError(f"a tag must be a segment name (str or bytes), got {type(tag).__name__}: {tag!r:.100}")
    return str(tag)


def tag_names(tags: Any, n_batch: Optional[int] = None) -> list[str]:
    """Segment names from a sequence of str/bytes or an array (str, bytes, or RETURNN's zero-padded
    uint8 (batch, max_len)); ``n_batch``: the count the batch needs."""
    if tags is None:
        raise ValueError("tags (the segment names) are required: Sprint looks the segments up by name")
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"tags must be a sequence of segment names, got a single {type(tags).__name__}:"
                        f" {tags!r:.100}")
    if isinstance(tags, np.ndarray) and tags.dtype == np.uint8 and tags.ndim == 2:
        names = [bytes(row).rstrip(b"\0").decode("utf-8") for row in tags]
    else:
        names = [_tag_name(t) for t in tags]
    if n_batch is not None and len(names) != n_batch:
        raise ValueError(f"got {len(names)} tags for a batch of {n_batch} sequences; expected one tag per sequence")
    return names


def checked_lengths(seq_lengths: Any, n_batch: int, max_time: int) -> np.ndarray:
    """Sequence lengths as int64 (batch,), whole numbers in [0, max_time]."""
    raw = np.asarray(seq_lengths)
    if raw.dtype.kind not in "iu" and not (raw.dtype.kind == "f" and np.array_equal(raw, np.round(raw))):
        raise ValueError(f"seq_lengths must be whole numbers of frames, got {raw.tolist()!r:.200}")
    if raw.ndim != 1 or raw.shape[0] != n_batch:
        raise ValueError(f"seq_lengths must be (batch,) = ({n_batch},), got shape {raw.shape}")
    # checked before the cast: 2**63 as uint64 must not wrap to a negative int64
    if raw.size and (raw.min() < 0 or raw.max() > max_time):
        raise ValueError(f"seq_lengths must lie in [0, {max_time}], got {raw.tolist()!r:.200}")
    return raw.astype(np.int64)


def check_real_dtype(post: np.ndarray) -> None:
    """Posteriors must be real numbers; a complex, bool, object or text array is a caller's mistake
    that a silent conversion would hide."""
    if post.dtype.kind not in "fiu":
        raise TypeError(f"log_posteriors must be a real floating-point array (float32 preferred), got {post.dtype}")


def check_finite(post: np.ndarray, seg_name: str) -> None:
    """``reject_non_finite``: NaN/inf in a segment's posteriors is refused before anything is sent."""
    finite = np.isfinite(post)
    if not finite.all():
        t, label = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"log_posteriors of segment {seg_name!r} hold {int(finite.size - finite.sum())} non-finite values"
            f" (first: {post[t, label]} at frame {t}, label {label}); reject_non_finite is on"
        )


def check_names(names: Sequence[str], limit: int = DEFAULT_MAX_NAME) -> None:
    """Segment names the wire cannot carry (empty, or over ``limit`` bytes of UTF-8, on either
    protocol) are refused before anything is sent."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"seg_name must be a non-empty segment name, got {name!r:.100}")
        check_name(name, limit)


def checked_batch(log_posteriors: Any, seq_lengths: Sequence[int], tags: Any
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A batch's (time, batch, label) log-posteriors, lengths and segment names, each checked, before
    any of it reaches a child: ``(posteriors as given, lengths, names)``."""
    post = np.asarray(log_posteriors)
    if post.ndim != 3:
        raise ValueError(f"log_posteriors must be (time, batch, label), got shape {post.shape}")
    check_real_dtype(post)
    lengths = checked_lengths(seq_lengths, post.shape[1], post.shape[0])
    names = tag_names(tags, post.shape[1])
    check_names(names)
    return post, lengths, names


def check_finite_batch(post: np.ndarray, lengths: np.ndarray, names: Sequence[str]) -> None:
    """``reject_non_finite`` over a batch: every sequence's frames, before anything is sent."""
    for b in range(post.shape[1]):
        check_finite(post[: int(lengths[b]), b], names[b])


#: what a segment's posteriors and error signal travel as
SENT_DTYPE = np.dtype(np.float32)


def sent_nbytes(shape: tuple[int, ...]) -> int:
    """The bytes of a matrix of ``shape`` as it is sent (``SENT_DTYPE``, whatever the caller's dtype)."""
    return int(np.prod(shape, dtype=np.int64)) * SENT_DTYPE.itemsize


def check_payload(nbytes: int, max_payload: int, seg_name: str, shape: tuple[int, ...]) -> None:
    """A segment the child cannot take is refused here, before anything is written."""
    check_payload_limit(
        nbytes, max_payload, f"the posteriors of segment {seg_name!r} ({' x '.join(map(str, shape))} float32)",
        hint=" (SprintPool(max_payload=...), SprintSubprocessInstance(max_payload=...) or sprint_opts['max_payload'];"
        " or use shm=True)",
    )


def schedule_longest_first(seq_lengths: Union[Sequence[int], np.ndarray], num_instances: int) -> list[list[int]]:
    """Greedy split of a batch: longest sequence first, each to the least-loaded instance."""
    order = sorted(range(len(seq_lengths)), key=lambda b: (-int(seq_lengths[b]), b))
    jobs: list[list[int]] = [[] for _ in range(num_instances)]
    load = [0] * num_instances
    for b in order:
        j = min(range(num_instances), key=lambda i: (load[i], i))
        jobs[j].append(b)
        load[j] += int(seq_lengths[b])
    return jobs


def merge_automata(parts: Sequence[tuple[int, int, np.ndarray, np.ndarray]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merges per-sequence automata ``(num_states, num_edges, edges (3*E,) or (3, E), weights (E,))``
    into RETURNN's batch layout: ``edges`` uint32 (4, E) from, to, emission index, sequence index, with
    each sequence's states offset by the states of the sequences before it; ``weights`` float32 (E,);
    ``start_end_states`` uint32 (2, batch)."""
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
