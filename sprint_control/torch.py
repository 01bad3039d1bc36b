"""PyTorch bridge: RASR's sequence criteria and RASR's automata inside a PyTorch training loop.

Optional: needs ``pip install sprint_control[torch]``. Nothing else in the package imports this module,
so ``import sprint_control`` works without PyTorch.

- :func:`sprint_loss` sends ``log_softmax(logits)`` to a pool of Sprint children and returns RASR's per-sequence
  loss; its backward hands RASR's error signal (the derivative of the criterion with respect to the pre-softmax
  activations) back to ``logits``.
- :func:`automata_for_batch` fetches RASR's merged automaton of a batch as tensors, with an optional per-segment
  LRU cache (:class:`AutomataCache`), because a training run asks for the same segments every epoch.
- :func:`fullsum_loss` is a batched log-space forward-backward (Baum-Welch) over such an automaton, written in
  PyTorch, so the automata are usable end to end; :func:`fullsum_loss_for_batch` ties both together.

``pool`` is any object with the two batch methods of :class:`sprint_control.parent.SprintPool` /
``SprintInstancePool``: ``get_batch_loss_and_error_signal(log_posteriors, seq_lengths, tags)`` and
``get_automata_for_batch(tags)``. Only numpy arrays cross into the pool; how they travel (protocol v1/v2, shared
memory) is the pool's business.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy as np

try:
    import torch
    from torch.autograd.function import once_differentiable
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sprint_control.torch needs PyTorch (torch>=2.0); install it with: pip install sprint_control[torch]"
    ) from exc

from .errors import ProtocolError
from .parent.batch import merge_automata, tag_names

__all__ = [
    "Automaton",
    "AutomataCache",
    "SprintLossFunction",
    "FullSumLossFunction",
    "sprint_loss",
    "automata_for_batch",
    "fullsum_loss",
    "fullsum_loss_for_batch",
]

log = logging.getLogger("sprint_control.torch")

SeqLengths = Union[torch.Tensor, np.ndarray, Sequence]


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _seq_lengths_numpy(seq_lengths: SeqLengths, batch: int, max_time: int) -> np.ndarray:
    """Sequence lengths as an int64 numpy vector of shape (batch,), checked against the time axis."""
    if isinstance(seq_lengths, torch.Tensor):
        lens = seq_lengths.detach().to("cpu").numpy()
    else:
        lens = np.asarray(seq_lengths)
    if lens.shape != (batch,):
        raise ValueError(f"seq_lengths must have shape ({batch},) (one length per sequence), got {lens.shape}")
    if lens.dtype.kind not in "iu":
        if lens.dtype.kind == "f" and np.all(lens == np.round(lens)):
            lens = lens.astype(np.int64)
        else:
            raise TypeError(f"seq_lengths must hold integers, got dtype {lens.dtype}")
    lens = lens.astype(np.int64, copy=False)
    if batch and (lens.min() < 0 or lens.max() > max_time):
        raise ValueError(
            f"seq_lengths must lie in [0, {max_time}] (the time axis of the input), got min {lens.min()}, "
            f"max {lens.max()}"
        )
    return lens


def _time_mask(lens: np.ndarray, max_time: int) -> np.ndarray:
    """(time, batch) bool: True where the frame lies beyond the sequence's length."""
    return np.arange(max_time)[:, None] >= lens[None, :]


# ----------------------------------------------------------------------------------------------------------------
# sprint_loss: RASR's criterion as an autograd Function


def _host_log_posteriors(logits: torch.Tensor, posterior_dtype: torch.dtype, pool: Any) -> np.ndarray:
    """``log_softmax(logits)`` as a C-contiguous CPU array for the pool, written with one copy at most.

    When the pool allocates batch buffers itself (``pool.empty``: in its shared-memory region, which the
    children read in place), the result is written straight into such a buffer: by ``log_softmax(out=...)``
    for CPU float32 logits, else by one device-to-host copy. Otherwise the device-to-host transfer itself
    makes the array, and ``.numpy()`` shares its memory.
    """
    # half-precision logits are normalized in float32 (on their device), not in their own precision
    work_dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    allocate = getattr(pool, "empty", None)
    if callable(allocate) and posterior_dtype == torch.float32:
        buf = allocate(tuple(logits.shape), np.float32)
        if isinstance(buf, np.ndarray) and buf.dtype == np.float32 and buf.flags.c_contiguous:
            target = torch.from_numpy(buf)
            if logits.device.type == "cpu" and work_dtype == torch.float32:
                torch.log_softmax(logits.to(work_dtype), dim=-1, out=target)
            else:
                target.copy_(torch.log_softmax(logits, dim=-1, dtype=work_dtype))
            return buf
    out = torch.log_softmax(logits, dim=-1, dtype=work_dtype)
    out = out.to(device="cpu", dtype=posterior_dtype, memory_format=torch.contiguous_format)
    return out.numpy()


class SprintLossFunction(torch.autograd.Function):
    """``forward(logits, seq_lengths, tags, pool, posterior_dtype)`` -> per-sequence loss (batch,).

    The backward is RASR's error signal, scaled per sequence by the incoming gradient; ``ctx`` keeps only that
    error signal (saved for backward, on the CPU as it came from the pool) plus the target device and dtype.
    """

    @staticmethod
    def forward(ctx, logits, seq_lengths, tags, pool, posterior_dtype):  # type: ignore[override]
        if logits.dim() != 3:
            raise ValueError(f"logits must be a (time, batch, label) tensor, got shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
        max_time, batch, num_labels = logits.shape
        tags = tag_names(tags, batch)
        lens = _seq_lengths_numpy(seq_lengths, batch, max_time)

        log_posteriors = _host_log_posteriors(logits.detach(), posterior_dtype, pool)
        loss, error_signal = pool.get_batch_loss_and_error_signal(log_posteriors, lens, tags)
        del log_posteriors

        loss = np.asarray(loss)
        error_signal = np.asarray(error_signal)
        if loss.shape != (batch,):
            raise ProtocolError(f"the pool returned a loss of shape {loss.shape}, expected ({batch},)")
        if error_signal.shape != (max_time, batch, num_labels):
            raise ProtocolError(
                f"the pool returned an error signal of shape {error_signal.shape}, "
                f"expected {(max_time, batch, num_labels)} like the log-posteriors"
            )
        # The pool hands over a fresh array per batch; it is kept as is until backward. Frames beyond each
        # length are zeroed here too (in place), so a pool that leaves them undefined cannot leak into the
        # gradient. A read-only or foreign-typed array (e.g. a view of a shared buffer) is copied once.
        if not (error_signal.flags.writeable and error_signal.dtype in (np.float32, np.float64)):
            error_signal = np.array(error_signal, dtype=np.float32)
        beyond = _time_mask(lens, max_time)
        if beyond.any():
            error_signal[beyond] = 0
        ctx.save_for_backward(torch.from_numpy(error_signal))
        ctx.device = logits.device
        ctx.dtype = logits.dtype
        return torch.from_numpy(loss.astype(np.float64, copy=False)).to(device=logits.device, dtype=logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):  # type: ignore[override]
        (error_signal,) = ctx.saved_tensors
        # Out of place: when device and dtype already match, .to() returns the saved tensor itself.
        scale = grad_loss.to(device=ctx.device, dtype=ctx.dtype).view(1, -1, 1)
        grad = error_signal.to(device=ctx.device, dtype=ctx.dtype) * scale
        return grad, None, None, None, None


def sprint_loss(
    logits: torch.Tensor,
    seq_lengths: SeqLengths,
    tags: Sequence[str],
    pool: Any,
    *,
    posterior_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """RASR's sequence criterion on a batch, as a differentiable per-sequence loss.

    :param logits: (time, batch, label) pre-softmax activations, on any device, any floating dtype.
    :param seq_lengths: (batch,) frames per sequence (tensor, array or list); frames beyond are ignored.
    :param tags: one segment name per sequence, as RASR knows them.
    :param pool: a ``SprintPool`` / ``SprintInstancePool`` (anything with ``get_batch_loss_and_error_signal``).
    :param posterior_dtype: dtype of the log-posteriors handed to the pool. Sprint's wire carries float32; an
        in-process pool that computes in float64 (a reference criterion) can be given ``torch.float64``.
    :return: (batch,) loss on ``logits.device`` in ``logits.dtype``. A segment that RASR skipped has loss
        ``inf`` and a zero gradient; mask it with ``torch.isfinite`` before summing.
    """
    return SprintLossFunction.apply(logits, seq_lengths, tags, pool, posterior_dtype)


# ----------------------------------------------------------------------------------------------------------------
# automata


class Automaton(NamedTuple):
    """RASR's automaton of one batch: all sequences merged into one state space.

    ``edges`` (4, E): from-state, to-state, emission index (label), sequence index. ``weights`` (E,) float32,
    in -log space (costs). ``start_end_states`` (2, batch): each sequence's start and its only final state.
    """

    edges: torch.Tensor
    weights: torch.Tensor
    start_end_states: torch.Tensor

    @property
    def num_states(self) -> int:
        return int(self.start_end_states[1].max().item()) + 1 if self.start_end_states.numel() else 0


class _SeqAutomaton(NamedTuple):
    """One sequence's automaton with local state indices (start state 0, final state num_states - 1)."""

    num_states: int
    edges: np.ndarray  # (3, e) uint32: from, to, emission
    weights: np.ndarray  # (e,) float32


class AutomataCache:
    """A thread-safe LRU of per-segment automata, keyed by segment name.

    A training run asks for the same segments every epoch; with a cache, RASR is asked only for the segments
    of a batch that are not in it. ``maxsize=None`` keeps everything.
    """

    def __init__(self, maxsize: Optional[int] = 10000):
        if maxsize is not None and maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 or None, got {maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[str, _SeqAutomaton] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, tag: str) -> bool:
        return tag in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def _get(self, tag: str) -> Optional[_SeqAutomaton]:
        with self._lock:
            item = self._items.get(tag)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(tag)
            self.hits += 1
            return item

    def _put(self, tag: str, item: _SeqAutomaton) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            self._items[tag] = item
            self._items.move_to_end(tag)
            while self.maxsize is not None and len(self._items) > self.maxsize:
                self._items.popitem(last=False)


def _split_automata(
    edges: np.ndarray, weights: np.ndarray, start_end_states: np.ndarray, batch: int
) -> list[_SeqAutomaton]:
    """Splits a merged batch automaton (pool layout) into one local automaton per sequence."""
    edges = np.asarray(edges)
    weights = np.asarray(weights, dtype=np.float32)
    start_end_states = np.asarray(start_end_states)
    if edges.ndim != 2 or edges.shape[0] != 4:
        raise ProtocolError(f"automaton edges must have shape (4, num_edges), got {edges.shape}")
    if weights.shape != (edges.shape[1],):
        raise ProtocolError(f"automaton weights must have shape ({edges.shape[1]},), got {weights.shape}")
    if start_end_states.shape != (2, batch):
        raise ProtocolError(f"start_end_states must have shape (2, {batch}), got {start_end_states.shape}")
    edges = edges.astype(np.int64, copy=False)
    start_end = start_end_states.astype(np.int64, copy=False)
    seq = edges[3]
    if edges.shape[1] and (seq.min() < 0 or seq.max() >= batch):
        raise ProtocolError(f"automaton edges name sequences outside [0, {batch})")
    out = []
    for b in range(batch):
        start, end = int(start_end[0, b]), int(start_end[1, b])
        if end < start:
            raise ProtocolError(f"sequence {b}: end state {end} lies before its start state {start}")
        sel = np.flatnonzero(seq == b)
        local = edges[:3, sel].copy()
        local[:2] -= start
        if sel.size and (local[:2].min() < 0 or local[:2].max() > end - start):
            raise ProtocolError(f"sequence {b}: an edge leaves the state range [{start}, {end}] of its sequence")
        out.append(_SeqAutomaton(end - start + 1, local.astype(np.uint32), weights[sel].copy()))
    return out


def _automaton_tensors(
    parts: Sequence[_SeqAutomaton], index_dtype: torch.dtype, device: Optional[torch.device]
) -> Automaton:
    """Merges per-sequence automata (the parent's ``merge_automata``: state offsets in batch order) into
    tensors."""
    edges, weights, start_end = merge_automata([(p.num_states, p.edges.shape[1], p.edges, p.weights) for p in parts])
    return Automaton(
        torch.from_numpy(edges.astype(np.int64)).to(device=device, dtype=index_dtype),
        torch.from_numpy(weights).to(device=device),
        torch.from_numpy(start_end.astype(np.int64)).to(device=device, dtype=index_dtype),
    )


def automata_for_batch(
    tags: Sequence[str],
    pool: Any,
    *,
    cache: Optional[AutomataCache] = None,
    index_dtype: torch.dtype = torch.int64,
    device: Union[torch.device, str, None] = None,
) -> Automaton:
    """RASR's merged automaton for a batch of segments, as torch tensors.

    :param tags: one segment name per sequence.
    :param pool: anything with ``get_automata_for_batch(tags) -> (edges (4,E), weights (E,), start_end (2,B))``.
    :param cache: an :class:`AutomataCache`; only segments missing from it are fetched from RASR.
    :param index_dtype: ``torch.int64`` (default) or ``torch.int32`` for ``edges`` and ``start_end_states``.
    :param device: where the tensors go (default CPU).
    :return: :class:`Automaton` ``(edges (4, E), weights float32 (E,), start_end_states (2, batch))``, the same
        numbers as the pool's numpy arrays (state offsets per sequence in batch order).
    """
    if index_dtype not in (torch.int64, torch.int32):
        raise TypeError(f"index_dtype must be torch.int64 or torch.int32, got {index_dtype}")
    tags = tag_names(tags)
    device = torch.device(device) if device is not None else None
    if cache is None:
        edges, weights, start_end = pool.get_automata_for_batch(tags)
        return _automaton_tensors(_split_automata(edges, weights, start_end, len(tags)), index_dtype, device)

    parts: list[Optional[_SeqAutomaton]] = [cache._get(t) for t in tags]
    missing = list(OrderedDict.fromkeys(t for t, p in zip(tags, parts) if p is None))
    if missing:
        edges, weights, start_end = pool.get_automata_for_batch(missing)
        fetched = dict(zip(missing, _split_automata(edges, weights, start_end, len(missing))))
        for tag, part in fetched.items():
            cache._put(tag, part)
        parts = [p if p is not None else fetched[t] for t, p in zip(tags, parts)]
        log.debug("automata: %d of %d segments fetched from RASR", len(missing), len(tags))
    return _automaton_tensors(parts, index_dtype, device)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# full-sum (Baum-Welch) loss over an automaton


def _scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[s] = logsumexp(values[index == s]) along the last axis; -inf where nothing lands."""
    shape = values.shape[:-1] + (size,)
    idx = index.expand_as(values)
    peak = torch.full(shape, float("-inf"), dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(-1, idx, values, reduce="amax", include_self=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros((), dtype=values.dtype, device=values.device))
    total = torch.zeros(shape, dtype=values.dtype, device=values.device)
    total.scatter_add_(-1, idx, torch.exp(values - peak.gather(-1, idx)))
    return peak + torch.log(total)


def _state_sequences(start_end: torch.Tensor, num_states: int) -> torch.Tensor:
    """(num_states,) sequence index of each state; the states of sequence b lie in [start_b, end_b]."""
    starts, order = torch.sort(start_end[0])
    pos = torch.searchsorted(starts, torch.arange(num_states, device=starts.device), right=True) - 1
    return order[pos.clamp_min(0)]


class FullSumLossFunction(torch.autograd.Function):
    """``forward(log_probs, seq_lengths, edges, weights, start_end_states)`` -> (batch,) ``-log sum_paths``.

    Forward pass in log space over the edge list (one edge per frame), batched over all sequences of the
    merged automaton; backward runs the backward pass and returns ``-occupancy * grad`` for ``log_probs``
    (and the summed edge occupancy for ``weights``, when they require a gradient).
    """

    @staticmethod
    def forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states):  # type: ignore[override]
        max_time, batch, num_labels = log_probs.shape
        device = log_probs.device
        # half precision cannot hold log-sums over long sequences: compute in float32 then
        dtype = log_probs.dtype if log_probs.dtype in (torch.float32, torch.float64) else torch.float32
        edges = edges.to(device=device, dtype=torch.int64)
        src, dst, emission, seq = edges[0], edges[1], edges[2], edges[3]
        start_end = start_end_states.to(device=device, dtype=torch.int64)
        lens = seq_lengths.to(device=device, dtype=torch.int64)
        num_states = int(start_end[1].max().item()) + 1 if batch else 0
        state_seq = _state_sequences(start_end, num_states)
        # frame scores of each edge: log p(emission | t) - weight, (time, E)
        scores = log_probs.to(dtype)[:, seq, emission] - weights.to(device=device, dtype=dtype)

        alpha = torch.full((num_states,), float("-inf"), dtype=dtype, device=device)
        alpha[start_end[0]] = 0.0
        alphas = torch.empty((max_time + 1, num_states), dtype=dtype, device=device)
        alphas[0] = alpha
        for t in range(max_time):
            active = lens[state_seq] > t  # sequences that still consume frame t
            new = _scatter_logsumexp(alpha[src] + scores[t], dst, num_states)
            alpha = torch.where(active, new, alpha)
            alphas[t + 1] = alpha
        log_z = alpha[start_end[1]] if batch else alpha.new_zeros(0)
        ctx.save_for_backward(scores, alphas, edges, start_end, lens, log_z)
        ctx.shape = (max_time, batch, num_labels)
        ctx.input_dtype = log_probs.dtype
        ctx.weights_dtype, ctx.weights_device = weights.dtype, weights.device
        return (-log_z).to(log_probs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):  # type: ignore[override]
        scores, alphas, edges, start_end, lens, log_z = ctx.saved_tensors
        max_time, batch, num_labels = ctx.shape
        num_states = alphas.shape[1]
        device, dtype = scores.device, scores.dtype
        src, dst, emission, seq = edges[0], edges[1], edges[2], edges[3]
        grad_lp = torch.zeros((max_time, batch * num_labels), dtype=dtype, device=device)
        if batch == 0 or edges.shape[1] == 0:
            grad_w = torch.zeros(edges.shape[1], dtype=ctx.weights_dtype, device=ctx.weights_device)
            grad_w = grad_w if ctx.needs_input_grad[3] else None
            return grad_lp.view(max_time, batch, num_labels).to(ctx.input_dtype), None, None, grad_w, None
        state_seq = _state_sequences(start_end, num_states)
        # Sequences whose final state is unreachable have loss inf and get no gradient.
        reachable = torch.isfinite(log_z)
        edge_log_z = torch.where(reachable, log_z, torch.zeros_like(log_z))[seq]
        edge_scale = torch.where(reachable, grad_loss.to(dtype), torch.zeros_like(grad_loss, dtype=dtype))[seq]
        column = seq * num_labels + emission
        edge_len = lens[seq]

        grad_w = torch.zeros(edges.shape[1], dtype=dtype, device=device) if ctx.needs_input_grad[3] else None
        beta = torch.full((num_states,), float("-inf"), dtype=dtype, device=device)
        beta[start_end[1]] = 0.0
        for t in range(max_time - 1, -1, -1):
            # occupancy of each edge at frame t: alpha_t(from) + score + beta_{t+1}(to) - log Z
            log_xi = alphas[t][src] + scores[t] + beta[dst] - edge_log_z
            xi = torch.where(edge_len > t, torch.exp(log_xi), torch.zeros((), dtype=dtype, device=device))
            grad_lp[t].index_add_(0, column, -xi * edge_scale)
            if grad_w is not None:
                grad_w += xi * edge_scale  # the weight is a cost: d(-log Z)/d weight = +occupancy
            active = lens[state_seq] > t
            new = _scatter_logsumexp(scores[t] + beta[dst], src, num_states)
            beta = torch.where(active, new, beta)
        if grad_w is not None:
            grad_w = grad_w.to(device=ctx.weights_device, dtype=ctx.weights_dtype)
        return grad_lp.view(max_time, batch, num_labels).to(ctx.input_dtype), None, None, grad_w, None


def fullsum_loss(
    log_probs: torch.Tensor,
    seq_lengths: SeqLengths,
    edges: torch.Tensor,
    weights: torch.Tensor,
    start_end_states: torch.Tensor,
    *,
    weight_scale: float = 1.0,
) -> torch.Tensor:
    """Full-sum (Baum-Welch) loss ``-log sum over paths`` of each sequence through its automaton.

    Each frame moves along exactly one edge, scoring ``log_probs[t, seq, emission] - weight_scale * weight``;
    a path starts in the sequence's start state at frame 0 and must be in its final state after its last frame.

    :param log_probs: (time, batch, label) log-probabilities, e.g. ``log_softmax(logits, -1)``; any device.
    :param seq_lengths: (batch,) frames per sequence.
    :param edges: (4, E) int: from-state, to-state, emission index, sequence index (RASR's merged layout).
    :param weights: (E,) edge weights in -log space (RASR's transition costs).
    :param start_end_states: (2, batch) start and final state of each sequence.
    :param weight_scale: multiplies the weights (RETURNN calls it the tdp scale).
    :return: (batch,) loss, ``inf`` where the final state cannot be reached (zero gradient there). The
        gradient with respect to ``log_probs`` is minus the state occupancies; ``weights`` that require a
        gradient (trainable transition costs) get their edge occupancies summed over time.
    """
    if log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a floating (time, batch, label) tensor, got {tuple(log_probs.shape)}")
    max_time, batch, num_labels = log_probs.shape
    lens = torch.as_tensor(_seq_lengths_numpy(seq_lengths, batch, max_time))
    edges = torch.as_tensor(edges)
    start_end_states = torch.as_tensor(start_end_states)
    weights = torch.as_tensor(weights)
    if edges.dim() != 2 or edges.shape[0] != 4:
        raise ValueError(f"edges must have shape (4, num_edges), got {tuple(edges.shape)}")
    if weights.shape != (edges.shape[1],):
        raise ValueError(f"weights must have shape ({edges.shape[1]},), got {tuple(weights.shape)}")
    if tuple(start_end_states.shape) != (2, batch):
        raise ValueError(f"start_end_states must have shape (2, {batch}), got {tuple(start_end_states.shape)}")
    if edges.shape[1]:
        emax = int(edges[2].max())
        if emax >= num_labels or int(edges[2].min()) < 0:
            raise ValueError(f"edge emission indices must lie in [0, {num_labels}), got up to {emax}")
        if int(edges[3].max()) >= batch or int(edges[3].min()) < 0:
            raise ValueError(f"edge sequence indices must lie in [0, {batch})")
    if weight_scale != 1.0:
        weights = weights * weight_scale
    return FullSumLossFunction.apply(log_probs, lens, edges, weights, start_end_states)


def fullsum_loss_for_batch(
    logits: torch.Tensor,
    seq_lengths: SeqLengths,
    tags: Sequence[str],
    pool: Any,
    *,
    cache: Optional[AutomataCache] = None,
    weight_scale: float = 1.0,
) -> torch.Tensor:
    """Full-sum loss of ``log_softmax(logits)`` over RASR's automata for ``tags`` (fetched through ``pool``)."""
    automaton = automata_for_batch(tags, pool, cache=cache, device=logits.device)
    return fullsum_loss(
        torch.log_softmax(logits, dim=-1),
        seq_lengths,
        automaton.edges,
        automaton.weights,
        automaton.start_end_states,
        weight_scale=weight_scale,
    )

