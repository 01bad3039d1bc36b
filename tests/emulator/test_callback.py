"""The callback in-process: every command, RASR's argument checks and error classes, output types."""

from __future__ import annotations

import numpy as np
import pytest

from sprint_control.emulator.callback import Callback, EmulatorFatalError, make_capsule
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.emulator.criteria import compute_criterion


def log_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


@pytest.fixture
def corpus():
    return synthetic_corpus(4, seed=9)


@pytest.fixture
def cb(corpus):
    return Callback(corpus, criterion="ctc")


def logpost(T, L, seed=0):
    return log_softmax(np.random.default_rng(seed).normal(size=(T, L))).astype(np.float32)


def test_capsule():
    cap = make_capsule()
    assert type(cap).__name__ == "PyCapsule"
    assert '"Sprint.PythonControl.Internal"' in repr(cap)


def test_simple_commands(cb):
    assert cb("version_number") == 5
    assert Callback(version_number=7)("version_number") == 7
    assert cb("version").startswith("<version>")
    assert "Usage: callback" in cb("help")
    assert cb("init_criterion") is None
    assert cb.criterion_initialized


def test_command_errors(cb):
    with pytest.raises(ValueError, match="unknown command 'nope'"):
        cb("nope")
    with pytest.raises(TypeError):
        cb()
    with pytest.raises(TypeError, match="must be a string"):
        cb(b"version")
    with pytest.raises(TypeError, match="1BYTE"):
        cb("versión")
    with pytest.raises(ValueError, match="needs RASR caches"):
        cb("get_alignment_from_cache", cache_filename="x", segment_name="y")


def test_orthography_by_segment_name(cb, corpus):
    seg = corpus.segments[2]
    assert cb("get_orthography_by_segment_name", segment_name=seg.name) == seg.orthography
    assert cb("get_orthography_by_segment_name", seg.name) == seg.orthography  # positional, as RASR allows
    with pytest.raises(KeyError, match="unknown segment name 'x/y'"):
        cb("get_orthography_by_segment_name", segment_name="x/y")
    with pytest.raises(TypeError, match="argument 2 must be str, not bytes"):
        cb("get_orthography_by_segment_name", segment_name=seg.name.encode())
    with pytest.raises(TypeError, match="missing required argument 'segment_name'"):
        cb("get_orthography_by_segment_name")
    with pytest.raises(TypeError, match="invalid keyword argument"):
        cb("get_orthography_by_segment_name", segment_name=seg.name, extra=1)
    with pytest.raises(TypeError, match="given by name"):
        cb("get_orthography_by_segment_name", seg.name, segment_name=seg.name)
    with pytest.raises(TypeError, match="at most 2 arguments"):
        cb("get_orthography_by_segment_name", seg.name, "x")


def test_fsa_exports(cb, corpus):
    seg = corpus.segments[0]
    by_name = cb("export_allophone_state_fsa_by_segment_name", segment_name=seg.name)
    by_orth = cb("export_allophone_state_fsa_by_orthography", orthography=seg.orthography)
    n, e, edges, weights = by_name
    assert isinstance(n, int) and isinstance(e, int)
    assert edges.dtype == np.uint32 and edges.shape == (3 * e,)
    assert weights.dtype == np.float32 and weights.shape == (e,)
    assert (n, e) == by_orth[:2]
    np.testing.assert_array_equal(edges, by_orth[2])
    with pytest.raises(KeyError):
        cb("export_allophone_state_fsa_by_segment_name", segment_name="nope")
    with pytest.raises(TypeError, match="must be str, not bytes"):
        cb("export_allophone_state_fsa_by_orthography", orthography=b"ab")
    with pytest.raises(ValueError, match="alphabet"):
        cb("export_allophone_state_fsa_by_orthography", orthography="xyz")
    # the HMM criteria export the HMM topology
    hmm = Callback(corpus, criterion="fsa")("export_allophone_state_fsa_by_orthography", orthography="a")
    assert set(hmm[2].reshape(3, -1)[2]) == {0, 1, 2, 30}


def test_calculate_criterion_error_signal(cb, corpus):
    seg = corpus.segments[1]
    lp = logpost(seg.num_frames, 11)
    loss, err = cb(
        "calculate_criterion",
        posteriors=lp.T,
        orthography=seg.orthography,
        output_error_type="error-signal",
        segment_name=seg.name,
    )
    want_loss, want_err = compute_criterion("ctc", lp, orthography=seg.orthography)
    assert isinstance(loss, float) and loss == pytest.approx(want_loss, rel=1e-6)
    assert err.shape == (11, seg.num_frames) and err.dtype == np.float32 and err.flags.f_contiguous
    np.testing.assert_allclose(err.T, want_err, atol=1e-6)
    # by segment name only: the emulator looks the orthography up in its corpus, as RASR does
    loss2, err2 = cb("calculate_criterion", posteriors=lp.T, segment_name=seg.name, output_error_type="error-signal")
    assert loss2 == loss
    np.testing.assert_array_equal(err2, err)
    # positional arguments, RASR's order: posteriors, orthography, alignment, output_error_type, segment_name
    loss3, _ = cb("calculate_criterion", lp.T, seg.orthography)
    assert loss3 == loss


def test_calculate_criterion_before_softmax_takes_probabilities(cb, corpus):
    seg = corpus.segments[1]
    lp = logpost(seg.num_frames, 11, seed=3)
    l1, e1 = cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography, output_error_type="error-signal")
    l2, e2 = cb(
        "calculate_criterion",
        posteriors=np.exp(lp).T,
        orthography=seg.orthography,
        output_error_type="error-signal-before-softmax",
    )
    assert l2 == pytest.approx(l1, rel=1e-5)
    np.testing.assert_allclose(e2, e1, atol=1e-5)


def test_output_types_none_and_pseudo_targets(cb, corpus):
    seg = corpus.segments[0]
    lp = logpost(seg.num_frames, 11)
    loss, err = cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography, output_error_type="none")
    assert err is None and loss > 0
    loss_default, err_default = cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography)
    assert err_default is None and loss_default == loss
    _, tgt = cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography, output_error_type="pseudo-targets")
    _, err = cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography, output_error_type="error-signal")
    np.testing.assert_allclose(tgt, np.exp(lp).T - err, atol=1e-5)  # error = posteriors - targets
    with pytest.raises(ValueError, match="unknown output_error_type 'grad'"):
        cb("calculate_criterion", posteriors=lp.T, orthography=seg.orthography, output_error_type="grad")


def test_calculate_criterion_argument_checks(cb, corpus):
    seg = corpus.segments[0]
    lp = logpost(seg.num_frames, 11)
    with pytest.raises(TypeError, match=r"callback\(\) argument 3 must be str, not bytes"):
        cb(
            "calculate_criterion",
            posteriors=lp.T,
            orthography=seg.orthography.encode(),
            output_error_type="error-signal",
        )
    with pytest.raises(TypeError, match=r"argument 6 must be str, not bytes"):
        cb("calculate_criterion", posteriors=lp.T, segment_name=seg.name.encode(), output_error_type="error-signal")
    with pytest.raises(TypeError, match="must be str, not None"):
        cb("calculate_criterion", posteriors=lp.T, orthography=None)
    with pytest.raises(TypeError, match="missing required argument 'posteriors'"):
        cb("calculate_criterion", orthography="a")
    with pytest.raises(ValueError, match="not both"):
        cb("calculate_criterion", posteriors=lp.T, orthography="a", alignment=np.zeros(seg.num_frames, np.float32))
    with pytest.raises(KeyError):
        cb("calculate_criterion", posteriors=lp.T, segment_name="unknown/seg", output_error_type="error-signal")


def test_discarded_segment(cb):
    lp = logpost(2, 11)
    assert cb("calculate_criterion", posteriors=lp.T, orthography="abcd", output_error_type="error-signal") == (
        None,
        None,
    )


def test_cross_entropy(corpus):
    cb = Callback(corpus, criterion="cross-entropy")
    seg = corpus.segments[0]
    lp = logpost(seg.num_frames, 31)
    # alignment from the corpus (by segment name), before-softmax = probabilities in
    loss, err = cb(
        "calculate_criterion",
        posteriors=np.exp(lp).T,
        segment_name=seg.name,
        output_error_type="error-signal-before-softmax",
    )
    rows = np.arange(seg.num_frames)
    assert loss == pytest.approx(-lp[rows, seg.alignment].sum(), rel=1e-5)
    onehot = np.zeros_like(lp)
    onehot[rows, seg.alignment] = 1
    np.testing.assert_allclose(err.T, np.exp(lp) - onehot, atol=1e-5)
    # alignment passed in, as a float vector (what RASR accepts)
    loss2, _ = cb(
        "calculate_criterion",
        posteriors=np.exp(lp).T,
        alignment=seg.alignment.astype(np.float32),
        output_error_type="error-signal-before-softmax",
    )
    assert loss2 == pytest.approx(loss, rel=1e-6)


def test_fatal_errors_are_critical(corpus):
    cb = Callback(corpus, criterion="cross-entropy")
    seg = corpus.segments[0]
    lp = logpost(seg.num_frames, 31)
    with pytest.raises(EmulatorFatalError, match="error-signal"):
        cb("calculate_criterion", posteriors=lp.T, segment_name=seg.name, output_error_type="error-signal")
    with pytest.raises(EmulatorFatalError, match="float32/float64"):
        cb(
            "calculate_criterion",
            posteriors=np.exp(lp).T,
            alignment=seg.alignment,  # uint32: fatal in RASR
            output_error_type="error-signal-before-softmax",
        )
    with pytest.raises(EmulatorFatalError, match="2-D"):
        cb("calculate_criterion", posteriors=np.zeros(3, np.float32), orthography="a")
    seen = []

    def handler(msg):
        seen.append(msg)
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        Callback(corpus, criterion="ctc", on_fatal=handler)("calculate_criterion", posteriors=[[0.0]], orthography="a")
    assert "numpy array" in seen[0]
