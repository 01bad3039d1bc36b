"""Full-sum (Baum-Welch) loss over RASR's merged automata, as an autograd Function.

CPU tensors go to the compiled kernel of :mod:`sprint_control.fsa` (the one the emulator's criteria
use): one call per batch, sequences in parallel on ``torch.get_num_threads()`` threads without the GIL, reading
the input tensor's memory and writing minus the occupancies straight into the gradient tensor. It runs forward
and backward at once when a gradient is needed (RETURNN's FastBaumWelch does the same), so ``backward`` only
scales. CUDA tensors take the Triton kernels of :mod:`.triton_fullsum` where ``triton`` imports, other devices
the per-frame torch ops of :mod:`._ops`. The regrouped automaton
(``fsa.batch_layout``) is kept in a small cache found by content (:mod:`._layouts`), so a batch seen again
is not regrouped again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import fsa as _fsa
from . import _ops
from . import triton_fullsum as _triton
from ._common import SeqLengths, scaled_gradient, seq_lengths_numpy
from ._layouts import LAYOUTS
from .automata import AutomataCache, automata_for_batch
from .weighted_fsa import automaton_arrays

__all__ = ["BACKENDS", "FullSumLossFunction", "fullsum_loss", "fullsum_loss_for_batch"]

#: ``auto``: the compiled kernel for CPU tensors, the Triton kernel for CUDA tensors where ``triton`` imports
#: (else the torch ops); ``kernel``: always the kernel (device tensors are copied to the CPU and back);
#: ``ops``: always the torch ops (any device, CPU included); ``triton``: the Triton kernel (CUDA, or CPU
#: tensors under ``TRITON_INTERPRET=1``).
BACKENDS = ("auto", "kernel", "ops", "triton")


def _path(backend: str, device: torch.device, weights_grad: bool) -> str:
    """Which path computes the loss: ``kernel``, ``ops`` or ``triton`` (trainable weights: not Triton)."""
    if backend == "auto":
        if device.type == "cpu":
            return "kernel"
        return "triton" if not weights_grad and _triton.available(device) else "ops"
    if backend == "triton":
        if weights_grad:
            raise ValueError("backend 'triton' gives no weight gradient: use 'ops' or 'kernel' for trainable weights")
        if not _triton.available(device):
            raise ValueError(f"backend 'triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on the CPU), "
                             f"got a {device.type} tensor")
    return backend


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision cannot hold log-sums over long sequences: it is computed in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def cpu_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's memory as numpy (no copy when it is already a contiguous CPU tensor)."""
    return t.detach().to("cpu").contiguous().numpy()


class FullSumLossFunction(torch.autograd.Function):
    """``forward(log_probs, seq_lengths, edges, weights, start_end_states[, backend])`` -> (batch,) ``-log Z``.

    Gradients: ``-occupancy * grad`` for ``log_probs`` and the edge occupancies summed over frames for
    ``weights`` (a cost), zero for sequences whose final state is unreachable (loss ``inf``).
    """

    @staticmethod
    def forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states, backend="auto"):  # type: ignore[override]
        ctx.device, ctx.input_dtype = log_probs.device, log_probs.dtype
        ctx.weights_dtype, ctx.weights_device = weights.dtype, weights.device
        ctx.path = _path(backend, log_probs.device, ctx.needs_input_grad[3])
        ctx.kernel = ctx.path == "kernel"
        if ctx.path == "ops":
            return _ops.forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states)
        if ctx.path == "triton":
            return _triton_forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states)
        max_time, batch, _ = log_probs.shape
        dtype = compute_dtype(log_probs.dtype)
        x = log_probs.detach().to(device="cpu", dtype=dtype).contiguous()
        need_lp, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        grad = torch.empty(x.shape, dtype=dtype) if need_lp else None
        edge_out = np.empty(edges.shape[1]) if need_w else None
        args = (cpu_numpy(seq_lengths), cpu_numpy(edges), cpu_numpy(weights), cpu_numpy(start_end_states))
        log_z = _fsa.fullsum(
            x.numpy(),
            *args,
            out=None if grad is None else grad.numpy(),
            scale=np.full(batch, -1.0),
            edge_out=edge_out,
            num_threads=torch.get_num_threads(),
            layout=LAYOUTS.get(x.shape, *args),
        )
        log_z = torch.from_numpy(log_z)
        edge_grad = None if edge_out is None else torch.from_numpy(edge_out)
        ctx.save_for_backward(grad, log_z, edge_grad, edges.detach().to("cpu")[3] if need_w else None)
        return (-log_z).to(device=log_probs.device, dtype=log_probs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):  # type: ignore[override]
        if ctx.path == "ops":
            return _ops.backward(ctx, grad_loss) + (None,)
        if ctx.path == "triton":
            occ, log_z = ctx.saved_tensors
            scale = torch.where(torch.isfinite(log_z), grad_loss.detach().to(occ.device, occ.dtype), 0.0)
            grad_lp = None if occ is None else (occ * -scale[None, :, None]).to(ctx.input_dtype)
            return grad_lp, None, None, None, None, None
        grad, log_z, edge_grad, seq = ctx.saved_tensors
        # unreachable sequences have zero rows: any finite factor will do there (1 keeps the unit fast path)
        scale = torch.where(torch.isfinite(log_z), grad_loss.detach().to("cpu", torch.float64), 1.0)
        grad_lp = grad_w = None
        if grad is not None:
            grad_lp = scaled_gradient(ctx, grad, scale.to(grad.dtype), ctx.device, ctx.input_dtype)
        if edge_grad is not None:
            # the kernel wrote -occupancy; a weight is a cost: d(-log Z)/d weight = +occupancy
            grad_w = (-edge_grad * scale[seq]).to(device=ctx.weights_device, dtype=ctx.weights_dtype)
        return grad_lp, None, None, grad_w, None, None


def _triton_forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states):
    """The Triton path: the layout regrouped on the host (cached), both passes on the device; sequences
    under the non-finite rule get -inf scores there (zero occupancy) and loss NaN."""
    lens = seq_lengths.to(log_probs.device)
    bad = _ops.non_finite_sequences(log_probs, lens, edges[3].to(log_probs.device, torch.int64),
                                    weights.to(log_probs.device))
    lens_np = cpu_numpy(seq_lengths).astype(np.int64)
    layout = LAYOUTS.get(log_probs.shape, lens_np, cpu_numpy(edges), cpu_numpy(weights), cpu_numpy(start_end_states))
    x = torch.where(bad[None, :, None], float("-inf"), log_probs.detach().to(torch.float32))
    log_z, occ = _triton.fullsum(x, layout, need_grad=ctx.needs_input_grad[0])
    ctx.save_for_backward(occ, log_z)
    return torch.where(bad, float("nan"), -log_z).to(log_probs.dtype)


def fullsum_loss(
    log_probs: torch.Tensor,
    seq_lengths: SeqLengths,
    edges: Any,
    weights: Optional[torch.Tensor] = None,
    start_end_states: Optional[torch.Tensor] = None,
    *,
    weight_scale: float = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Full-sum (Baum-Welch) loss ``-log sum over paths`` of each sequence through its automaton.

    Each frame moves along exactly one edge, scoring ``log_probs[t, seq, emission] - weight_scale * weight``;
    a path starts in the sequence's start state at frame 0 and must be in its final state after its last frame.

    :param log_probs: (time, batch, label) log-probabilities, e.g. ``log_softmax(logits, -1)``; any device.
    :param seq_lengths: (batch,) frames per sequence.
    :param edges: (4, E) int: from-state, to-state, emission index, sequence index (RASR's merged layout); or
        the whole automaton, ``weights`` and ``start_end_states`` left out: a ``WeightedFsa`` (i6_models' or
        ``sprint_control.torch.WeightedFsa``), an :class:`Automaton` or an ``(edges, weights, start_end_states)``
        tuple (see ``weighted_fsa.automaton_arrays``).
    :param weights: (E,) edge weights in -log space (RASR's transition costs).
    :param start_end_states: (2, batch) start and final state of each sequence; sequence ``b`` owns the states
        from its start to its final state, and its edges stay among them.
    :param weight_scale: multiplies the weights (RETURNN calls it the tdp scale).
    :param backend: one of :data:`BACKENDS` (``auto``: the compiled kernel on CPU, the Triton kernel on CUDA
        where ``triton`` imports and the weights need no gradient, torch ops elsewhere).
    :return: (batch,) loss, ``inf`` where the final state cannot be reached (zero gradient there), NaN for a
        NaN or ``+inf`` score within the sequence's length or a NaN or ``-inf`` weight (zero gradient). The
        gradient with respect to ``log_probs`` is minus the state occupancies; ``weights`` that require a
        gradient (trainable transition costs) get their edge occupancies summed over time.
    """
    if log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(f"log_probs must be a floating (time, batch, label) tensor, got {tuple(log_probs.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    edges, weights, start_end_states = automaton_arrays(edges, weights, start_end_states, what="fullsum_loss")
    max_time, batch, _ = log_probs.shape
    lens = torch.as_tensor(seq_lengths_numpy(seq_lengths, batch, max_time))
    edges = torch.as_tensor(edges)
    start_end_states = torch.as_tensor(start_end_states)
    weights = torch.as_tensor(weights)
    if edges.dim() != 2 or edges.shape[0] != 4:
        raise ValueError(f"edges must have shape (4, num_edges), got {tuple(edges.shape)}")
    if weights.shape != (edges.shape[1],):
        raise ValueError(f"weights must have shape ({edges.shape[1]},), got {tuple(weights.shape)}")
    if tuple(start_end_states.shape) != (2, batch):
        raise ValueError(f"start_end_states must have shape (2, {batch}), got {tuple(start_end_states.shape)}")
    if weight_scale != 1.0:
        weights = weights * weight_scale
    if not torch.is_grad_enabled():  # the kernel then runs its forward pass only
        log_probs, weights = log_probs.detach(), weights.detach()
    return FullSumLossFunction.apply(log_probs, lens, edges, weights, start_end_states, backend)


def fullsum_loss_for_batch(
    logits: torch.Tensor,
    seq_lengths: SeqLengths,
    tags: Sequence[str],
    pool: Any,
    *,
    cache: Optional[AutomataCache] = None,
    weight_scale: float = 1.0,
) -> torch.Tensor:
    """Full-sum loss of ``log_softmax(logits)`` over RASR's automata for ``tags`` (fetched through ``pool``: a pool
    of Sprint children, or a builder with librasr's ``build_by_segment_name``, see ``automata_for_batch``)."""
    automaton = automata_for_batch(tags, pool, cache=cache, device=logits.device)
    return fullsum_loss(
        torch.log_softmax(logits, dim=-1),
        seq_lengths,
        automaton.edges,
        automaton.weights,
        automaton.start_end_states,
        weight_scale=weight_scale,
    )
