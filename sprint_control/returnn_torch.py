"""RASR's criteria in RETURNN's PyTorch engine (``backend = "torch"``), with RETURNN's own ``sprint_opts``.

RETURNN's TF backend has ``loss="sprint"`` (error signals from a pool of Sprint children) and
``FastBaumWelchLoss`` (full-sum over Sprint automata); its PyTorch engine has neither. Inside a ``train_step``
that gets RETURNN frontend tensors, these functions give both:

- :func:`sprint_loss` sends ``log_softmax(logits)`` to the pool of ``sprint_opts`` and returns RASR's loss per
  sequence; the backward pass hands RASR's error signal to ``logits`` (``sprint_control.torch.sprint_loss``).
- :func:`fullsum_loss` is ``-log`` of the sum over all paths through RASR's automaton of each sequence
  (``sprint_control.torch.fullsum_loss``); the automata come from the pool of ``sprint_opts`` or, without any
  child, from a builder with librasr's API (``automata=``), cached per segment.

Both take frontend ``Tensor``\\ s with their dims (batch, time with its sequence lengths, labels) and return a
``[batch]`` ``Tensor`` for ``rf.get_run_ctx().mark_as_loss``. There is one pool per distinct ``sprint_opts``, as
RETURNN keeps one (``ReturnnInstancePool.get_global_instance``: ``sprintConfigStr`` read as RETURNN reads it,
RETURNN's child module rewritten to this package's), closed when the process exits. See docs/returnn.md.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any, Optional

try:
    import torch
    from returnn.tensor import Dim, Tensor
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('sprint_control.returnn_torch needs RETURNN, PyTorch and dm-tree: pip install '
                      f'"sprint_control[returnn-torch]" ({exc})') from exc

from .returnn import ReturnnInstancePool
from .torch import AutomataCache, automata_for_batch
from .torch import fullsum_loss as _torch_fullsum_loss
from .torch import sprint_loss as _torch_sprint_loss

__all__ = ["INPUT_TYPES", "close_pools", "fullsum_loss", "get_global_pool", "sprint_loss"]

#: what the ``input`` tensor of :func:`fullsum_loss` holds
INPUT_TYPES = ("logits", "log_prob")

_lock = threading.Lock()
_caches: dict[int, tuple[Any, AutomataCache]] = {}
_atexit_registered = False


def get_global_pool(sprint_opts: Mapping[str, Any]) -> ReturnnInstancePool:
    """The pool of ``sprint_opts`` (RETURNN's keys: ``sprintExecPath``, ``sprintConfigStr``, ``numInstances``,
    ``minPythonControlVersion``, ``usePythonSegmentOrder``, ...): one per distinct options, started on first use,
    closed at exit."""
    global _atexit_registered
    if not isinstance(sprint_opts, Mapping):
        raise TypeError(f"sprint_opts must be a dict of RETURNN's Sprint options, got {type(sprint_opts).__name__}")
    with _lock:
        if not _atexit_registered:
            atexit.register(close_pools)
            _atexit_registered = True
    return ReturnnInstancePool.get_global_instance(sprint_opts)


def close_pools() -> None:
    """Closes every pool handed out (their children end) and forgets the automata caches."""
    with _lock:
        _caches.clear()
    ReturnnInstancePool.close_global_instances()


def _batch_dim(x: Tensor) -> Dim:
    found = [d for d in x.dims if d.is_batch_dim()]
    if len(found) != 1:
        raise ValueError(f"{x.name}: expected one batch dim among {x.dims}, found {len(found)}")
    return found[0]


def _dims(x: Tensor, time_dim: Optional[Dim], feature_dim: Optional[Dim]) -> tuple[Dim, Dim, Dim]:
    """(time, batch, feature) dims of ``x``: the given ones, else the batch dim, ``x.feature_dim`` and the one
    dim left."""
    batch = _batch_dim(x)
    feature = feature_dim if feature_dim is not None else x.feature_dim
    if feature is None:
        raise ValueError(f"{x.name}: no feature dim; pass feature_dim= (the label dim)")
    if time_dim is None:
        rest = [d for d in x.dims if d != batch and d != feature]
        if len(rest) != 1:
            raise ValueError(f"{x.name}: cannot tell the time dim among {rest}; pass time_dim=")
        time_dim = rest[0]
    if set(x.dims) != {batch, time_dim, feature} or len(x.dims) != 3:
        raise ValueError(f"{x.name}: expected dims (batch, {time_dim}, {feature}) in any order, got {x.dims}")
    return time_dim, batch, feature


def _raw_inputs(x: Tensor, time_dim: Optional[Dim], feature_dim: Optional[Dim]
                ) -> tuple[torch.Tensor, torch.Tensor, Dim]:
    """``x`` as a raw (time, batch, feature) torch tensor (autograd kept) and its sequence lengths (batch,)."""
    time_dim, batch, feature = _dims(x, time_dim, feature_dim)
    raw = x.copy_transpose([time_dim, batch, feature]).raw_tensor
    if not isinstance(raw, torch.Tensor):
        raise TypeError(f"{x.name}: expected a torch tensor (RETURNN's PyTorch engine), got {type(raw).__name__}")
    if time_dim.dyn_size_ext is not None and time_dim.dyn_size_ext.raw_tensor is not None:
        sizes = time_dim.dyn_size_ext
        if sizes.dims != (batch,):
            raise ValueError(f"{time_dim}: sequence lengths with dims {sizes.dims}; expected ({batch},)")
        lens = torch.as_tensor(sizes.raw_tensor).to("cpu")
    else:  # a static time dim: every sequence has all frames
        lens = torch.full((raw.shape[1],), raw.shape[0], dtype=torch.int64)
    return raw, lens, batch


def _tags(seq_tags: Any) -> Any:
    """Segment names from RETURNN's ``extern_data["seq_tag"]`` (a string Tensor), an array or a list."""
    if isinstance(seq_tags, Tensor):
        seq_tags = seq_tags.raw_tensor
    if seq_tags is None:
        raise ValueError('seq_tags are required (Sprint looks segments up by name): pass extern_data["seq_tag"]')
    return list(seq_tags.tolist()) if hasattr(seq_tags, "tolist") else seq_tags


def _loss_tensor(name: str, raw: torch.Tensor, batch: Dim) -> Tensor:
    return Tensor(name, dims=[batch], dtype=str(raw.dtype).replace("torch.", ""), raw_tensor=raw)


def sprint_loss(logits: Tensor, *, sprint_opts: Mapping[str, Any], seq_tags: Any, time_dim: Optional[Dim] = None,
                feature_dim: Optional[Dim] = None, name: str = "sprint_loss") -> Tensor:
    """RASR's loss per sequence on the pool of ``sprint_opts`` (what TF's ``loss="sprint"`` computes).

    :param logits: pre-softmax activations with a batch, a time and a label dim (any order); RASR gets
        ``log_softmax`` over the label dim, and its error signal (the derivative with respect to the activations)
        is the gradient of ``logits``.
    :param sprint_opts: RETURNN's Sprint options; the same dict gives the same pool.
    :param seq_tags: the segment names (``extern_data["seq_tag"]``, an array or a list), one per sequence.
    :param time_dim: the time dim (default: the dim that is neither batch nor ``feature_dim``); its sequence
        lengths bound each sequence.
    :param feature_dim: the label dim (default ``logits.feature_dim``).
    :return: ``[batch]`` loss, ``inf`` where RASR skipped a segment (zero gradient there).
    """
    raw, lens, batch = _raw_inputs(logits, time_dim, feature_dim)
    pool = get_global_pool(sprint_opts)
    return _loss_tensor(name, _torch_sprint_loss(raw, lens, _tags(seq_tags), pool), batch)


def _cache_for(source: Any) -> AutomataCache:
    with _lock:
        entry = _caches.get(id(source))
        if entry is None or entry[0] is not source:
            entry = (source, AutomataCache(maxsize=None))
            _caches[id(source)] = entry
        return entry[1]


def fullsum_loss(input: Tensor, *, seq_tags: Any, sprint_opts: Optional[Mapping[str, Any]] = None,
                 automata: Any = None, input_type: str = "logits", tdp_scale: float = 1.0,
                 time_dim: Optional[Dim] = None, feature_dim: Optional[Dim] = None, cache: Any = True,
                 name: str = "fullsum_loss") -> Tensor:
    """Full-sum (Baum-Welch) loss over RASR's automata, per sequence (what TF's ``FastBaumWelchLoss`` computes).

    :param input: logits (``input_type="logits"``, log-softmax taken over the label dim) or log-probabilities
        (``"log_prob"``) with a batch, a time and a label dim (any order).
    :param seq_tags: the segment names, one per sequence.
    :param sprint_opts: RETURNN's Sprint options: the automata come from that pool's children.
    :param automata: instead, any automata source: a builder with librasr's API (``librasr.AllophoneStateFsaBuilder``,
        ``sprint_control.emulator.builder.AllophoneStateFsaBuilder``: no child at all) or a pool.
    :param tdp_scale: multiplies the automata's transition weights (TF's ``tdp_scale``).
    :param cache: True (default): each source keeps the automata it built, per segment, for the whole run (they
        do not change between epochs); an ``AutomataCache`` of your own; or False.
    :return: ``[batch]`` loss ``-log Z``, ``inf`` where no path fits the sequence's length.
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    if (sprint_opts is None) == (automata is None):
        raise ValueError("fullsum_loss needs exactly one source of automata: sprint_opts= (a pool of Sprint "
                         "children) or automata= (a builder with librasr's API, or a pool)")
    source = get_global_pool(sprint_opts) if sprint_opts is not None else automata
    raw, lens, batch = _raw_inputs(input, time_dim, feature_dim)
    if cache is True:
        cache = _cache_for(source)
    elif cache is False or cache is None:
        cache = None
    elif not isinstance(cache, AutomataCache):
        raise TypeError(f"cache must be True, False or an AutomataCache, got {type(cache).__name__}")
    automaton = automata_for_batch(_tags(seq_tags), source, cache=cache, device=raw.device)
    log_probs = torch.log_softmax(raw, dim=-1) if input_type == "logits" else raw
    loss = _torch_fullsum_loss(log_probs, lens, automaton, weight_scale=tdp_scale)
    return _loss_tensor(name, loss, batch)
