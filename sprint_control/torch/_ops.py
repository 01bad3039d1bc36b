"""The full-sum in torch ops, for tensors where the compiled kernel does not run (CUDA): exact, any device.

The automaton is regrouped once per call (``fsa.batch_layout`` on the CPU, which also checks it): every state
gets a row of ``W`` slots, one per edge into it (forward) or out of it (backward), padded with an edge of score
``-inf``, and a last "stay" slot that points at the state itself and scores 0 on the frames beyond its
sequence's length (``-inf`` before), so a finished sequence keeps its values without a mask per frame. The slot
scores of all frames, (T, S, W), are gathered before the loop. Per frame that leaves three ops writing into
preallocated memory: ``index_select`` of the previous row into a (S * W,) buffer, an in-place add of the
frame's slot scores, and ``logsumexp`` over the slots into the next row of the (T + 1, S) table. The edge
occupancies and both gradients are then a handful of (T, E) ops over the stored forward and backward tables.
Non-finite input follows the kernel's rule (NaN loss, zero gradient; see ``sprint_control.fsa._fsa_py``).
"""

from __future__ import annotations

import numpy as np
import torch

from ._layouts import LAYOUTS

__all__ = ["forward", "backward", "non_finite_sequences"]


def _cpu(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def _slots(ptr: np.ndarray, other: np.ndarray, eid: np.ndarray, num_states: int, num_edges: int):
    """``(state, edge)`` of every slot, (S * W,) each, and W: per state its grouped edges (``ptr``), padded
    with the state itself and the -inf edge ``num_edges``, and a last stay slot (the state, edge ``E + 1``)."""
    deg = np.diff(ptr)
    width = int(deg.max()) + 1 if num_states else 1
    states = np.repeat(np.arange(num_states, dtype=np.int64)[:, None], width, axis=1)
    slot_edges = np.full((num_states, width), num_edges, dtype=np.int64)
    slot_edges[:, -1] = num_edges + 1
    rows = np.repeat(np.arange(num_states), deg)
    pos = np.arange(len(eid)) - np.repeat(ptr[:-1], deg)
    states[rows, pos] = other
    slot_edges[rows, pos] = eid
    return states.reshape(-1), slot_edges.reshape(-1), width


def _slot_scores(scores_ext: torch.Tensor, slot_edges: torch.Tensor, stay: torch.Tensor, width: int):
    """(T, S * W) slot scores: the edges' frame scores, ``stay`` (T, S) in the last slot of every state."""
    max_time, num_states = stay.shape
    out = scores_ext.index_select(1, slot_edges).view(max_time, num_states, width)
    out[:, :, -1] = stay
    return out.view(max_time, num_states * width)


def _recursion(table: torch.Tensor, slot_states, slot_scores, width: int, frames) -> None:
    """Fills ``table`` rows in ``frames`` order: row ``nxt`` = logsumexp over slots of row ``cur`` + scores."""
    num_states = table.shape[1]
    buf = torch.empty(num_states * width, dtype=table.dtype, device=table.device)
    grouped = buf.view(num_states, width)
    rows, scores = table.unbind(0), slot_scores.unbind(0)  # views made once, not per frame
    for cur, nxt, t in frames:
        torch.index_select(rows[cur], 0, slot_states, out=buf)
        buf.add_(scores[t])
        torch.logsumexp(grouped, 1, out=rows[nxt])


def non_finite_sequences(log_probs: torch.Tensor, lens: torch.Tensor, seq: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """(B,) bool, the kernel's non-finite rule in torch ops: a NaN or +inf score within a sequence's length
    (any label), or a NaN or -inf weight on one of its edges."""
    max_time, batch, _ = log_probs.shape
    frames = torch.arange(max_time, device=log_probs.device)
    in_len = frames[:, None] < lens[None, :]
    bad = ((~(log_probs.detach() < float("inf"))).any(-1) & in_len).any(0)
    bad_w = torch.zeros(batch, dtype=torch.int64, device=log_probs.device).index_add_(
        0, seq, (~(weights.detach() > float("-inf"))).long())
    return bad | (bad_w > 0)


def forward(ctx, log_probs, seq_lengths, edges, weights, start_end_states):
    max_time, batch, num_labels = log_probs.shape
    device = log_probs.device
    dtype = log_probs.dtype if log_probs.dtype in (torch.float32, torch.float64) else torch.float32
    lens_np = _cpu(seq_lengths).astype(np.int64)
    lay = LAYOUTS.get(log_probs.shape, lens_np, _cpu(edges), _cpu(weights), _cpu(start_end_states))
    num_states = int(lay.in_ptr.shape[0]) - 1
    num_edges = int(lay.in_eid.shape[0])
    state_seq = np.full(num_states, -1, dtype=np.int64)
    for b in range(batch):
        state_seq[lay.lo[b] : lay.lo[b] + lay.size[b]] = b
    state_len = np.where(state_seq >= 0, lens_np[np.maximum(state_seq, 0)], 0)
    lo_of_edge = lay.lo[state_seq[np.repeat(np.arange(num_states), np.diff(lay.in_ptr))]] if num_edges else 0
    in_states, in_edges, in_width = _slots(lay.in_ptr, lay.in_src + lo_of_edge, lay.in_eid, num_states, num_edges)

    e = edges.to(device=device, dtype=torch.int64)
    seq = e[3]
    lens = torch.as_tensor(lens_np, device=device)
    frames = torch.arange(max_time, device=device)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=device)
    # frame scores of each edge, -inf beyond its sequence's length (so no occupancy there): (T, E + 2),
    # the last two columns being the padding (-inf) and stay slots
    scores = log_probs.detach().to(dtype).reshape(max_time, batch * num_labels).index_select(1, seq * num_labels + e[2])
    # the non-finite rule of sprint_control.fsa: a NaN or +inf score within a sequence's length, or a NaN or
    # -inf weight on one of its edges, makes its loss NaN and its gradient zero (its edges score -inf here)
    w = weights.detach().to(device, dtype)
    bad = non_finite_sequences(log_probs, lens, seq, w)
    keep = (frames[:, None] < lens[seq][None, :]) & ~bad[seq][None, :]
    scores = torch.where(keep, scores - w, neg_inf)
    scores_ext = torch.cat([scores, scores.new_full((max_time, 2), float("-inf"))], dim=1)
    state_len_t = torch.as_tensor(state_len, device=device)
    stay = torch.where(frames[:, None] >= state_len_t[None, :], torch.zeros((), dtype=dtype, device=device), neg_inf)

    starts = torch.as_tensor(lay.lo + lay.start, device=device)
    finals = torch.as_tensor(lay.lo + lay.final, device=device)
    alphas = torch.full((max_time + 1, num_states), float("-inf"), dtype=dtype, device=device)
    alphas[0, starts] = 0.0
    slot_scores = _slot_scores(scores_ext, torch.as_tensor(in_edges, device=device), stay, in_width)
    _recursion(alphas, torch.as_tensor(in_states, device=device), slot_scores, in_width,
               ((t, t + 1, t) for t in range(max_time)))
    del slot_scores
    log_z = alphas[max_time, finals] if batch else alphas.new_zeros(0)

    out_lo = lay.lo[state_seq[np.repeat(np.arange(num_states), np.diff(lay.out_ptr))]] if num_edges else 0
    ctx.out_slots = _slots(lay.out_ptr, lay.out_dst + out_lo, lay.out_eid, num_states, num_edges)
    ctx.shape = (max_time, batch, num_labels)
    ctx.save_for_backward(scores_ext, stay, alphas, e, finals, log_z)
    return torch.where(bad, float("nan"), -log_z).to(log_probs.dtype)


def backward(ctx, grad_loss):
    scores_ext, stay, alphas, e, finals, log_z = ctx.saved_tensors
    max_time, batch, num_labels = ctx.shape
    device, dtype = alphas.device, alphas.dtype
    src, dst, emission, seq = e
    out_states, out_edges, out_width = ctx.out_slots
    betas = torch.full_like(alphas, float("-inf"))
    if batch:
        betas[max_time, finals] = 0.0
    slot_scores = _slot_scores(scores_ext, torch.as_tensor(out_edges, device=device), stay, out_width)
    _recursion(betas, torch.as_tensor(out_states, device=device), slot_scores, out_width,
               ((t + 1, t, t) for t in range(max_time - 1, -1, -1)))
    del slot_scores
    # occupancy of each edge at each frame: alpha_t(from) + score + beta_{t+1}(to) - log Z; sequences whose
    # final state is unreachable have no finite term and get no gradient
    reachable = torch.isfinite(log_z)
    zero = torch.zeros((), dtype=dtype, device=device)
    log_z = torch.where(reachable, log_z, zero)
    scale = torch.where(reachable, grad_loss.to(device=device, dtype=dtype), zero)[seq]
    xi = alphas[:-1].index_select(1, src) + scores_ext[:, :-2] + betas[1:].index_select(1, dst) - log_z[seq]
    xi = xi.exp_()
    grad_lp = torch.zeros((max_time, batch * num_labels), dtype=dtype, device=device)
    grad_lp.index_add_(1, seq * num_labels + emission, xi * -scale)
    grad_w = None
    if ctx.needs_input_grad[3]:
        grad_w = (xi.sum(0) * scale).to(device=ctx.weights_device, dtype=ctx.weights_dtype)
    grad_lp = grad_lp.view(max_time, batch, num_labels).to(ctx.input_dtype)
    return grad_lp, None, None, grad_w, None
