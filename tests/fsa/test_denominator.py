"""The LF-MMI denominator: the label n-gram's estimate (proper distributions, a bigram by hand, pruning) and
the composed graphs' totals against brute-force enumeration of every frame labelling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sprint_control.fsa.denominator import denominator_graph, label_ngram, units_from_alignment

SEQS = [[0, 1, 1, 2], [2, 0], [1, 2, 0, 1]]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("min_count", [1, 3])
def test_every_history_is_a_distribution(order, min_count):
    lm = label_ngram(SEQS, 3, order=order, min_count=min_count)
    for h in lm.histories:
        p = sum(np.exp(-lm.cost(h, u)) for u in range(3)) + np.exp(-lm.end_cost(h))
        assert p == pytest.approx(1.0, abs=1e-12)
        for u in range(3):
            assert lm.next_state(h, u) in lm.histories


def test_bigram_by_hand():
    lm = label_ngram(SEQS, 3, order=2)
    # outcomes 0, 1, 2, </s>: 13 events; the unigram interpolates them with the uniform 1/4 (weight 1)
    uni = (np.array([3, 4, 3, 3]) + 0.25) / (13 + 1)
    # after unit 1: 1 -> 1 once, 1 -> 2 twice, 1 -> </s> once: 4 events
    after_1 = (np.array([0, 1, 2, 1]) + uni) / (4 + 1)
    assert np.exp(-lm.cost((1,), 2)) == pytest.approx(after_1[2])
    assert np.exp(-lm.end_cost((1,))) == pytest.approx(after_1[3])
    assert lm.next_state((1,), 2) == (2,)


def test_pruned_histories_back_off_to_a_kept_suffix():
    lm = label_ngram(SEQS, 3, order=3, min_count=2)
    assert all(len(h) <= 2 for h in lm.histories)
    assert (1, 1) not in lm.histories and (0, 1) in lm.histories  # seen once / twice
    assert lm.next_state((0, 1), 1) == (1,)  # (1, 1) pruned: its suffix


def _lm_cost(lm, units):
    h, total = lm.histories[0], 0.0
    for u in units:
        total += lm.cost(h, u)
        h = lm.next_state(h, u)
    return total + lm.end_cost(h)


def _ctc_units(frames, blank):
    out, prev = [], None
    for x in frames:
        if x != blank and x != prev:
            out.append(x)
        prev = x
    return out


def _hmm_units(frames, states):
    """The unit sequence of a frame labelling of left-to-right units of ``states`` states, None if invalid."""
    runs = [k for k, _ in itertools.groupby(frames)]
    if len(runs) % states:
        return None
    units = []
    for i in range(0, len(runs), states):
        chunk = runs[i:i + states]
        u = chunk[0] // states
        if chunk != [u * states + j for j in range(states)]:
            return None
        units.append(u)
    return units


def _brute_log_z(lp, num_labels, frame_cost):
    total = -np.inf
    for frames in itertools.product(range(num_labels), repeat=lp.shape[0]):
        cost = frame_cost(list(frames))
        if cost is not None:
            total = np.logaddexp(total, sum(lp[t, f] for t, f in enumerate(frames)) - cost)
    return total


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ctc_graph_total_equals_enumeration(fsa_impl, order):
    lm = label_ngram(SEQS, 3, order=order)
    g = denominator_graph(lm, topology="ctc")  # labels 0..2 units, 3 blank
    lp = np.random.default_rng(order).normal(size=(4, 1, 4))
    edges, weights, start_end = g.merged()
    got = fsa_impl.fullsum(lp, [4], edges, weights, start_end, shared=True)[0]
    want = _brute_log_z(lp[:, 0], 4, lambda f: _lm_cost(lm, _ctc_units(f, 3)))
    assert got == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("order", [1, 2])
def test_hmm_graph_total_equals_enumeration(fsa_impl, order):
    lm = label_ngram([[0, 1], [1, 1, 0]], 2, order=order)
    g = denominator_graph(lm, topology="hmm", states_per_unit=2)  # labels u * 2 + j
    lp = np.random.default_rng(7).normal(size=(6, 1, 4))
    edges, weights, start_end = g.merged()
    got = fsa_impl.fullsum(lp, [6], edges, weights, start_end, shared=True)[0]

    def cost(frames):
        units = _hmm_units(frames, 2)
        return None if units is None or not units else _lm_cost(lm, units)

    assert got == pytest.approx(_brute_log_z(lp[:, 0], 4, cost), abs=1e-10)


def test_units_from_alignments_and_bad_arguments():
    assert units_from_alignment([3, 0, 0, 3, 0, 1, 1, 3], topology="ctc", num_units=3) == [0, 0, 1]
    assert units_from_alignment([6, 0, 1, 1, 2, 3, 6, 6], topology="hmm", states_per_unit=2, silence=6,
                                num_units=4) == [3, 0, 1, 3]
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        label_ngram(SEQS, 3, order=4)
    with pytest.raises(ValueError, match="unit outside"):
        label_ngram([[5]], 3)
    with pytest.raises(ValueError, match="topology must be one of"):
        denominator_graph(label_ngram(SEQS, 3), topology="rnnt")
    with pytest.raises(ValueError, match="silence must be the last label"):
        denominator_graph(label_ngram(SEQS, 3), topology="hmm", states_per_unit=2, silence=0)


def test_initial_is_a_distribution_over_every_state():
    g = denominator_graph(label_ngram(SEQS, 3, order=2), topology="ctc")
    assert g.initial.shape == (g.num_states,) and g.initial.sum() == pytest.approx(1.0)
    assert (g.initial > 0).all()
    # the start state is left after the first frame: it keeps only the floor
    assert g.initial[g.start] < 1e-5 < g.initial.max()
