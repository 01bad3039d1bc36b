"""The batched kernel over RASR's merged automaton (``fullsum``, ``viterbi``) on both twins, against brute-force
enumeration of every path of small random automata."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sprint_control.fsa import _fsa_py


def random_automaton(rng, num_states, num_edges, num_labels):
    """(num_states, edges (3, e) from/to/label, weights): random edges, start 0, final num_states - 1."""
    src = rng.integers(0, num_states, num_edges)
    dst = rng.integers(0, num_states, num_edges)
    lab = rng.integers(0, num_labels, num_edges)
    return num_states, np.stack([src, dst, lab]), rng.uniform(0, 2, num_edges)


def merge_shuffled(rng, automata):
    """The merged layout with the sequences' state ranges in a random order and the edges shuffled."""
    offsets, offset = {}, 0
    for b in rng.permutation(len(automata)):
        offsets[b] = offset
        offset += automata[b][0] + int(rng.integers(0, 2))  # sometimes a state that belongs to no sequence
    edges, weights = [], []
    for b, (_, e, w) in enumerate(automata):
        edges.append(np.stack([e[0] + offsets[b], e[1] + offsets[b], e[2], np.full(e.shape[1], b)]))
        weights.append(w)
    edges, weights = np.concatenate(edges, axis=1), np.concatenate(weights)
    perm = rng.permutation(edges.shape[1])
    start_end = np.array([[offsets[b], offsets[b] + automata[b][0] - 1] for b in range(len(automata))]).T
    return edges[:, perm], weights[perm], start_end


def enumerate_paths(lp, n, e, w):
    """Every path of len(lp) edges from state 0 to state n-1: (log score, edge indices)."""
    T = lp.shape[0]
    for path in itertools.product(range(e.shape[1]), repeat=T):
        state = 0
        for k in path:
            if e[0, k] != state:
                break
            state = e[1, k]
        else:
            if state == n - 1:
                yield sum(lp[t, e[2, k]] - w[k] for t, k in enumerate(path)), path


def brute_force(lp, n, e, w, num_labels):
    paths = list(enumerate_paths(lp, n, e, w))
    T = lp.shape[0]
    if T == 0:
        return (0.0 if n == 1 else -np.inf), np.zeros((0, num_labels)), np.zeros(e.shape[1]), None
    if not paths:
        return -np.inf, None, None, None
    scores = np.array([s for s, _ in paths])
    log_z = np.logaddexp.reduce(scores)
    occ, edge_occ = np.zeros((T, num_labels)), np.zeros(e.shape[1])
    for s, path in paths:
        p = np.exp(s - log_z)
        for t, k in enumerate(path):
            occ[t, e[2, k]] += p
            edge_occ[k] += p
    best = paths[int(np.argmax(scores))]
    return log_z, occ, edge_occ, best


def _case(seed, batch=4, num_labels=3, max_time=4):
    rng = np.random.default_rng(seed)
    automata = [random_automaton(rng, int(rng.integers(1, 4)), int(rng.integers(1, 8)), num_labels)
                for _ in range(batch)]
    edges, weights, start_end = merge_shuffled(rng, automata)
    lens = rng.integers(0, max_time + 1, batch)
    lp = rng.normal(size=(max_time, batch, num_labels)) * 2
    return automata, edges, weights, start_end, lens, lp


@pytest.fixture(autouse=True)
def every_thread_count_is_worth_it(monkeypatch):
    """The compiled kernel runs small batches on one thread; here even tiny ones go parallel."""
    from sprint_control import fsa

    if fsa.IMPLEMENTATION == "cython":
        from sprint_control.fsa import _fsa

        monkeypatch.setattr(_fsa, "WORK_PER_THREAD", 1)
        monkeypatch.setattr(_fsa, "VITERBI_WORK_PER_THREAD", 1)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fullsum_matches_brute_force(fsa_impl, seed, dtype):
    automata, edges, weights, start_end, lens, lp = _case(seed)
    lp = lp.astype(dtype)
    num_labels = lp.shape[2]
    scale = np.array([1.0, -2.0, 0.5, 3.0])
    out = np.full(lp.shape, np.nan, dtype=dtype)  # every element must be written
    edge_out = np.full(edges.shape[1], np.nan)
    log_z = fsa_impl.fullsum(lp, lens, edges, weights, start_end, out=out, scale=scale, edge_out=edge_out,
                             num_threads=2)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for b, (n, e, w) in enumerate(automata):
        t = lens[b]
        want_z, want_occ, want_edges, _ = brute_force(lp[:t, b].astype(np.float64), n, e, w, num_labels)
        mine = edges[3] == b
        if want_occ is None:
            assert log_z[b] == -np.inf
            assert not out[:, b].any() and not edge_out[mine].any()
            continue
        assert log_z[b] == pytest.approx(want_z, abs=tol)
        np.testing.assert_allclose(out[:t, b], scale[b] * want_occ, atol=tol)
        assert not out[t:, b].any()
        got_edges = np.empty(e.shape[1])
        got_edges[_local_index(edges, weights, b, e, w)] = edge_out[mine]
        np.testing.assert_allclose(got_edges, scale[b] * want_edges, atol=tol)


@pytest.mark.parametrize("seed", range(12))
def test_fullsum_forward_only_and_threads_give_the_same_totals(fsa_impl, seed):
    _, edges, weights, start_end, lens, lp = _case(seed, batch=6)
    full = fsa_impl.fullsum(lp, lens, edges, weights, start_end, out=np.empty(lp.shape), num_threads=1)
    np.testing.assert_array_equal(fsa_impl.fullsum(lp, lens, edges, weights, start_end, num_threads=3), full)
    np.testing.assert_allclose(_fsa_py.fullsum(lp, lens, edges, weights, start_end), full, rtol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_viterbi_matches_brute_force(fsa_impl, seed):
    automata, edges, weights, start_end, lens, lp = _case(seed)
    score, labels, path = fsa_impl.viterbi(lp, lens, edges, weights, start_end, num_threads=2)
    assert labels.shape == path.shape == lp.shape[:2] and labels.dtype == path.dtype == np.int64
    for b, (n, e, w) in enumerate(automata):
        t = lens[b]
        want_z, _, _, best = brute_force(lp[:t, b], n, e, w, lp.shape[2])
        assert not np.any(labels[t:, b] != -1) and not np.any(path[t:, b] != -1)
        if t == 0:
            assert score[b] == want_z
            continue
        if best is None:
            assert score[b] == -np.inf and np.all(labels[:, b] == -1) and np.all(path[:, b] == -1)
            continue
        best_score, best_path = best
        assert score[b] == pytest.approx(best_score, abs=1e-10)
        # the kernel's edge indices are into the shuffled merged list: map them back to the sequence's own
        local = dict(zip(np.flatnonzero(edges[3] == b).tolist(), _local_index(edges, weights, b, e, w).tolist()))
        assert [local[int(k)] for k in path[:t, b]] == list(best_path)
        assert list(labels[:t, b]) == [int(e[2, k]) for k in best_path]


def _local_index(edges, weights, b, e, w):
    """For the merged edges of sequence b, the index of the matching edge of its own list (weights are
    distinct random numbers, so they identify the edge)."""
    mine = np.flatnonzero(edges[3] == b)
    return np.array([int(np.flatnonzero(w == weights[k])[0]) for k in mine])


def test_viterbi_ties_go_to_the_lowest_edge_index(fsa_impl):
    # two parallel edges 0 -> 1 with the same label and weight: the first one wins, on both twins
    edges = np.array([[0, 0], [1, 1], [0, 0], [0, 0]])
    score, labels, path = fsa_impl.viterbi(np.zeros((1, 1, 1)), [1], edges, [0.0, 0.0], [[0], [1]])
    assert score[0] == 0.0 and path[0, 0] == 0 and labels[0, 0] == 0


def test_single_sequence_api_is_the_batched_kernel(fsa_impl):
    automata, edges, weights, start_end, lens, lp = _case(3, batch=1, max_time=3)
    n, e, w = automata[0]
    t = 3
    total, occ = fsa_impl.forward_backward(lp[:t, 0], n, e[0], e[1], e[2], w, 0, n - 1)
    want_z, want_occ, _, _ = brute_force(lp[:t, 0], n, e, w, lp.shape[2])
    if want_occ is None:
        assert total == -np.inf and occ is None
    else:
        assert total == pytest.approx(want_z, abs=1e-10)
        np.testing.assert_allclose(occ, want_occ, atol=1e-10)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda e, w, se, lens: (e[:3], w, se, lens), "edges must have shape"),
        (lambda e, w, se, lens: (e, w[:-1], se, lens), "weights must have shape"),
        (lambda e, w, se, lens: (e, w, se[:, :1], lens), "start_end_states must have shape"),
        (lambda e, w, se, lens: (e, w, se, [5, 1]), "seq_lengths must lie in"),
        (lambda e, w, se, lens: (e + np.array([[0], [0], [9], [0]]), w, se, lens), "emission indices"),
        (lambda e, w, se, lens: (e + np.array([[0], [0], [0], [5]]), w, se, lens), "sequence indices"),
        (lambda e, w, se, lens: (e + np.array([[0], [2], [0], [0]]), w, se, lens), "leaves the state range"),
        (lambda e, w, se, lens: (e, w, np.array([[0, 1], [2, 3]]), lens), "overlap"),
        (lambda e, w, se, lens: (e, w, np.array([[0, 3], [2, 2]]), lens), "range"),
        (lambda e, w, se, lens: (e.astype(float) + 0.5, w, se, lens), "integers"),
    ],
)
def test_bad_batch_automata_are_refused(fsa_impl, mutate, match):
    edges = np.array([[0, 1, 3], [1, 2, 4], [0, 1, 1], [0, 0, 1]])  # seq 0: states 0..2, seq 1: 3..4
    start_end = np.array([[0, 3], [2, 4]])
    e, w, se, lens = mutate(edges, np.zeros(3), start_end, [2, 1])
    with pytest.raises(ValueError, match=match):
        fsa_impl.fullsum(np.zeros((2, 2, 2)), lens, e, w, se)
    with pytest.raises(ValueError, match=match):
        fsa_impl.viterbi(np.zeros((2, 2, 2)), lens, e, w, se)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(out=np.zeros((2, 2, 3))), "out must be"),
        (dict(out=np.zeros((2, 2, 2), dtype=np.int32)), "out must be"),
        (dict(out=np.zeros((2, 2, 4))[:, :, ::2]), "C-contiguous"),
        (dict(scale=np.ones(3)), "scale must have shape"),
        (dict(edge_out=np.zeros(2)), "edge_out must be"),
    ],
)
def test_bad_outputs_are_refused(fsa_impl, kwargs, match):
    edges = np.array([[0, 1, 3], [1, 2, 4], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match=match):
        fsa_impl.fullsum(np.zeros((2, 2, 2)), [2, 1], edges, np.zeros(3), [[0, 3], [2, 4]], **kwargs)


def test_float32_scores_are_summed_in_float64(fsa_impl):
    # 3000 frames of one looping edge: a float32 accumulator would drift by ~1e-4, float64 stays exact
    lp = np.full((3000, 1, 1), -0.1, dtype=np.float32)
    log_z = fsa_impl.fullsum(lp, [3000], [[0], [0], [0], [0]], [0.0], [[0], [0]])
    assert log_z[0] == pytest.approx(3000 * float(np.float32(-0.1)), rel=1e-13)
