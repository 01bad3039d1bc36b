"""``WeightedFsa`` in and out: automata_for_batch hands one out, fullsum_loss and fullsum_viterbi take every
automaton form, the conversion shares tensors already in their dtype; with i6_models installed, its
``RasrFsaBuilder`` over a builder object and our pool of emulator children give the same batch and losses."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')

from torch_testlib import FakePool, ctc_automaton, labels_from_name  # noqa: E402

from sprint_control.torch import (  # noqa: E402
    AutomataCache,
    WeightedFsa,
    as_weighted_fsa,
    automata_for_batch,
    fullsum_loss,
    fullsum_viterbi,
    weighted_fsa_type,
)
from sprint_control.torch import weighted_fsa as wf_module  # noqa: E402

TAGS = ["seg-1-2-2", "seg-3", "seg-2-1", "seg-4-4"]
NUM_LABELS = 6


def _weighted_automaton(name):
    """CTC topology with distinct weights per segment (blank 0), so mixed-up edges or weights show."""
    n, e, w = ctc_automaton(labels_from_name(name))
    return n, e, np.random.default_rng(sum(map(ord, name))).uniform(0, 3, size=w.shape).astype(np.float32)


def _pool():
    return FakePool(automaton=_weighted_automaton)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([12, 9, 10, 11])
    return torch.randn(12, len(TAGS), NUM_LABELS, generator=g, dtype=torch.float64).log_softmax(-1), lens


@pytest.fixture(params=["i6_models", "fallback"])
def fsa_type(request, monkeypatch):
    """The WeightedFsa class automata_for_batch hands out: i6_models' (skipped without it) or ours."""
    if request.param == "i6_models":
        rasr_fsa = pytest.importorskip("i6_models.parts.rasr_fsa",
                                       reason='needs the i6 extra: pip install "sprint_control[i6]"')
        cls = rasr_fsa.WeightedFsa
    else:
        cls = WeightedFsa
    monkeypatch.setattr(wf_module, "_i6_type", cls)
    return cls


def test_automata_for_batch_hands_out_a_weighted_fsa(fsa_type):
    ref = automata_for_batch(TAGS, _pool())
    fsa = automata_for_batch(TAGS, _pool(), weighted_fsa=True)
    assert type(fsa) is fsa_type and weighted_fsa_type() is fsa_type
    assert fsa.edges.dtype == torch.int32 and fsa.start_end_states.dtype == torch.int32  # i6_models' dtypes
    assert fsa.weights.dtype == torch.float32
    assert fsa.num_states.dim() == 0 and int(fsa.num_states) == ref.num_states
    assert torch.equal(fsa.edges.long(), ref.edges) and torch.equal(fsa.weights, ref.weights)
    assert torch.equal(fsa.start_end_states.long(), ref.start_end_states)
    # the number of states, counted by hand from the per-segment automata
    assert int(fsa.num_states) == sum(_weighted_automaton(t)[0] for t in TAGS)
    # cached and int64 on request
    cached = automata_for_batch(TAGS, _pool(), weighted_fsa=True, cache=AutomataCache(), index_dtype=torch.int64)
    assert cached.edges.dtype == torch.int64 and torch.equal(cached.edges, ref.edges)
    # i6_models' own methods work on what we hand out
    scaled = fsa * 0.5
    assert torch.allclose(scaled.weights, ref.weights * 0.5) and type(scaled) is fsa_type
    assert type(fsa.to("cpu")) is fsa_type


def test_fallback_is_structurally_i6_models_weighted_fsa():
    rasr_fsa = pytest.importorskip("i6_models.parts.rasr_fsa", reason='needs the i6 extra: pip install '
                                   '"sprint_control[i6]"')
    assert WeightedFsa._fields == rasr_fsa.WeightedFsa._fields
    ref = automata_for_batch(TAGS, _pool())
    ours, theirs = as_weighted_fsa(ref, cls=WeightedFsa), as_weighted_fsa(ref, cls=rasr_fsa.WeightedFsa)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b) and a.dtype == b.dtype


@pytest.mark.parametrize("form", ["arrays", "automaton", "weighted_fsa", "fallback_fsa", "tuple3", "tuple4",
                                  "numpy_tuple3"])
def test_fullsum_and_viterbi_take_every_automaton_form(form):
    aut = automata_for_batch(TAGS, _pool())
    log_probs, lens = _inputs()
    expected = fullsum_loss(log_probs, lens, aut.edges, aut.weights, aut.start_end_states)
    expected_path = fullsum_viterbi(log_probs, lens, aut.edges, aut.weights, aut.start_end_states)
    forms = {
        "automaton": aut,
        "weighted_fsa": as_weighted_fsa(aut),
        "fallback_fsa": as_weighted_fsa(aut, cls=WeightedFsa),
        "tuple3": (aut.edges, aut.weights, aut.start_end_states),
        "tuple4": tuple(as_weighted_fsa(aut)),
        "numpy_tuple3": _pool().get_automata_for_batch(TAGS),
    }
    args = (aut.edges, aut.weights, aut.start_end_states) if form == "arrays" else (forms[form],)
    x = log_probs.clone().requires_grad_()
    loss = fullsum_loss(x, lens, *args)
    assert torch.equal(loss, expected)
    loss.sum().backward()
    x_ref = log_probs.clone().requires_grad_()
    fullsum_loss(x_ref, lens, aut.edges, aut.weights, aut.start_end_states).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    got = fullsum_viterbi(log_probs, lens, *args)
    for a, b in zip(got, expected_path):
        assert torch.equal(a, b)


def test_the_automaton_argument_refuses_half_given_and_foreign_forms():
    aut = automata_for_batch(TAGS, _pool())
    log_probs, lens = _inputs()
    with pytest.raises(TypeError, match="give edges, weights and start_end_states"):
        fullsum_loss(log_probs, lens, aut.edges, aut.weights)
    with pytest.raises(TypeError, match="fullsum_viterbi: expected an automaton"):
        fullsum_viterbi(log_probs, lens, {"edges": aut.edges})
    with pytest.raises(ValueError, match="start_end_states must have shape"):  # i6_models' (N, 2) is not ours
        bad = as_weighted_fsa(aut)
        fullsum_loss(log_probs, lens, bad._replace(start_end_states=bad.start_end_states.T.contiguous()))


def test_the_conversion_shares_tensors_already_in_their_dtype():
    aut32 = automata_for_batch(TAGS, _pool(), index_dtype=torch.int32)
    fsa = as_weighted_fsa(aut32)
    assert fsa.edges.data_ptr() == aut32.edges.data_ptr()
    assert fsa.weights.data_ptr() == aut32.weights.data_ptr()
    assert fsa.start_end_states.data_ptr() == aut32.start_end_states.data_ptr()
    aut64 = automata_for_batch(TAGS, _pool())
    fsa64 = aut64.to_weighted_fsa()
    assert fsa64.edges.dtype == torch.int32 and fsa64.edges.data_ptr() != aut64.edges.data_ptr()
    assert torch.equal(fsa64.edges.long(), aut64.edges)
    assert aut64.to_weighted_fsa(torch.int64).edges.data_ptr() == aut64.edges.data_ptr()


def test_i6_models_builder_and_our_pool_give_the_same_batch_and_losses():
    rasr_fsa = pytest.importorskip("i6_models.parts.rasr_fsa", reason='needs the i6 extra: pip install '
                                   '"sprint_control[i6]"')
    from sprint_control.emulator.builder import AllophoneStateFsaBuilder
    from sprint_control.emulator.corpus import synthetic_corpus
    from sprint_control.parent import SprintPool, emulator_command

    args = ["--*.corpus.synthetic=4", "--*.corpus.seed=2", "--*.corpus.max-frames=30", "--*.training-criterion=fsa",
            "--*.log-level=warning"]
    corpus = synthetic_corpus(4, seed=2, max_frames=30)
    tags = [s.name for s in corpus.segments][::-1]

    class EmulatorRasrFsaBuilder(rasr_fsa.RasrFsaBuilder):
        """i6_models' builder with its librasr builder replaced by the emulator's, from the same options."""

        def get_builder(self, config_path):
            return AllophoneStateFsaBuilder(config_path)

    i6_fsa = EmulatorRasrFsaBuilder(args).build_batch(tags)
    with SprintPool(2, emulator_command(), args, timeout=60) as pool:
        ours = automata_for_batch(tags, pool, weighted_fsa=True)
    assert type(ours) is type(i6_fsa)
    for a, b in zip(ours, i6_fsa):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    lens = torch.tensor([s.num_frames for s in corpus.segments][::-1])
    g = torch.Generator().manual_seed(1)
    labels = int(ours.edges[2].max()) + 1
    log_probs = torch.randn(int(lens.max()), len(tags), labels, generator=g).log_softmax(-1)
    assert torch.equal(fullsum_loss(log_probs, lens, ours), fullsum_loss(log_probs, lens, i6_fsa))
    assert torch.isfinite(fullsum_loss(log_probs, lens, ours)).all()


class LibrasrStandIn:
    """Exactly librasr's builder surface: build_by_segment_name returns (num_states, num_edges, flat uint32
    edges, float32 weights); nothing of a pool."""

    def __init__(self):
        self.calls = []

    def build_by_segment_name(self, segment_name, /):
        self.calls.append(segment_name)
        n, e, w = _weighted_automaton(segment_name)
        return n, e.shape[1], np.ascontiguousarray(e, dtype=np.uint32).reshape(-1), w

    def build_by_orthography(self, orthography, /):
        raise NotImplementedError

    def get_orthography_by_segment_name(self, segment_name, /):
        return segment_name


def test_automata_for_batch_over_a_librasr_builder_is_the_pool_s_batch_and_caches():
    builder, cache = LibrasrStandIn(), AutomataCache()
    tags = TAGS + TAGS[:2]
    ref = automata_for_batch(tags, _pool())
    got = automata_for_batch(tags, builder, cache=cache)
    assert builder.calls == TAGS  # each segment built once, in order
    for a, b in zip(got, ref):
        assert torch.equal(a, b) and a.dtype == b.dtype
    again = automata_for_batch(tags[::-1], builder, cache=cache, weighted_fsa=True)
    assert builder.calls == TAGS and (cache.misses, cache.hits) == (len(tags), len(tags))
    assert torch.equal(again.edges.long(), automata_for_batch(tags[::-1], _pool()).edges)
    with pytest.raises(TypeError, match="build_by_segment_name"):
        automata_for_batch(TAGS, object())


def test_i6_models_builder_runs_unchanged_on_the_emulator_module_as_librasr(tmp_path, monkeypatch):
    """i6_models' RasrFsaBuilder(config_path) imports librasr itself: with the emulator's builder module in its
    place, a RASR config file gives the same batch as our automata_for_batch over that module's builder."""
    rasr_fsa = pytest.importorskip("i6_models.parts.rasr_fsa", reason='needs the i6 extra: pip install '
                                   '"sprint_control[i6]"')
    import sys

    from sprint_control.emulator import builder as emulator_librasr

    config = tmp_path / "fsa-exporter.config"
    config.write_text("[*]\ncorpus.synthetic = 3\ncorpus.seed = 9\ntraining-criterion = fsa\n")
    monkeypatch.setitem(sys.modules, "librasr", emulator_librasr)
    i6_builder = rasr_fsa.RasrFsaBuilder(str(config), tdp_scale=1.0)
    ours = emulator_librasr.AllophoneStateFsaBuilder(["--*.corpus.synthetic=3", "--*.corpus.seed=9",
                                                     "--*.training-criterion=fsa"])
    tags = ours.segment_names
    for a, b in zip(i6_builder.build_batch(tags), automata_for_batch(tags, ours, weighted_fsa=True)):
        assert a.dtype == b.dtype and torch.equal(a, b)
