"""Helpers of the PyTorch bridge: sequence lengths as numpy, and gradients scaled without a fresh tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

SeqLengths = Union[torch.Tensor, np.ndarray, Sequence]


def seq_lengths_numpy(seq_lengths: SeqLengths, batch: int, max_time: int) -> np.ndarray:
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


def time_mask(lens: np.ndarray, max_time: int) -> np.ndarray:
    """(time, batch) bool: True where the frame lies beyond the sequence's length."""
    return np.arange(max_time)[:, None] >= lens[None, :]


def graph_kept() -> bool:
    """Whether the running backward keeps the graph (``retain_graph``/``create_graph``): then saved tensors
    are read again and must not change. True when PyTorch cannot tell (the probe is private API)."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    if probe is None:
        return True
    try:
        return bool(probe())
    except RuntimeError:
        return True


def scaled_gradient(ctx, saved: torch.Tensor, grad_loss: torch.Tensor, device, dtype) -> torch.Tensor:
    """``saved * grad_loss`` broadcast over a (time, batch, ...) gradient, without a fresh tensor where that
    is safe.

    ``saved`` is the per-sequence gradient kept in ``ctx`` (for unit incoming gradients). All ones (the usual
    ``loss.sum().backward()``): ``saved`` itself (converted when device or dtype differ). Otherwise the
    multiply is in place when the tensor is a fresh conversion or the graph is not kept and no earlier
    backward handed ``saved`` out (``ctx.handed_out``); else one new tensor.
    """
    grad = saved.to(device=device, dtype=dtype)
    fresh = grad is not saved and grad.data_ptr() != saved.data_ptr()
    if bool(torch.all(grad_loss == 1)):
        if not fresh:
            ctx.handed_out = True
        return grad
    scale = grad_loss.to(device=device, dtype=dtype).view((1, -1) + (1,) * (grad.dim() - 2))
    if fresh or not (getattr(ctx, "handed_out", False) or graph_kept()):
        return grad.mul_(scale)
    return grad * scale
