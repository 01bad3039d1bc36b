"""Full-sum and Viterbi as Triton kernels, for CUDA tensors: one program per sequence, the frame loop inside.

The automaton layout is the CPU kernel's (``fsa.batch_layout``), turned into per-sequence slot tables:
state ``s`` of sequence ``b`` has ``W`` slots, one per edge into it (forward) or out of it (backward),
holding the other state, the emission column and the weight (padding: source ``-1``). A program keeps its
sequence's tables in registers, the alpha rows of all its frames in a scratch tensor (read back by the
backward pass) and, per frame, gathers the previous row, adds the frame's scores and takes a log-sum-exp
over the slots (float32, log space; a barrier orders the row's store before the next frame's gather). The
backward pass writes each edge's occupancy into the (T, B, V) gradient with an atomic add (edges of one
frame may share a label). Viterbi keeps a back-pointer per frame and state and traces back in the program.

``triton`` is imported only here, on first use: on CUDA tensors, or on CPU tensors where
``TRITON_INTERPRET=1`` runs Triton's interpreter (how the tests check it against the CPU kernel). Not
measured on a GPU here.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch

__all__ = ["available", "fullsum", "viterbi", "slot_tables"]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run for tensors on ``device`` (CUDA, or the interpreter on the CPU)."""
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def slot_tables(layout, num_labels: int, direction: str):
    """(B, S, W) int32 other-state (-1: padding), int32 column (label), float32 weight per slot, and S, W
    (powers of two): the edges into (``"in"``) or out of (``"out"``) each state, in the layout's order."""
    ptr = layout.in_ptr if direction == "in" else layout.out_ptr
    other = layout.in_src if direction == "in" else layout.out_dst
    col = layout.in_col if direction == "in" else layout.out_col
    w = layout.in_w if direction == "in" else layout.out_w
    batch = layout.lens.shape[0]
    deg = np.diff(ptr)
    width = _pow2(max(int(deg.max()) if deg.size else 1, 1))
    states = _pow2(max(int(layout.size.max()) if batch else 1, 1))
    tab_other = np.full((batch, states, width), -1, dtype=np.int32)
    tab_col = np.zeros((batch, states, width), dtype=np.int32)
    tab_w = np.zeros((batch, states, width), dtype=np.float32)
    global_state = np.repeat(np.arange(ptr.shape[0] - 1), deg)
    seq_of_state = np.full(ptr.shape[0] - 1, -1, dtype=np.int64)
    for b in range(batch):
        seq_of_state[layout.lo[b]: layout.lo[b] + layout.size[b]] = b
    seq = seq_of_state[global_state]
    local = global_state - layout.lo[seq]
    pos = np.arange(ptr[-1]) - ptr[:-1][global_state]
    tab_other[seq, local, pos] = other
    tab_col[seq, local, pos] = col - seq * num_labels
    tab_w[seq, local, pos] = w
    return tab_other, tab_col, tab_w, states, width


@lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """The jitted kernels (built on first use; ``interpret`` keys the interpreter's own copy)."""
    import triton
    import triton.language as tl

    @triton.jit
    def forward_kernel(lp, lens, start, final, src, col, w, alpha, log_z, T, B, V,
                       S: tl.constexpr, W: tl.constexpr):
        b = tl.program_id(0)
        t_b = tl.load(lens + b)
        rows = tl.arange(0, S)
        slots = rows[:, None] * W + tl.arange(0, W)[None, :]
        base = b * S * W
        s_src = tl.load(src + base + slots)
        s_col = tl.load(col + base + slots)
        s_w = tl.load(w + base + slots)
        valid = s_src >= 0
        a_base = alpha + b * (T + 1) * S
        first = tl.where(rows == tl.load(start + b), 0.0, float("-inf"))
        tl.store(a_base + rows, first)
        tl.debug_barrier()
        for t in range(0, t_b):
            prev = tl.load(a_base + t * S + tl.where(valid, s_src, 0), mask=valid, other=float("-inf"))
            sc = tl.load(lp + t * B * V + b * V + s_col, mask=valid, other=float("-inf"))
            v = prev + sc - s_w
            m = tl.max(v, axis=1)
            m_safe = tl.where(m == float("-inf"), 0.0, m)
            total = tl.sum(tl.exp(v - m_safe[:, None]), axis=1)
            new = tl.where(m == float("-inf"), float("-inf"), m_safe + tl.log(total))
            tl.store(a_base + (t + 1) * S + rows, new)
            tl.debug_barrier()
        tl.store(log_z + b, tl.load(a_base + t_b * S + tl.load(final + b)))

    @triton.jit
    def backward_kernel(lp, lens, final, dst, col, w, alpha, beta, log_z, grad, T, B, V,
                        S: tl.constexpr, W: tl.constexpr):
        b = tl.program_id(0)
        t_b = tl.load(lens + b)
        z = tl.load(log_z + b)
        rows = tl.arange(0, S)
        slots = rows[:, None] * W + tl.arange(0, W)[None, :]
        base = b * S * W
        s_dst = tl.load(dst + base + slots)
        s_col = tl.load(col + base + slots)
        s_w = tl.load(w + base + slots)
        valid = s_dst >= 0
        a_base = alpha + b * (T + 1) * S
        b_base = beta + b * 2 * S
        last = tl.where(rows == tl.load(final + b), 0.0, float("-inf"))
        tl.store(b_base + (t_b % 2) * S + rows, last)
        tl.debug_barrier()
        for i in range(0, t_b):
            t = t_b - 1 - i
            nxt = tl.load(b_base + ((t + 1) % 2) * S + tl.where(valid, s_dst, 0), mask=valid,
                          other=float("-inf"))
            sc = tl.load(lp + t * B * V + b * V + s_col, mask=valid, other=float("-inf"))
            v = nxt + sc - s_w
            a = tl.load(a_base + t * S + rows)
            occ = tl.exp(a[:, None] + v - z)
            tl.atomic_add(grad + t * B * V + b * V + s_col, occ, mask=valid & (occ > 0.0))
            m = tl.max(v, axis=1)
            m_safe = tl.where(m == float("-inf"), 0.0, m)
            total = tl.sum(tl.exp(v - m_safe[:, None]), axis=1)
            new = tl.where(m == float("-inf"), float("-inf"), m_safe + tl.log(total))
            tl.store(b_base + (t % 2) * S + rows, new)
            tl.debug_barrier()

    @triton.jit
    def viterbi_kernel(lp, lens, start, final, src, col, w, eid, delta, back, score, labels, path, T, B, V,
                       S: tl.constexpr, W: tl.constexpr):
        b = tl.program_id(0)
        t_b = tl.load(lens + b)
        rows = tl.arange(0, S)
        slots = rows[:, None] * W + tl.arange(0, W)[None, :]
        base = b * S * W
        s_src = tl.load(src + base + slots)
        s_col = tl.load(col + base + slots)
        s_w = tl.load(w + base + slots)
        valid = s_src >= 0
        d_base = delta + b * 2 * S
        k_base = back + b * T * S
        tl.store(d_base + rows, tl.where(rows == tl.load(start + b), 0.0, float("-inf")))
        tl.debug_barrier()
        for t in range(0, t_b):
            prev = tl.load(d_base + (t % 2) * S + tl.where(valid, s_src, 0), mask=valid, other=float("-inf"))
            sc = tl.load(lp + t * B * V + b * V + s_col, mask=valid, other=float("-inf"))
            v = prev + sc - s_w
            best = tl.max(v, axis=1)
            arg = tl.argmax(v, axis=1)
            tl.store(d_base + ((t + 1) % 2) * S + rows, best)
            tl.store(k_base + t * S + rows, tl.where(best == float("-inf"), -1, arg))
            tl.debug_barrier()
        fin = tl.load(final + b)
        total = tl.load(d_base + (t_b % 2) * S + fin)
        tl.store(score + b, total)
        if total > float("-inf"):
            s = fin
            for i in range(0, t_b):
                t = t_b - 1 - i
                j = tl.load(k_base + t * S + s)
                tl.store(labels + t * B + b, tl.load(col + base + s * W + j).to(tl.int64))
                tl.store(path + t * B + b, tl.load(eid + base + s * W + j).to(tl.int64))
                s = tl.load(src + base + s * W + j)

    return forward_kernel, backward_kernel, viterbi_kernel


def _common(log_probs, layout):
    max_time, batch, num_labels = log_probs.shape
    dev = log_probs.device
    lp = log_probs.detach().to(torch.float32).contiguous()
    lens = torch.as_tensor(layout.lens.astype(np.int32), device=dev)
    start = torch.as_tensor(layout.start.astype(np.int32), device=dev)
    final = torch.as_tensor(layout.final.astype(np.int32), device=dev)
    return lp, lens, start, final, max_time, batch, num_labels, dev


def fullsum(log_probs: torch.Tensor, layout, need_grad: bool = True):
    """``(log_z (B,) float32, occupancy (T, B, V) float32 or None)`` on the tensors' device."""
    lp, lens, start, final, max_time, batch, num_labels, dev = _common(log_probs, layout)
    fwd, bwd, _ = _kernels(_interpreting())
    src, col, w, states, width = (x if isinstance(x, int) else torch.as_tensor(x, device=dev)
                                  for x in slot_tables(layout, num_labels, "in"))
    alpha = torch.empty((batch, max_time + 1, int(states)), dtype=torch.float32, device=dev)
    log_z = torch.full((batch,), float("-inf"), dtype=torch.float32, device=dev)
    if batch:
        fwd[(batch,)](lp, lens, start, final, src, col, w, alpha, log_z, max_time, batch, num_labels,
                      S=states, W=width)
    if not need_grad:
        return log_z, None
    dst, ocol, ow, states2, width2 = (x if isinstance(x, int) else torch.as_tensor(x, device=dev)
                                      for x in slot_tables(layout, num_labels, "out"))
    if states2 != states:  # the same states both ways; only the widths may differ
        raise RuntimeError("slot tables disagree on the state count")
    grad = torch.zeros((max_time, batch, num_labels), dtype=torch.float32, device=dev)
    beta = torch.empty((batch, 2, int(states)), dtype=torch.float32, device=dev)
    reachable = torch.isfinite(log_z)
    if batch and bool(reachable.any()):
        bwd[(batch,)](lp, lens, final, dst, ocol, ow, alpha, beta, torch.where(reachable, log_z, 0.0), grad,
                      max_time, batch, num_labels, S=states, W=width2)
        grad[:, ~reachable] = 0
    return log_z, grad


def viterbi(log_probs: torch.Tensor, layout):
    """``(score (B,), labels (T, B) int64, edge_path (T, B) int64)`` as the CPU kernel's ``viterbi``."""
    lp, lens, start, final, max_time, batch, num_labels, dev = _common(log_probs, layout)
    _, _, vit = _kernels(_interpreting())
    src, col, w, states, width = slot_tables(layout, num_labels, "in")
    eid = np.zeros(src.shape, dtype=np.int32)
    ptr = layout.in_ptr
    deg = np.diff(ptr)
    glob = np.repeat(np.arange(ptr.shape[0] - 1), deg)
    seq = np.searchsorted(layout.lo, glob, side="right") - 1
    eid[seq, glob - layout.lo[seq], np.arange(ptr[-1]) - ptr[:-1][glob]] = layout.in_eid
    src_t, col_t, w_t, eid_t = (torch.as_tensor(x, device=dev) for x in (src, col, w, eid))
    delta = torch.empty((batch, 2, states), dtype=torch.float32, device=dev)
    back = torch.empty((batch, max_time, states), dtype=torch.int32, device=dev)
    score = torch.full((batch,), float("-inf"), dtype=torch.float32, device=dev)
    labels = torch.full((max_time, batch), -1, dtype=torch.int64, device=dev)
    path = torch.full((max_time, batch), -1, dtype=torch.int64, device=dev)
    if batch:
        vit[(batch,)](lp, lens, start, final, src_t, col_t, w_t, eid_t, delta, back, score, labels, path, max_time,
                      batch, num_labels, S=states, W=width)
    return score, labels, path
