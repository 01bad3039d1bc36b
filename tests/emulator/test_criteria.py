"""Criteria: loss and error signal (d loss / d pre-softmax activations) checked by finite differences
on both forward-backward cores, discarding, label counts."""

from __future__ import annotations

import numpy as np
import pytest

from sprint_control.emulator.lexicon import Lexicon


def log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def numeric_grad(f, a, eps=1e-5):
    g = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        ap = a.copy()
        am = a.copy()
        ap[idx] += eps
        am[idx] -= eps
        g[idx] = (f(ap) - f(am)) / (2 * eps)
    return g


SMALL = Lexicon(alphabet="abc", states_per_symbol=2, silence=True)


@pytest.mark.parametrize(
    "criterion,orth,T",
    [("ctc", "ab", 6), ("ctc", "aa", 5), ("ctc", "c", 1), ("fsa", "ab", 7), ("full-sum", "a c", 8), ("fsa", "", 3)],
)
def test_automaton_criteria_gradient(criteria_impl, criterion, orth, T):
    L = criteria_impl.num_labels(criterion, SMALL)
    a = np.random.default_rng(T).normal(size=(T, L))

    def loss_of(x):
        loss, _ = criteria_impl.compute_criterion(criterion, log_softmax(x), orthography=orth, lexicon=SMALL)
        return loss

    loss, err = criteria_impl.compute_criterion(criterion, log_softmax(a), orthography=orth, lexicon=SMALL)
    assert err.dtype == np.float32 and err.shape == (T, L)
    assert loss > 0
    np.testing.assert_allclose(err, numeric_grad(loss_of, a), atol=2e-5)


def test_cross_entropy_gradient_and_loss(criteria_impl):
    T, L = 7, 5
    a = np.random.default_rng(1).normal(size=(T, L))
    align = np.array([0, 0, 1, 4, 4, 2, 3])
    lp = log_softmax(a)
    loss, err = criteria_impl.compute_criterion("cross-entropy", lp, alignment=align)
    assert loss == pytest.approx(-lp[np.arange(T), align].sum())
    f = lambda x: criteria_impl.compute_criterion("cross-entropy", log_softmax(x), alignment=align)[0]  # noqa: E731
    np.testing.assert_allclose(err, numeric_grad(f, a), atol=2e-5)


def test_bench_gradient_away_from_ties(criteria_impl):
    T, L = 6, 9
    a = np.random.default_rng(2).normal(size=(T, L)) * 3
    loss, err = criteria_impl.compute_criterion("bench", log_softmax(a).astype(np.float32))
    f = lambda x: criteria_impl.compute_criterion("bench", log_softmax(x))[0]  # noqa: E731
    assert loss == pytest.approx(-log_softmax(a).max(axis=1).sum(), rel=1e-5)
    # bench works in float32 (its point is speed): a coarser step keeps rounding out of the comparison
    np.testing.assert_allclose(err, numeric_grad(f, a, eps=1e-2), atol=1e-3)


def test_bench_is_cheap_on_big_matrices(criteria_impl):
    lp = log_softmax(np.random.default_rng(0).normal(size=(50, 9001))).astype(np.float32)
    loss, err = criteria_impl.compute_criterion("bench", lp)
    assert err.shape == (50, 9001) and err.dtype == np.float32
    np.testing.assert_allclose(err.sum(axis=1), 0.0, atol=1e-4)


def test_none_criterion(criteria_impl):
    loss, err = criteria_impl.compute_criterion("none", np.zeros((3, 4)))
    assert loss == 0.0 and err.shape == (3, 4) and not err.any()


def test_discarded_when_too_short(criteria_impl):
    lex = Lexicon()
    T = 2
    lp = log_softmax(np.zeros((T, lex.num_ctc_labels)))
    assert criteria_impl.compute_criterion("ctc", lp, orthography="abc") == (None, None)
    lp = log_softmax(np.zeros((5, lex.num_hmm_labels)))
    assert criteria_impl.compute_criterion("fsa", lp, orthography="ab") == (None, None)  # 6 states > 5 frames


def test_loss_is_summed_over_frames(criteria_impl):
    # uniform posteriors: the CTC loss is T*log(L) - log(number of alignments)
    lex = Lexicon(alphabet="ab")
    T = 3
    lp = np.full((T, 3), -np.log(3.0))
    loss, _ = criteria_impl.compute_criterion("ctc", lp, orthography="a", lexicon=lex)
    # alignments of "a" in 3 frames: a__ _a_ __a aa_ _aa aaa  (a, blank=_)
    assert loss == pytest.approx(T * np.log(3) - np.log(6))


def test_label_counts():
    from sprint_control.emulator import criteria

    lex = Lexicon()  # 10 symbols x 3 states + silence
    assert criteria.num_labels("ctc") == 11
    assert criteria.num_labels("fsa") == criteria.num_labels("full-sum") == 31
    assert criteria.num_labels("cross-entropy") == 31
    assert criteria.num_labels("bench", lex, default=9001) == 9001
    assert 10 <= criteria.num_labels("ctc") <= 40 and 10 <= criteria.num_labels("fsa") <= 40
    with pytest.raises(ValueError, match="unknown training criterion"):
        criteria.num_labels("mmi")


def test_wrong_label_count_is_an_error(criteria_impl):
    with pytest.raises(ValueError, match="11 labels"):
        criteria_impl.compute_criterion("ctc", np.zeros((5, 12)), orthography="a")


def test_cross_entropy_needs_alignment(criteria_impl):
    with pytest.raises(ValueError, match="alignment"):
        criteria_impl.compute_criterion("cross-entropy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match="frames"):
        criteria_impl.compute_criterion("cross-entropy", np.zeros((3, 4)), alignment=np.zeros(4))
    with pytest.raises(ValueError, match="out of range"):
        criteria_impl.compute_criterion("cross-entropy", np.zeros((3, 4)), alignment=np.array([0, 1, 4]))


def test_synthetic_features_let_a_linear_model_learn(criteria_impl):
    """The synthetic corpus is informative: gradient steps on a linear model with the CTC error signal
    lower the loss."""
    from sprint_control.emulator.corpus import synthetic_corpus

    corpus = synthetic_corpus(8, seed=3, max_frames=60)
    L = criteria_impl.num_labels("ctc")
    W = np.zeros((corpus.feature_dim, L))

    def epoch(update: bool) -> float:
        nonlocal W
        total = 0.0
        for seg in corpus:
            x = seg.features.astype(np.float64)
            loss, err = criteria_impl.compute_criterion("ctc", log_softmax(x @ W), orthography=seg.orthography)
            total += loss
            if update:
                W -= 0.01 * x.T @ err
        return total

    before = epoch(False)
    for _ in range(5):
        epoch(True)
    after = epoch(False)
    assert after < 0.7 * before
