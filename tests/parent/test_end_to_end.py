"""The parent driving real children: the bundled RASR emulator with this package's Sprint-side module
(both flows RASR offers: python-control-loop and iterate-corpus + python segment order), and with
RETURNN's child module ``returnn.sprint.control``. Results are checked against the emulator's
criterion computed in this process on the same posteriors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from support import extra_reason

from sprint_control import SprintChildError, SprintPool, SprintRemoteError
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus  # noqa: E402
from sprint_control.parent import SprintSubprocessInstance, emulator_command

pytestmark = pytest.mark.usefixtures("no_leaks")

NUM_SEGMENTS = 12
SEED = 5
CORPUS = synthetic_corpus(NUM_SEGMENTS, seed=SEED, max_frames=60)
EMULATOR_ARGS = [f"--*.corpus.synthetic={NUM_SEGMENTS}", f"--*.corpus.seed={SEED}", "--*.corpus.max-frames=60",
                 "--*.log-level=warning"]
FLOWS = {
    "control-loop": ["--*.python-control-loop-type=python-control-loop"],
    "iterate-corpus": ["--*.python-control-loop-type=iterate-corpus", "--*.extract-features=false"],
}


def _log_softmax(a):
    a = a - a.max(axis=-1, keepdims=True)
    return (a - np.log(np.exp(a).sum(axis=-1, keepdims=True))).astype(np.float32)


def _batch(segs, labels, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([s.num_frames for s in segs])
    x = _log_softmax(rng.standard_normal((lengths.max() + 3, len(segs), labels)))
    return x, lengths, [s.name for s in segs]


def _direct(criterion, x, lengths, segs):
    loss = np.zeros(len(segs), np.float32)
    err = np.zeros_like(x)
    for b, s in enumerate(segs):
        t = int(lengths[b])
        l, e = criteria.compute_criterion(criterion, x[:t, b], orthography=s.orthography)
        if l is None:
            loss[b] = np.inf
        else:
            loss[b], err[:t, b] = l, e
    return loss, err


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("num_instances", [1, 3])
def test_pool_over_the_emulator_equals_direct_criterion(flow, protocol, num_instances):
    criterion = "ctc"
    if flow == "iterate-corpus" and num_instances == 3 and protocol == 1:
        criterion = "fsa"  # one more criterion, without growing the matrix
    labels = criteria.num_labels(criterion)
    segs = CORPUS.segments[:7]
    x, lengths, tags = _batch(segs, labels, seed=num_instances + protocol)
    args = EMULATOR_ARGS + FLOWS[flow] + [f"--*.training-criterion={criterion}"]
    with SprintPool(num_instances, sprint_args=args, protocol=protocol, timeout=60) as pool:
        assert pool.protocol == protocol
        res = pool.compute(x, lengths, tags)
        # a second batch on the same children (other segments, other order)
        segs2 = CORPUS.segments[7:][::-1]
        x2, lengths2, tags2 = _batch(segs2, labels, seed=9)
        res2 = pool.compute(x2, lengths2, tags2)
    exp_loss, exp_err = _direct(criterion, x, lengths, segs)
    np.testing.assert_allclose(res.loss, exp_loss, rtol=1e-5)
    np.testing.assert_allclose(res.error_signal, exp_err, atol=1e-6)
    assert not res.skipped.any()
    exp_loss2, exp_err2 = _direct(criterion, x2, lengths2, segs2)
    np.testing.assert_allclose(res2.loss, exp_loss2, rtol=1e-5)
    np.testing.assert_allclose(res2.error_signal, exp_err2, atol=1e-6)


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_discarded_segment_is_skipped(flow):
    """Two frames cannot carry an orthography of several symbols: Sprint discards the segment."""
    seg = next(s for s in CORPUS.segments if len(s.orthography.replace(" ", "")) >= 3)
    labels = criteria.num_labels("ctc")
    x = _log_softmax(np.random.default_rng(0).standard_normal((30, 2, labels)))
    ok = CORPUS.segments[0]
    with SprintPool(1, sprint_args=EMULATOR_ARGS + FLOWS[flow] + ["--*.training-criterion=ctc"], timeout=60) as p:
        res = p.compute(x, [2, 30], [seg.name, ok.name])
    assert res.skipped.tolist() == [True, False]
    assert not res.error_signal[:, 0].any()
    assert res.loss[1] == pytest.approx(criteria.compute_criterion("ctc", x[:30, 1], orthography=ok.orthography)[0],
                                        rel=1e-5)


@pytest.mark.parametrize("protocol", [1, 2])
def test_automata_for_batch_from_the_emulator(protocol):
    segs = CORPUS.segments[:4]
    with SprintPool(2, sprint_args=EMULATOR_ARGS + ["--*.training-criterion=fsa"], protocol=protocol,
                    timeout=60) as pool:
        a = pool.automata([s.name for s in segs])
    offset = 0
    for b, s in enumerate(segs):
        ref = criteria.automaton("fsa", s.orthography)
        mine = a.edges[3] == b
        assert a.start_end_states[:, b].tolist() == [offset, offset + ref.num_states - 1]
        np.testing.assert_array_equal(a.edges[0, mine], ref.edges_from + offset)
        np.testing.assert_array_equal(a.edges[1, mine], ref.edges_to + offset)
        np.testing.assert_array_equal(a.edges[2, mine], ref.edges_label)
        np.testing.assert_allclose(a.weights[mine], ref.weights)
        offset += ref.num_states
    assert a.num_states == offset


def test_unknown_segment_is_a_remote_error_and_the_child_lives_on():
    labels = criteria.num_labels("ctc")
    with SprintPool(1, sprint_args=EMULATOR_ARGS, timeout=60) as pool:
        x = _log_softmax(np.zeros((5, 1, labels)))
        with pytest.raises(SprintRemoteError, match="no/such/segment"):
            pool.compute(x, [5], ["no/such/segment"])
        assert pool.instances[0].alive
        res = pool.compute(x, [5], [CORPUS.segments[0].name])
        assert np.isfinite(res.loss[0]) or res.skipped[0]


# ---------------------------------------------------------------------------------------------
# RETURNN's child module


def _returnn_path():
    returnn = pytest.importorskip("returnn", reason=extra_reason("returnn"))
    return os.path.dirname(os.path.dirname(os.path.abspath(returnn.__file__)))


def _returnn_child(extra):
    return SprintSubprocessInstance(
        emulator_command(), sprintConfigStr=EMULATOR_ARGS + extra, module_name="returnn.sprint.control",
        module_path=_returnn_path(), timeout=60, start_timeout=120,
    )


def test_our_parent_drives_returnns_child_for_automata():
    """RASR's use (i): python-control-loop, automata by segment name. RETURNN's child stays on v1 and
    answers with arrays pickled as ``make_numpy_ndarray_fromstring``, which our reader maps."""
    inst = _returnn_child(["--*.training-criterion=ctc"])
    try:
        assert inst.protocol == 1
        for s in CORPUS.segments[:3]:
            num_states, num_edges, edges, weights = inst.export_allophone_state_fsa(s.name)
            ref = criteria.automaton("ctc", s.orthography)
            assert (num_states, num_edges) == (ref.num_states, ref.num_edges)
            np.testing.assert_array_equal(edges, np.concatenate([ref.edges_from, ref.edges_to, ref.edges_label]))
            np.testing.assert_allclose(weights, ref.weights)
        # RETURNN's child forwards loss requests to RASR's callback, which has no such command:
        # reported as a remote error, and the link stays usable
        with pytest.raises(SprintRemoteError, match="get_loss_and_error_signal"):
            inst.get_loss_and_error_signal(CORPUS.segments[0].name, np.zeros((4, 11), np.float32))
        assert inst.export_allophone_state_fsa(CORPUS.segments[0].name)[0] == \
            criteria.automaton("ctc", CORPUS.segments[0].orthography).num_states
    finally:
        inst.close()


def test_returnns_child_in_flow_a_fails_on_the_bytes_orthography_and_we_say_so():
    """Flow A with RETURNN's child: it hands RASR's orthography (bytes) on to ``calculate_criterion``,
    which RASR (and the emulator) refuse with TypeError, a fatal error that ends the child. The parent
    reports the death with the child's exit status and the TypeError from its output."""
    inst = _returnn_child(["--*.training-criterion=ctc"] + FLOWS["iterate-corpus"])
    try:
        assert inst.protocol == 1
        seg = CORPUS.segments[0]
        x = _log_softmax(np.zeros((seg.num_frames, criteria.num_labels("ctc"))))
        with pytest.raises(SprintChildError) as info:
            inst.get_loss_and_error_signal(seg.name, x)
        assert info.value.returncode not in (None, 0)
        assert "must be str, not bytes" in info.value.stderr_tail
    finally:
        inst.close()
