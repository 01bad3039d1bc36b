"""Automata without a child: the emulator's in-process builder (librasr's API) against an emulator child's own
answer, byte for byte, and ``BuilderAutomata`` over a stand-in with exactly librasr's signatures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sprint_control.errors import ProtocolError
from sprint_control.parent import BuilderAutomata, SprintPool, emulator_command

builder_mod = pytest.importorskip("sprint_control.emulator.builder", reason="the emulator is not in this tree")
from sprint_control.emulator.corpus import synthetic_corpus  # noqa: E402

NUM_SEGMENTS = 5
SEED = 7
CORPUS = synthetic_corpus(NUM_SEGMENTS, seed=SEED, max_frames=40)
BASE_ARGS = [f"--*.corpus.synthetic={NUM_SEGMENTS}", f"--*.corpus.seed={SEED}", "--*.corpus.max-frames=40",
             "--*.log-level=warning"]
NAMES = [s.name for s in CORPUS.segments]


def _same_bytes(a, b):
    """Two builder answers equal in value, dtype and bytes."""
    assert (int(a[0]), int(a[1])) == (int(b[0]), int(b[1]))
    for x, y in zip(a[2:], b[2:]):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


class LibrasrStandIn:
    """Exactly ``librasr.AllophoneStateFsaBuilder``'s surface: the three methods, positional-only names, its
    return values (flat uint32 edges, float32 weights), and nothing else (no pool methods)."""

    def __init__(self, answers: dict, orthographies: dict):
        self._answers, self._orth = answers, orthographies
        self.calls: list[str] = []

    def build_by_segment_name(self, segment_name, /):
        self.calls.append(segment_name)
        return self._answers[segment_name]

    def build_by_orthography(self, orthography, /):
        raise NotImplementedError

    def get_orthography_by_segment_name(self, segment_name, /):
        return self._orth[segment_name]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("criterion", ["ctc", "fsa"])
def test_in_process_builder_equals_the_child_s_export_byte_for_byte(criterion):
    args = BASE_ARGS + [f"--*.training-criterion={criterion}"]
    builder = builder_mod.AllophoneStateFsaBuilder(args)
    with SprintPool(1, emulator_command(), args, timeout=60) as pool:
        inst = pool._get_instance(0)
        child = [inst.export_allophone_state_fsa(name) for name in NAMES]
        pool_batch = pool.get_automata_for_batch(NAMES)
    ours = [builder.build_by_segment_name(name) for name in NAMES]
    for a, b in zip(ours, child):
        _same_bytes(a, b)
    # the batch merge of the in-process answers is the pool's batch automaton
    for x, y in zip(BuilderAutomata(builder).get_automata_for_batch(NAMES), pool_batch):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    # by orthography and the orthography itself, as librasr offers them
    for s in CORPUS.segments:
        assert builder.get_orthography_by_segment_name(s.name) == s.orthography
        _same_bytes(builder.build_by_orthography(s.orthography), builder.build_by_segment_name(s.name))


def test_builder_takes_librasr_configuration_and_pickles(tmp_path):
    config_file = tmp_path / "fsa.config"
    config_file.write_text("[*]\n" + "\n".join(a[4:].replace("=", " = ", 1) for a in BASE_ARGS) + "\n")
    config = builder_mod.Configuration()
    config.set_from_file(str(config_file))
    from_file = builder_mod.AllophoneStateFsaBuilder(config)
    from_args = builder_mod.AllophoneStateFsaBuilder(" ".join(BASE_ARGS))
    copy = pickle.loads(pickle.dumps(from_file))
    for name in NAMES:
        _same_bytes(from_file.build_by_segment_name(name), from_args.build_by_segment_name(name))
        _same_bytes(copy.build_by_segment_name(name), from_args.build_by_segment_name(name))
    with pytest.raises(KeyError, match="no/such/segment"):
        from_args.build_by_segment_name("no/such/segment")
    with pytest.raises(TypeError, match="config must be"):
        builder_mod.AllophoneStateFsaBuilder(42)


def _reference_answers():
    builder = builder_mod.AllophoneStateFsaBuilder(BASE_ARGS)
    return ({n: builder.build_by_segment_name(n) for n in NAMES},
            {s.name: s.orthography for s in CORPUS.segments})


def test_builder_automata_over_a_librasr_stand_in_merges_as_the_pool_does():
    answers, orth = _reference_answers()
    stand_in = LibrasrStandIn(answers, orth)
    source = BuilderAutomata(stand_in)
    tags = [NAMES[3], NAMES[0], NAMES[3]]
    edges, weights, start_end = source.get_automata_for_batch(tags)
    assert stand_in.calls == tags
    # hand-merged: each sequence's states offset by those before it, the sequence index as fourth row
    offset = pos = 0
    for b, tag in enumerate(tags):
        n, e_count, e, w = answers[tag]
        e = e.reshape(3, e_count)
        sl = slice(pos, pos + e_count)
        np.testing.assert_array_equal(edges[:2, sl], e[:2] + offset)
        np.testing.assert_array_equal(edges[2, sl], e[2])
        assert (edges[3, sl] == b).all()
        np.testing.assert_array_equal(weights[sl], w)
        assert tuple(start_end[:, b]) == (offset, offset + n - 1)
        offset, pos = offset + n, pos + e_count
    assert edges.shape == (4, pos) and edges.dtype == np.uint32 and start_end.dtype == np.uint32
    with source.lock:  # RETURNN calls it under pool.lock: re-entrant
        source.get_automata_for_batch(tags[:1])


def test_builder_automata_refuses_bad_builders_and_answers():
    with pytest.raises(TypeError, match="build_by_segment_name"):
        BuilderAutomata(object())
    answers, orth = _reference_answers()
    name = NAMES[0]
    n, e_count, e, w = answers[name]
    bad = {
        "not a tuple": ([n, e_count], "expected \\(num_states"),
        "float edges": ((n, e_count, e.astype(np.float32), w), "3 \\* "),
        "short weights": ((n, e_count, e, w[:-1]), "weights"),
        "edge outside": ((2, e_count, e, w), "outside its 2 states"),
    }
    for answer, message in bad.values():
        source = BuilderAutomata(LibrasrStandIn({name: answer}, orth))
        with pytest.raises(ProtocolError, match=message):
            source.get_automata_for_batch([name])
    with pytest.raises(TypeError, match="sequence of segment names"):
        BuilderAutomata(LibrasrStandIn(answers, orth)).get_automata_for_batch(name)

