"""``sprint_loss``: RASR's sequence criterion, computed by a pool of Sprint children, as an autograd Function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import ProtocolError
from ..parent.batch import tag_names
from ._common import SeqLengths, scaled_gradient, seq_lengths_numpy, time_mask

__all__ = ["SprintLossFunction", "sprint_loss"]


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
    For unit incoming gradients the backward returns the saved signal itself (when device and dtype match), and
    a scaled one is computed in place unless a later backward (``retain_graph``) could read it again.
    """

    @staticmethod
    def forward(ctx, logits, seq_lengths, tags, pool, posterior_dtype):  # type: ignore[override]
        if logits.dim() != 3:
            raise ValueError(f"logits must be a (time, batch, label) tensor, got shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
        max_time, batch, num_labels = logits.shape
        tags = tag_names(tags, batch)
        lens = seq_lengths_numpy(seq_lengths, batch, max_time)

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
        beyond = time_mask(lens, max_time)
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
        # No (time, batch, label) tensor per step: the saved signal itself for unit gradients, scaled in place
        # when no later backward reads it (see scaled_gradient)
        grad = scaled_gradient(ctx, error_signal, grad_loss, ctx.device, ctx.dtype)
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
