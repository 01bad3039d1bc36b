"""``fullsum(..., shared=True)``: one automaton every sequence of the batch runs through (the LF-MMI
denominator), against the same automaton copied into the merged layout once per sequence; and a kept
``layout`` (``batch_layout``/``shared_layout``) that does not fit the input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from test_fsa_batch import random_automaton

from sprint_control.fsa import _fsa_py


def _shared_case(seed, batch=5, max_time=6, num_labels=4):
    rng = np.random.default_rng(seed)
    n, e, w = random_automaton(rng, int(rng.integers(2, 6)), int(rng.integers(4, 14)), num_labels)
    offset = int(rng.integers(0, 3))  # the automaton's states need not start at 0
    edges = np.vstack([e[:2] + offset, e[2:], np.zeros((1, e.shape[1]), np.int64)])
    start_end = np.array([[offset], [offset + n - 1]])
    lens = rng.integers(0, max_time + 1, batch)
    lp = rng.normal(size=(max_time, batch, num_labels)) * 2
    return lp, lens, edges, w, start_end


def _copied(batch, edges, weights, start_end):
    """The merged layout with the automaton copied per sequence (written here, apart from the twin's)."""
    span = int(start_end[1, 0]) + 1
    e = np.concatenate([np.vstack([edges[:2] + b * span, edges[2:3], np.full((1, edges.shape[1]), b)])
                        for b in range(batch)], axis=1)
    se = np.array([[start_end[0, 0] + b * span for b in range(batch)], [start_end[1, 0] + b * span
                                                                          for b in range(batch)]])
    return e, np.tile(weights, batch), se


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shared_equals_one_copy_per_sequence(fsa_impl, seed, dtype):
    lp, lens, edges, w, start_end = _shared_case(seed)
    lp = lp.astype(dtype)
    scale = np.linspace(-2, 1, lp.shape[1])
    out = np.full(lp.shape, np.nan, dtype=dtype)
    log_z = fsa_impl.fullsum(lp, lens, edges, w, start_end, out=out, scale=scale, shared=True, num_threads=2)
    want_out = np.empty(lp.shape, dtype=dtype)
    want = _fsa_py.fullsum(lp, lens, *_copied(lp.shape[1], edges, w, start_end), out=want_out, scale=scale)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(log_z, want, atol=tol)
    np.testing.assert_allclose(out, want_out, atol=tol)
    layout = fsa_impl.shared_layout(lp.shape, lens, edges, w, start_end)
    again = fsa_impl.fullsum(lp, lens, edges, w, start_end, layout=layout, shared=True)
    np.testing.assert_allclose(again, want, atol=tol)


def test_shared_mode_refuses_edge_out_and_misfit_layouts(fsa_impl):
    lp, lens, edges, w, start_end = _shared_case(0)
    with pytest.raises(ValueError, match="edge_out is not available with a shared automaton"):
        fsa_impl.fullsum(lp, lens, edges, w, start_end, shared=True, edge_out=np.zeros(edges.shape[1]))
    layout = fsa_impl.shared_layout(lp.shape, lens, edges, w, start_end)
    with pytest.raises(ValueError, match="layout does not fit log_probs of shape"):
        fsa_impl.fullsum(lp[:, :2], lens[:2], edges, w, start_end, layout=layout, shared=True)
    with pytest.raises(ValueError, match="layout does not fit log_probs of shape"):
        fsa_impl.fullsum(lp, lens, edges, w, start_end, layout=layout)  # a shared layout used as a merged one
    with pytest.raises(ValueError, match="layout does not fit log_probs of shape"):
        fsa_impl.fullsum(lp[:, :, :1], lens, edges, w, start_end, layout=layout, shared=True)
    with pytest.raises(ValueError, match="layout must be a BatchLayout"):
        fsa_impl.fullsum(lp, lens, edges, w, start_end, layout=(1, 2), shared=True)


def _dense_leaky_log_z(lp_b, t_b, n, edges, weights, start, final, leak, init):
    """The leaky HMM as matrices: x <- (x + leak * init * sum(x)) @ A_t for each frame, written apart from both
    kernels (dense, probability space)."""
    x = np.zeros(n)
    x[start] = 1.0
    for t in range(t_b):
        x = x + leak * init * x.sum()
        a = np.zeros((n, n))
        np.add.at(a, (edges[0], edges[1]), np.exp(lp_b[t, edges[2]] - weights))
        x = x @ a
    return np.log(x[final]) if x[final] > 0 else -np.inf


@pytest.mark.parametrize("seed", range(6))
def test_leaky_hmm_equals_the_matrix_product_and_occupancy_is_its_derivative(fsa_impl, seed):
    lp, lens, edges, w, start_end = _shared_case(seed)
    lo, hi = int(start_end[0, 0]), int(start_end[1, 0])
    n = hi - lo + 1
    init = np.random.default_rng(seed).uniform(0, 1, n)
    out = np.zeros(lp.shape)
    log_z = fsa_impl.fullsum(lp, lens, edges, w, start_end, out=out, shared=True, leak=0.2, leak_init=init)
    local = edges[:3] - np.array([[lo], [lo], [0]])
    for b in range(lp.shape[1]):
        want = _dense_leaky_log_z(lp[:, b], lens[b], n, local, w, 0, n - 1, 0.2, init / init.sum())
        assert log_z[b] == pytest.approx(want, abs=1e-10)
    # occupancy = d log Z / d log_probs, by central differences
    b = int(np.argmax(lens))
    if not np.isfinite(log_z[b]):
        return
    for t, v in [(0, 0), (int(lens[b]) - 1, 1), (int(lens[b]) // 2, 3)]:
        bumped = []
        for h in (1e-6, -1e-6):
            x = lp.copy()
            x[t, b, v] += h
            bumped.append(fsa_impl.fullsum(x, lens, edges, w, start_end, shared=True, leak=0.2,
                                           leak_init=init)[b])
        assert out[t, b, v] == pytest.approx((bumped[0] - bumped[1]) / 2e-6, abs=1e-6)


def test_leak_arguments_are_checked(fsa_impl):
    lp, lens, edges, w, start_end = _shared_case(1)
    n = int(start_end[1, 0] - start_end[0, 0]) + 1
    with pytest.raises(ValueError, match="leak is only available with a shared automaton"):
        fsa_impl.fullsum(lp[:, :1], lens[:1], edges, w, start_end, leak=0.1)
    with pytest.raises(ValueError, match=r"leak must lie in \[0, 1\)"):
        fsa_impl.fullsum(lp, lens, edges, w, start_end, shared=True, leak=1.5)
    with pytest.raises(ValueError, match=f"leak_init must be \\({n},\\) non-negative weights"):
        fsa_impl.fullsum(lp, lens, edges, w, start_end, shared=True, leak=0.1, leak_init=np.ones(n + 1))
