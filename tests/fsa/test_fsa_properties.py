"""Properties of the forward-backward core on random orthographies and lengths (hypothesis): both cores
agree, occupancies are distributions over labels, the exported automaton gives the criterion's loss."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprint_control.emulator import criteria
from sprint_control.emulator.lexicon import Lexicon
from sprint_control.fsa import _fsa_py

LEX = Lexicon(alphabet="abc", states_per_symbol=2, silence=True)

orthographies = st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=0, max_size=3).map(" ".join)


def log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


# fsa_impl is a stateless module: sharing it across examples is fine
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    orth=orthographies,
    T=st.integers(1, 25),
    seed=st.integers(0, 2**16),
    ctc=st.booleans(),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_cores_agree_and_export_matches_criterion(fsa_impl, orth, T, seed, ctc, scale):
    name = "ctc" if ctc else "fsa"
    L = criteria.num_labels(name, LEX)
    lp = log_softmax(np.random.default_rng(seed).normal(size=(T, L)) * scale)
    n, e, edges, w = criteria.automaton(name, orth, LEX).export()
    ef, et, el = edges.reshape(3, e).astype(np.int64)
    total, occ = fsa_impl.forward_backward(lp, n, ef, et, el, w, 0, n - 1)
    ref_total, ref_occ = _fsa_py.forward_backward(lp, n, ef, et, el, w, 0, n - 1)
    loss, err = criteria.compute_criterion(name, lp, orthography=orth, lexicon=LEX)
    if occ is None:
        assert ref_occ is None and total == -np.inf and loss is None and err is None
        return
    assert np.isclose(total, ref_total, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(occ, ref_occ, atol=1e-9)
    np.testing.assert_allclose(occ.sum(axis=1), 1.0, atol=1e-9)
    assert occ.min() >= 0
    assert total <= 1e-9  # a sum of path probabilities under normalised posteriors
    assert np.isclose(loss, -total, rtol=1e-9)
    np.testing.assert_allclose(err, np.exp(lp) - occ, atol=1e-6)
    # only labels on the automaton's edges are occupied
    off = np.setdiff1d(np.arange(L), el)
    assert not occ[:, off].any()
