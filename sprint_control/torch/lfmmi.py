"""Lattice-free MMI (LF-MMI, the sequence-discriminative criterion of Kaldi's chain models, k2 and PyChain)
over the full-sum kernel.

Not RASR's lattice-based MMI (which needs RASR's word lattices and runs inside RASR's trainer): here the
numerator is each sequence's own automaton (RASR's, from :func:`automata_for_batch`, or any merged automaton)
and the denominator one automaton of all label sequences (a label n-gram composed with the label topology,
:func:`sprint_control.fsa.denominator.denominator_graph`) that every sequence of the batch runs through,
without copying it per sequence (the kernel's shared mode). The loss of sequence b is

    -(log Z_num(b) - den_scale * log Z_den(b))  [+ ce_weight * CE(b)]  [/ frames(b)]

and its gradient with respect to ``log_probs`` is ``-(occupancy_num - den_scale * occupancy_den)``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import fsa as _fsa
from ..fsa.denominator import DenominatorGraph
from ._common import SeqLengths, scaled_gradient, seq_lengths_numpy
from ._layouts import LAYOUTS
from .fullsum import BACKENDS, compute_dtype, cpu_numpy, fullsum_loss

__all__ = ["DenominatorLossFunction", "lfmmi_loss", "denominator_loss"]


class DenominatorLossFunction(torch.autograd.Function):
    """``forward(log_probs, seq_lengths, graph)`` -> (batch,) ``-log Z_den`` over one shared automaton, on
    the compiled kernel (CPU memory; other devices are copied there and back). Gradient: ``-occupancy``."""

    @staticmethod
    def forward(ctx, log_probs, seq_lengths, graph, leak=0.0):  # type: ignore[override]
        ctx.device, ctx.input_dtype = log_probs.device, log_probs.dtype
        batch = log_probs.shape[1]
        x = log_probs.detach().to(device="cpu", dtype=compute_dtype(log_probs.dtype)).contiguous()
        grad = torch.empty(x.shape, dtype=x.dtype) if ctx.needs_input_grad[0] else None
        edges, weights, start_end = graph.merged()
        lens = cpu_numpy(seq_lengths)
        log_z = _fsa.fullsum(
            x.numpy(), lens, edges, weights, start_end, out=None if grad is None else grad.numpy(),
            scale=np.full(batch, -1.0), num_threads=torch.get_num_threads(), shared=True,
            layout=LAYOUTS.get(x.shape, lens, edges, weights, start_end, shared=True),
            leak=leak, leak_init=graph.initial if leak else None,
        )
        log_z = torch.from_numpy(log_z)
        ctx.save_for_backward(grad, log_z)
        return (-log_z).to(device=log_probs.device, dtype=log_probs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):  # type: ignore[override]
        grad, log_z = ctx.saved_tensors
        if grad is None:
            return None, None, None, None
        scale = torch.where(torch.isfinite(log_z), grad_loss.detach().to("cpu", torch.float64), 1.0)
        return scaled_gradient(ctx, grad, scale.to(grad.dtype), ctx.device, ctx.input_dtype), None, None, None


def _replicated(graph: DenominatorGraph, batch: int, device) -> tuple:
    """The graph copied once per sequence in the merged layout: only for the torch ops path (other devices)."""
    edges, weights, _ = graph.merged()
    n = graph.num_states
    rep = np.tile(edges, (1, batch))
    offsets = np.repeat(np.arange(batch, dtype=np.int64) * n, edges.shape[1])
    rep[0] += offsets
    rep[1] += offsets
    rep[3] = np.repeat(np.arange(batch, dtype=np.int64), edges.shape[1])
    start_end = np.stack([np.arange(batch) * n + graph.start, np.arange(batch) * n + graph.final])
    return (torch.from_numpy(rep).to(device), torch.from_numpy(np.tile(weights, batch)).to(device),
            torch.from_numpy(start_end).to(device))


def _check_denominator(graph: Any, log_probs: torch.Tensor) -> None:
    if not isinstance(graph, DenominatorGraph):
        raise ValueError(f"the denominator must be a DenominatorGraph (fsa.denominator.denominator_graph), got "
                         f"{type(graph).__name__}")
    if log_probs.dim() == 3 and graph.num_labels > log_probs.shape[2]:
        raise ValueError(f"the denominator emits {graph.num_labels} labels, log_probs has {log_probs.shape[2]}")


def denominator_loss(log_probs: torch.Tensor, seq_lengths: SeqLengths, graph: DenominatorGraph, *,
                     leaky_hmm: float = 0.0, backend: str = "auto") -> torch.Tensor:
    """(batch,) ``-log Z_den``: every sequence through the one ``graph``. ``auto``: the kernel's shared mode
    for CPU tensors, the torch ops (with the graph copied per sequence) elsewhere. ``leaky_hmm`` > 0 (the
    kernel's leak, entry distribution ``graph.initial``) always runs on the kernel (device tensors are copied
    to the CPU and back): the ops path has no leak."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    _check_denominator(graph, log_probs)
    max_time, batch, num_labels = log_probs.shape
    lens = torch.as_tensor(seq_lengths_numpy(seq_lengths, batch, max_time))
    if leaky_hmm or backend == "kernel" or (backend == "auto" and log_probs.device.type == "cpu"):
        if not torch.is_grad_enabled():
            log_probs = log_probs.detach()
        return DenominatorLossFunction.apply(log_probs, lens, graph, float(leaky_hmm))
    return fullsum_loss(log_probs, lens, *_replicated(graph, batch, log_probs.device), backend="ops")


def _numerator(numerator: Any) -> tuple:
    if isinstance(numerator, (tuple, list)) and len(numerator) == 3:
        return tuple(numerator)
    if all(hasattr(numerator, k) for k in ("edges", "weights", "start_end_states")):
        return numerator.edges, numerator.weights, numerator.start_end_states
    raise ValueError("the numerator must be an Automaton (automata_for_batch) or a tuple (edges, weights, "
                     f"start_end_states), got {type(numerator).__name__}")


def lfmmi_loss(
    log_probs: torch.Tensor,
    seq_lengths: SeqLengths,
    numerator: Any,
    denominator: DenominatorGraph,
    *,
    den_scale: float = 1.0,
    leaky_hmm: float = 1e-5,
    ce_weight: float = 0.0,
    ce_log_probs: Optional[torch.Tensor] = None,
    normalize: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Lattice-free MMI loss per sequence (see the module): ``-(log Z_num - den_scale * log Z_den)``.

    :param log_probs: (time, batch, label) network scores (log-softmax outputs or unnormalised
        pseudo-log-likelihoods, as in Kaldi's chain models).
    :param numerator: the batch's automata (an ``Automaton`` from ``automata_for_batch`` or ``(edges, weights,
        start_end_states)`` in the merged layout).
    :param denominator: a :class:`~sprint_control.fsa.denominator.DenominatorGraph`, shared by the batch.
    :param den_scale: the denominator's factor (1: MMI).
    :param leaky_hmm: the denominator's leaky-HMM coefficient (PyChain's 1e-5 by default; Kaldi's chain
        recipes use 0.1): before each frame every state also gets this share of the total, spread by
        ``denominator.initial``, so no frame can make the denominator unreachable. > 0 runs the denominator
        on the compiled kernel whatever the device; 0 keeps device tensors on the torch ops.
    :param ce_weight: adds ``ce_weight * -sum_t,l occupancy_num(t, l) * ce_log_probs(t, l)``, the
        cross-entropy regulariser against the numerator's occupancies (fixed targets; PyChain's examples use
        0.2 with a separate output layer, ``ce_log_probs``; default ``log_probs``). Costs one more numerator pass.
    :param normalize: divide each sequence's loss by its number of frames.
    :param backend: as in ``fullsum_loss``.
    :return: (batch,) loss; ``inf`` where the numerator has no path (zero gradient there), NaN for non-finite
        scores (the kernel's rule).
    """
    if log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a floating (time, batch, label) tensor, got {tuple(log_probs.shape)}")
    _check_denominator(denominator, log_probs)
    max_time, batch, _ = log_probs.shape
    lens = seq_lengths_numpy(seq_lengths, batch, max_time)
    edges, weights, start_end = _numerator(numerator)
    num = fullsum_loss(log_probs, lens, edges, weights, start_end, backend=backend)
    den = denominator_loss(log_probs, lens, denominator, leaky_hmm=leaky_hmm, backend=backend)
    # a sequence whose numerator has no path (or breaks the non-finite rule) gets no denominator gradient either
    den = torch.where(torch.isfinite(num), den, torch.zeros((), dtype=den.dtype, device=den.device))
    loss = num - float(den_scale) * den
    if ce_weight:
        target = ce_log_probs if ce_log_probs is not None else log_probs
        if target.shape != log_probs.shape:
            raise ValueError(f"ce_log_probs must have the shape of log_probs {tuple(log_probs.shape)}, got "
                             f"{tuple(target.shape)}")
        with torch.enable_grad():
            x = log_probs.detach().requires_grad_()
            (occ,) = torch.autograd.grad(-fullsum_loss(x, lens, edges, weights, start_end, backend=backend).sum(),
                                         x)
        loss = loss + float(ce_weight) * -(occ.to(target.dtype) * target).sum(dim=(0, 2))
    if normalize:
        loss = loss / torch.as_tensor(np.maximum(lens, 1), dtype=loss.dtype, device=loss.device)
    return loss
