"""The automata of the built-in lexicon (against hand-built edges) and the forward-backward core on
both twins (against brute-force enumeration of all frame label sequences)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from support import extra_reason

from sprint_control import _env, fsa
from sprint_control.emulator.lexicon import Lexicon, make_alphabet

# -- the public API is the same on both implementations ------------------------------------------


def test_both_implementations_offer_the_fixed_api(fsa_impl):
    missing = [name for name in fsa.API if not hasattr(fsa_impl, name)]
    assert not missing, f"{fsa_impl.__name__} lacks {missing}"
    assert fsa_impl.IMPLEMENTATION in ("cython", "python")


def test_compiled_kernel_is_active_unless_pure_python_is_forced():
    expected = "python" if _env.pure_python_forced() else "cython"
    assert fsa.IMPLEMENTATION == expected


@pytest.mark.parametrize("forced", ["1", "0"])
def test_the_env_var_selects_the_kernel_in_a_fresh_process(forced):
    env = dict(os.environ, **{_env.PURE_PYTHON: forced})
    out = subprocess.run([sys.executable, "-c", "from sprint_control import fsa; print(fsa.IMPLEMENTATION)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    if forced == "1":
        assert out == "python"
    else:  # "0" does not force the twin: the kernel wherever it is built
        built = importlib.util.find_spec("sprint_control.fsa._fsa") is not None
        assert out == ("cython" if built else "python")


def edge_set(export):
    num_states, num_edges, edges, weights = export
    assert edges.dtype == np.uint32 and edges.shape == (3 * num_edges,)
    assert weights.dtype == np.float32 and weights.shape == (num_edges,)
    block = edges.reshape(3, num_edges)  # all from, then all to, then all labels
    triples = [tuple(int(x) for x in col) for col in block.T]
    assert len(set(triples)) == len(triples), "duplicate edges"
    return num_states, set(triples)


def test_hmm_one_symbol_no_silence_by_hand():
    lex = Lexicon(alphabet="ab", states_per_symbol=2, silence=False)
    n, edges = edge_set(lex.hmm_automaton("a").export())
    # states: 0 initial, 1 = in a.0 (label 0), 2 = in a.1 (label 1), 3 final
    assert n == 4
    assert edges == {(0, 1, 0), (1, 1, 0), (1, 2, 1), (2, 2, 1), (1, 3, 1), (2, 3, 1)}


def test_hmm_two_symbols_with_silence_by_hand():
    lex = Lexicon(alphabet="ab", states_per_symbol=1, silence=True)
    assert lex.silence_label == 2 and lex.num_hmm_labels == 3
    n, edges = edge_set(lex.hmm_automaton("ba").export())
    # positions: sil(2) b(1) a(0) sil(2) -> states 1..4, initial 0, final 5
    assert n == 6
    expected = {
        (0, 1, 2),
        (0, 2, 1),  # start: silence or directly b
        (1, 1, 2),
        (1, 2, 1),  # silence loop, silence -> b
        (2, 2, 1),
        (2, 3, 0),  # b loop, b -> a
        (3, 3, 0),
        (3, 4, 2),  # a loop, a -> silence
        (4, 4, 2),  # silence loop
        (2, 5, 0),
        (3, 5, 0),  # end after a (entering or looping)
        (3, 5, 2),
        (4, 5, 2),  # end after the final silence
    }
    assert edges == expected


def test_hmm_word_boundary_silence_by_hand():
    lex = Lexicon(alphabet="ab", states_per_symbol=1, silence=True)
    _, edges = edge_set(lex.hmm_automaton("a b").export())
    # positions: sil a sil b sil -> states 1..5; a -> b may skip the middle silence
    assert (2, 4, 1) in edges and (2, 3, 2) in edges and (3, 4, 1) in edges


def test_ctc_by_hand():
    lex = Lexicon(alphabet="ab")
    assert lex.blank_label == 2 and lex.num_ctc_labels == 3
    n, edges = edge_set(lex.ctc_automaton("a").export())
    # positions: blank a blank -> states 1..3, final 4
    assert n == 5
    assert edges == {
        (0, 1, 2),
        (0, 2, 0),
        (1, 1, 2),
        (1, 2, 0),
        (2, 2, 0),
        (2, 3, 2),
        (3, 3, 2),
        (0, 4, 0),
        (1, 4, 0),
        (2, 4, 0),
        (2, 4, 2),
        (3, 4, 2),
    }


def test_ctc_repeated_label_needs_blank():
    lex = Lexicon(alphabet="ab")
    _, edges = edge_set(lex.ctc_automaton("aa").export())
    # positions b a b a b -> states 1..5: a(2) -> a(4) directly is forbidden, a(2) -> b(3) -> a(4) allowed
    assert (2, 4, 0) not in edges
    assert (2, 3, 2) in edges and (3, 4, 0) in edges
    _, edges = edge_set(lex.ctc_automaton("ab").export())
    assert (2, 4, 1) in edges  # distinct labels may skip the blank


def test_unknown_symbol():
    with pytest.raises(ValueError, match="not in the lexicon"):
        Lexicon(alphabet="ab").ctc_automaton("abc")


def test_empty_orthography():
    assert Lexicon(silence=False).hmm_automaton("").num_edges == 0
    n, edges = edge_set(Lexicon(alphabet="ab", silence=True).hmm_automaton("  ").export())
    assert edges == {(0, 1, 2 * 3), (1, 1, 6), (0, 2, 6), (1, 2, 6)}


def test_big_alphabet():
    alpha = make_alphabet(3000)
    assert len(alpha) == len(set(alpha)) == 3000
    lex = Lexicon(alphabet=alpha)
    assert lex.num_hmm_labels == 9001
    assert lex.hmm_automaton(alpha[2999] + alpha[0]).num_edges > 0


# -- forward-backward against brute force ---------------------------------------------------------------


def _log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def _collapse(seq):
    return [k for k, _ in itertools.groupby(seq)]


def brute_force(lp, valid):
    """log total and occupancies, enumerating every label sequence of length T."""
    T, L = lp.shape
    total = 0.0
    occ = np.zeros((T, L))
    for seq in itertools.product(range(L), repeat=T):
        if valid(seq):
            p = float(np.exp(sum(lp[t, s] for t, s in enumerate(seq))))
            total += p
            for t, s in enumerate(seq):
                occ[t, s] += p
    if total == 0.0:
        return -np.inf, None
    return np.log(total), occ / total


def ctc_valid(target, blank):
    def valid(seq):
        return [s for s in _collapse(seq) if s != blank] == list(target)

    return valid


def hmm_valid(allowed):
    allowed = {tuple(a) for a in allowed}

    def valid(seq):
        return tuple(_collapse(seq)) in allowed

    return valid


def run_fb(impl, fsa, lp):
    return impl.forward_backward(
        lp, fsa.num_states, fsa.edges_from, fsa.edges_to, fsa.edges_label, fsa.weights, fsa.start, fsa.final
    )


@pytest.mark.parametrize("orth,T", [("a", 1), ("a", 3), ("ab", 4), ("aa", 3), ("aa", 5), ("ba", 5), ("", 3)])
def test_ctc_forward_backward_matches_brute_force(fsa_impl, orth, T):
    lex = Lexicon(alphabet="ab")
    rng = np.random.default_rng(T * 7 + len(orth))
    lp = _log_softmax(rng.normal(size=(T, 3)) * 2)
    target = [lex.alphabet.index(c) for c in orth]
    want_total, want_occ = brute_force(lp, ctc_valid(target, lex.blank_label))
    total, occ = run_fb(fsa_impl, lex.ctc_automaton(orth), lp)
    assert np.isfinite(want_total)
    assert total == pytest.approx(want_total, abs=1e-10)
    np.testing.assert_allclose(occ, want_occ, atol=1e-10)


def test_hmm_forward_backward_matches_brute_force(fsa_impl):
    lex = Lexicon(alphabet="ab", states_per_symbol=2, silence=True)  # labels a0 a1 b0 b1 sil
    sil = lex.silence_label
    core_a, core_b = [0, 1], [2, 3]
    allowed = []
    for s0, s1, s2 in itertools.product([[], [sil]], repeat=3):
        allowed.append(s0 + core_a + s1 + core_b + s2)
    T = 6
    lp = _log_softmax(np.random.default_rng(3).normal(size=(T, 5)))
    want_total, want_occ = brute_force(lp, hmm_valid(allowed))
    total, occ = run_fb(fsa_impl, lex.hmm_automaton("a b"), lp)
    assert total == pytest.approx(want_total, abs=1e-10)
    np.testing.assert_allclose(occ, want_occ, atol=1e-10)


def test_no_path_is_reported(fsa_impl):
    lex = Lexicon(alphabet="ab")
    lp = _log_softmax(np.zeros((2, 3)))
    total, occ = run_fb(fsa_impl, lex.ctc_automaton("aa"), lp)  # needs 3 frames
    assert total == -np.inf and occ is None


def test_weights_are_costs(fsa_impl):
    # one state looping: total = sum_t lp - T * w
    lp = _log_softmax(np.random.default_rng(0).normal(size=(4, 2)))
    total, occ = fsa_impl.forward_backward(lp, 2, [0, 1], [1, 1], [1, 1], [0.5, 0.5], 0, 1)
    assert total == pytest.approx(lp[:, 1].sum() - 4 * 0.5)
    np.testing.assert_allclose(occ, [[0, 1]] * 4)


def test_twins_agree_on_float32_and_extreme_inputs(fsa_impl):
    from sprint_control.fsa import _fsa_py

    lex = Lexicon()
    rng = np.random.default_rng(5)
    # very peaked log-probs: states far below the frame's best must not be lost
    lp = _log_softmax(rng.normal(size=(60, lex.num_ctc_labels)) * 40).astype(np.float32)
    fsa = lex.ctc_automaton("abc de")
    t1, o1 = run_fb(fsa_impl, fsa, lp)
    t2, o2 = run_fb(_fsa_py, fsa, lp.astype(np.float64))
    assert np.isfinite(t1)
    assert t1 == pytest.approx(t2, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(o1, o2, atol=1e-9)
    np.testing.assert_allclose(o1.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(edges_label=[5]), "label out of range"),
        (dict(edges_to=[9]), "state index out of range"),
        (dict(final=7), "out of range"),
        (dict(edges_to=[1, 1]), "same length"),
    ],
)
def test_bad_automata(fsa_impl, kwargs, match):
    args = dict(num_states=2, edges_from=[0], edges_to=[1], edges_label=[0], weights=[0.0], start=0, final=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fsa_impl.forward_backward(np.zeros((1, 2)), **args)


def test_against_torch_ctc_loss(fsa_impl):
    torch = pytest.importorskip("torch", reason=extra_reason("torch"))
    lex = Lexicon()
    rng = np.random.default_rng(11)
    for orth, T in [("abc", 10), ("aab", 12), ("jihgf", 30)]:
        lp = _log_softmax(rng.normal(size=(T, lex.num_ctc_labels)))
        total, _ = run_fb(fsa_impl, lex.ctc_automaton(orth), lp)
        target = torch.tensor([[lex.alphabet.index(c) for c in orth]])
        ref = torch.nn.functional.ctc_loss(
            torch.tensor(lp)[:, None, :],
            target,
            torch.tensor([T]),
            torch.tensor([len(orth)]),
            blank=lex.blank_label,
            reduction="sum",
        )
        assert -total == pytest.approx(float(ref), rel=1e-9)
