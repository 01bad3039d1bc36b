"""Non-finite input to the full-sum kernel, one rule on both twins: a NaN or +inf score within a sequence's
length, or a NaN or -inf weight on one of its edges, gives that sequence the total NaN, zero occupancy and no
Viterbi path, whatever the edge order and whichever states are reachable; -inf scores are probability zero.
Also: ``out`` may not share memory with ``log_probs``."""

from __future__ import annotations

import numpy as np
import pytest
from test_fsa_batch import _case

BAD_SCORES = [np.nan, np.inf]


def _run(impl, lp, lens, edges, weights, start_end):
    out = np.full(lp.shape, 7.0, dtype=lp.dtype)
    edge_out = np.full(edges.shape[1], 7.0)
    log_z = impl.fullsum(lp, lens, edges, weights, start_end, out=out, edge_out=edge_out, num_threads=2)
    return log_z, out, edge_out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bad", BAD_SCORES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_bad_score_makes_its_sequence_nan_and_leaves_the_others(fsa_impl, seed, bad, dtype):
    _, edges, weights, start_end, lens, lp = _case(seed, max_time=5)
    lp = lp.astype(dtype)
    rng = np.random.default_rng(100 + seed)
    b = int(np.argmax(lens))  # a sequence with frames
    if lens[b] == 0:
        pytest.skip("no sequence with frames in this case")
    clean = _run(fsa_impl, lp, lens, edges, weights, start_end)
    dirty_lp = lp.copy()
    dirty_lp[rng.integers(0, lens[b]), b, rng.integers(0, lp.shape[2])] = bad  # any label, read or not
    log_z, out, edge_out = _run(fsa_impl, dirty_lp, lens, edges, weights, start_end)
    assert np.isnan(log_z[b])
    assert not out[:, b].any() and not edge_out[edges[3] == b].any()
    others = np.arange(lens.shape[0]) != b
    np.testing.assert_array_equal(log_z[others], clean[0][others])
    np.testing.assert_array_equal(out[:, others], clean[1][:, others])
    np.testing.assert_array_equal(edge_out[edges[3] != b], clean[2][edges[3] != b])
    # the same answer with the edges in another order (the old kernel's max depended on it)
    perm = rng.permutation(edges.shape[1])
    again = fsa_impl.fullsum(dirty_lp, lens, edges[:, perm], weights[perm], start_end)
    np.testing.assert_array_equal(again, log_z)
    score, labels, path = fsa_impl.viterbi(dirty_lp, lens, edges, weights, start_end)
    assert np.isnan(score[b]) and (labels[:, b] == -1).all() and (path[:, b] == -1).all()
    clean_score = fsa_impl.viterbi(lp, lens, edges, weights, start_end)[0]
    np.testing.assert_array_equal(score[others], clean_score[others])


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_a_bad_weight_makes_its_sequence_nan(fsa_impl, bad):
    _, edges, weights, start_end, lens, lp = _case(3, max_time=5)
    weights = weights.copy()
    k = int(np.flatnonzero(edges[3] == edges[3, 0])[-1])
    weights[k] = bad
    log_z, out, _ = _run(fsa_impl, lp, lens, edges, weights, start_end)
    assert np.isnan(log_z[edges[3, 0]]) and not out[:, edges[3, 0]].any()
    assert np.isnan(fsa_impl.viterbi(lp, lens, edges, weights, start_end)[0][edges[3, 0]])


def test_bad_scores_beyond_a_length_and_minus_inf_are_ordinary(fsa_impl):
    _, edges, weights, start_end, lens, lp = _case(5, max_time=5)
    clean = _run(fsa_impl, lp, lens, edges, weights, start_end)
    dirty = lp.copy()
    for b in range(lens.shape[0]):
        dirty[lens[b]:, b, :] = np.nan  # padding frames are never read
    np.testing.assert_array_equal(_run(fsa_impl, dirty, lens, edges, weights, start_end)[0], clean[0])
    dirty = lp.copy()
    dirty[0, :, 0] = -np.inf
    log_z = fsa_impl.fullsum(dirty, lens, edges, weights, start_end)
    assert not np.isnan(log_z).any()
    assert (log_z <= clean[0] + 1e-12).all()  # a zero-probability label can only remove paths


@pytest.mark.parametrize("bad", BAD_SCORES)
def test_forward_backward_says_nan(fsa_impl, bad):
    lp = np.log(np.full((4, 2), 0.5))
    lp[2, 1] = bad
    log_total, occ = fsa_impl.forward_backward(lp, 2, [0, 0, 1], [0, 1, 1], [0, 1, 1], [0.0, 0.0, 0.0], 0, 1)
    assert np.isnan(log_total) and occ is None


def test_out_sharing_memory_with_log_probs_is_refused(fsa_impl):
    _, edges, weights, start_end, lens, lp = _case(1, max_time=5)
    with pytest.raises(ValueError, match="out must not share memory with log_probs"):
        fsa_impl.fullsum(lp, lens, edges, weights, start_end, out=lp)
    big = np.zeros((2,) + lp.shape)
    big[0] = lp
    with pytest.raises(ValueError, match="out must not share memory with log_probs"):
        fsa_impl.fullsum(big[0], lens, edges, weights, start_end, out=big[0])
    flat = np.zeros(lp.size + edges.shape[1])
    view = flat[: lp.size].reshape(lp.shape)
    view[...] = lp
    with pytest.raises(ValueError, match="edge_out must not share memory with log_probs"):
        fsa_impl.fullsum(view, lens, edges, weights, start_end, edge_out=flat[lp.size - 1: lp.size - 1 +
                                                                                 edges.shape[1]])


def test_the_emulators_criterion_drops_a_segment_with_a_nan_posterior():
    """Before, the kernel's maximum skipped the NaN and the criterion returned a plausible CTC loss."""
    from sprint_control.emulator import criteria
    from sprint_control.emulator.lexicon import Lexicon

    lex = Lexicon()
    lp = np.log(np.full((12, lex.num_ctc_labels), 1.0 / lex.num_ctc_labels))
    loss, _ = criteria.compute_criterion("ctc", lp, "abc")
    assert np.isfinite(loss)
    lp[3, 2] = np.nan
    assert criteria.compute_criterion("ctc", lp, "abc") == (None, None)
