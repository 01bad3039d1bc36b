"""The exported allophone-state automata against RASR's rules, derived by hand for small lexica:
edge order (the exporter's topological numbering and its (to - from, to, from) sort), weights (the
legacy and corrected transition-model applicators: loop, forward, skip, exit, entry-m1, tdp.scale,
silence), the topology chosen by the exporter's keys and not by the criterion, keys the emulator
cannot honour (an error naming the key, or a warning the parent logs), and the criteria RASR has
beyond cross-entropy (squared-error, binary-divergence: finite differences), with alignment files."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from sprint_control.emulator import criteria
from sprint_control.emulator.alignments import AlignmentFileError, load_alignments
from sprint_control.emulator.args import parse_args
from sprint_control.emulator.automaton import ExporterConfigError, build_automaton, exporter_config
from sprint_control.emulator.bliss_lexicon import BlissLexicon
from sprint_control.emulator.callback import Callback
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.emulator.host import Host

# inventory order: [SILENCE] (label 0), a (1), b (2) with one state per phone
LEXICON = """<?xml version="1.0" encoding="utf-8"?>
<lexicon>
  <phoneme-inventory>
    <phoneme><symbol>[SILENCE]</symbol></phoneme><phoneme><symbol>a</symbol></phoneme>
    <phoneme><symbol>b</symbol></phoneme>
  </phoneme-inventory>
  <lemma special="silence"><orth>[SILENCE]</orth><orth/><phon>[SILENCE]</phon></lemma>
  <lemma><orth>x</orth><phon>a</phon></lemma>
  <lemma><orth>y</orth><phon>b a</phon></lemma>
  <lemma><orth>v</orth><phon score="0.0">a</phon><phon score="0.0">b</phon></lemma>
  <lemma><orth>w</orth><phon>a b</phon><phon>b</phon></lemma>
</lexicon>
"""
TDPS = ["--*.tdp.*.loop=1", "--*.tdp.*.forward=0.5", "--*.tdp.*.skip=2", "--*.tdp.*.exit=0.25",
        "--*.tdp.silence.loop=0.1", "--*.tdp.silence.forward=3", "--*.tdp.silence.exit=0.2",
        "--*.tdp.entry-m1.forward=0.7", "--*.tdp.entry-m1.skip=4"]


@pytest.fixture
def lexicon_file(tmp_path):
    path = tmp_path / "lexicon.xml"
    path.write_text(LEXICON)
    return str(path)


def _setup(lexicon_file, *extra):
    cfg = parse_args([f"--*.model-combination.lexicon.file={lexicon_file}", "--*.hmm.states-per-phone=1",
                      "--*.hmm.state-repetitions=1", "--*.state-tying.type=monophone", *TDPS, *extra])
    return exporter_config(cfg), BlissLexicon(lexicon_file, states_per_phone=1)


def _edges(fsa):
    return [(int(f), int(t), int(lab), round(float(w), 5))
            for f, t, lab, w in zip(fsa.edges_from, fsa.edges_to, fsa.edges_label, fsa.weights)]


# "x y" = a | b a, with optional silence: states 0 initial, 1 S0, 2 x:a, 3 S1, 4 y:b, 5 y:a, 6 S2, 7 final.
# Legacy applicator: inside a word loop/forward/skip of the state; leaving a word (or a silence) its
# exit cost, then entry-m1's forward into the next word's first state (entry-m1's skip over it; a
# skip never over a word's last state); final weight = exit cost, added on the copies into state 7.
LEGACY_X_Y = [
    (1, 1, 0, 0.1), (2, 2, 1, 1.0), (3, 3, 0, 0.1), (4, 4, 2, 1.0), (5, 5, 1, 1.0), (6, 6, 0, 0.1),
    (0, 1, 0, 0.7), (1, 2, 1, 0.9), (2, 3, 0, 0.95), (3, 4, 2, 0.9), (4, 5, 1, 0.5), (5, 6, 0, 0.95),
    (0, 2, 1, 0.7), (2, 4, 2, 0.95), (3, 5, 1, 4.2),
    (2, 5, 1, 4.25),
    (5, 7, 1, 1.25), (6, 7, 0, 0.3), (4, 7, 1, 0.75), (5, 7, 0, 1.15), (3, 7, 1, 4.45), (2, 7, 1, 4.5),
]


def test_legacy_applicator_order_and_weights_by_hand(lexicon_file):
    ex, lex = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false")
    fsa = build_automaton(ex, lex, "x y")
    assert fsa.num_states == 8
    assert _edges(fsa) == LEGACY_X_Y
    # the silence edges into the next word weigh silence.exit + entry-m1.forward, not silence.forward
    assert (1, 2, 1, 0.9) in _edges(fsa) and (3, 4, 2, 0.9) in _edges(fsa)


def test_corrected_applicator_reads_the_costs_of_the_state_left(lexicon_file):
    ex, lex = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false",
                     "--*.tdp.applicator-type=corrected")
    got = dict(((f, t, lab), w) for f, t, lab, w in _edges(build_automaton(ex, lex, "x y")))
    assert got[(0, 1, 0)] == 0.0 and got[(0, 2, 1)] == 0.0       # leaving the virtual start: free
    assert got[(1, 2, 1)] == 3.2 and got[(3, 4, 2)] == 3.2       # silence.exit + silence.forward
    assert got[(3, 5, 1)] == 2.2                                 # silence.exit + silence.skip
    assert got[(2, 3, 0)] == 0.75 and got[(2, 5, 1)] == 2.25     # a.exit + phone forward / skip


def test_silence_repetitions_merge_a_second_self_loop(lexicon_file):
    """RASR's default lemma acceptor loops on silence: leaving a silence and entering it again is a
    second (from, to, label) edge, which epsilon removal collects with the loop in the graph's
    tropical semiring: min(loop, exit + entry-m1.forward)."""
    ex, lex = _setup(lexicon_file, "--*.tdp.silence.loop=2")
    got = _edges(build_automaton(ex, lex, "x y"))
    merged = 0.9  # min(2, 0.2 + 0.7)
    assert [e for e in got if e[0] == e[1] and e[2] == 0] == [(1, 1, 0, merged), (3, 3, 0, merged),
                                                              (6, 6, 0, merged)]
    assert len(got) == len(LEGACY_X_Y)


def test_scale_repetitions_infinite_skip_and_pronunciation_normalisation(lexicon_file):
    ex, lex = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false",
                     "--*.tdp.scale=2", "--*.tdp.*.skip=infinity", "--*.tdp.entry-m1.skip=infinity")
    got = _edges(build_automaton(ex, lex, "x y"))
    pairs = {(f, t) for f, t, _, _ in got}
    assert (3, 5) not in pairs and (2, 5) not in pairs and len(got) == len(LEGACY_X_Y) - 4  # no skips
    assert (1, 2, 1, 1.8) in got and (2, 2, 1, 2.0) in got       # every cost doubled
    # two repetitions of each phone state (not of silence): "x" = S0? a a S1?
    ex2, lex2 = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false",
                       "--*.hmm.state-repetitions=2")
    fsa = build_automaton(ex2, lex2, "x")
    assert fsa.num_states == 6 and list(fsa.edges_label[:4]) == [0, 1, 1, 0]
    # normalize-pronunciation (RASR's default): two variants of weight 1 each -> -log 0.5 each
    ex3, lex3 = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false")
    got = dict(((f, t, lab), w) for f, t, lab, w in _edges(build_automaton(ex3, lex3, "v")))
    assert got[(0, 2, 1)] == round(0.7 + math.log(2), 5) and got[(0, 3, 2)] == round(0.7 + math.log(2), 5)
    ex4, _ = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false",
                    "--*.normalize-pronunciation=false")
    got = dict(((f, t, lab), w) for f, t, lab, w in _edges(build_automaton(ex4, lex3, "v")))
    assert got[(0, 2, 1)] == 0.7


def test_pronunciations_share_a_common_suffix(lexicon_file):
    """w = "a b" | "b": RASR's lexicon transducer shares the suffix "b", so the state of b is one state;
    entering it directly ("b") and skipping a ("a b") are two equal edges, collected by epsilon removal
    in the tropical semiring (the cheaper one)."""
    ex, lex = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false",
                     "--*.phonology.history-length=0")
    fsa = build_automaton(ex, lex, "w")
    ln2 = math.log(2)  # normalize-pronunciation: two variants of weight 1

    m0, m1 = round(min(4 + ln2, 0.7 + ln2), 5), round(min(0.2 + 4 + ln2, 0.2 + 0.7 + ln2), 5)
    assert fsa.num_states == 6
    assert _edges(fsa) == [
        (1, 1, 0, 0.1), (2, 2, 1, 1.0), (3, 3, 2, 1.0), (4, 4, 0, 0.1),
        (0, 1, 0, 0.7), (1, 2, 1, round(0.9 + ln2, 5)), (2, 3, 2, 0.5), (3, 4, 0, 0.95),
        (0, 2, 1, round(0.7 + ln2, 5)), (1, 3, 2, m1),
        (0, 3, 2, m0),
        (3, 5, 2, 1.25), (4, 5, 0, 0.3), (2, 5, 2, 0.75), (3, 5, 0, 1.15), (1, 5, 2, round(m1 + 0.25, 5)),
        (0, 5, 2, round(m0 + 0.25, 5)),
    ]


def test_a_left_context_keeps_suffix_states_apart(lexicon_file):
    """With RASR's default phonology (history-length 1) b after a and b at the word start are different
    allophones: no state is shared."""
    ex, lex = _setup(lexicon_file, "--*.orthographic-parser.allow-for-silence-repetitions=false")
    fsa = build_automaton(ex, lex, "w")
    assert fsa.num_states == 7  # initial, silence, a, b (after a), b (word start), silence, final
    assert sorted(int(x) for x in fsa.edges_label[:5]) == [0, 0, 1, 2, 2]  # the five loops


def test_full_sum_equals_brute_force_over_the_exported_paths(lexicon_file):
    ex, lex = _setup(lexicon_file)
    fsa = build_automaton(ex, lex, "x y")
    T, L = 5, lex.num_hmm_labels
    rng = np.random.default_rng(3)
    a = rng.standard_normal((T, L))
    lp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
    out = {}
    for f, t, lab, w in zip(fsa.edges_from, fsa.edges_to, fsa.edges_label, fsa.weights):
        out.setdefault(int(f), []).append((int(t), int(lab), float(w)))
    scores = []

    def walk(state, t, score):
        if t == T:
            if state == fsa.num_states - 1:
                scores.append(score)
            return
        for nxt, lab, w in out.get(state, []):
            walk(nxt, t + 1, score + lp[t, lab] - w)

    walk(0, 0, 0.0)
    loss, _ = criteria.compute_criterion("fsa", lp, orthography="x y", lexicon=lex, exporter=ex)
    assert loss == pytest.approx(-np.logaddexp.reduce(scores), abs=1e-5)


def test_topology_from_the_exporter_keys_not_the_criterion(lexicon_file):
    # a config naming no criterion but exporter keys: HMM (RASR); only the ctc criterion without any
    # exporter key keeps the emulator's historic CTC export
    assert exporter_config(parse_args([f"--*.lexicon.file={lexicon_file}"])).topology == "hmm"
    assert exporter_config(parse_args(["--*.corpus.synthetic=2"])).topology == "ctc"
    assert exporter_config(parse_args(["--*.training-criterion=fsa"])).topology == "hmm"
    assert exporter_config(parse_args(["--*.tdp.*.loop=0"])).topology == "hmm"
    cfg = parse_args(["--*.training-criterion=fsa", "--*.alignment-fsa-exporter.allophone-state-graph-builder."
                      "topology=ctc"])
    assert exporter_config(cfg).topology == "ctc"
    corpus = synthetic_corpus(2, seed=0)
    cb = Callback(corpus, criterion="ctc", exporter=exporter_config(parse_args(["--*.hmm.state-repetitions=1"])))
    n, e, edges, _ = cb("export_allophone_state_fsa_by_orthography", "ab")
    assert edges.max() == 30  # HMM labels (30 = silence) although the criterion is ctc


@pytest.mark.parametrize("arg,key", [("--*.state-tying.type=cart", "state-tying.type"),
                                     ("--*.allophone-state-graph-builder.topology=rna", "topology=rna"),
                                     ("--*.tdp.tying-type=cart", "tdp.tying-type"),
                                     ("--*.hmm.across-word-model=true", "hmm.across-word-model"),
                                     ("--*.normalize-lemma-sequence-scores=true", "normalize-lemma-sequence")])
def test_keys_that_would_change_the_automaton_are_errors_naming_the_key(lexicon_file, arg, key):
    if "normalize-lemma" in arg:
        arg = "--*.orthographic-parser.normalize-lemma-sequence-scores=true"
    with pytest.raises(ExporterConfigError, match=key):
        exporter_config(parse_args([f"--*.lexicon.file={lexicon_file}", arg]))


def test_unhonoured_keys_warn_and_the_warning_reaches_the_parent_log(lexicon_file, caplog):
    ex = exporter_config(parse_args([f"--*.lexicon.file={lexicon_file}", "--*.hmm.across-word-model=true",
                                     "--*.phonology.history-length=0", "--*.phonology.future-length=0"]))
    assert [w.split(" ")[0] for w in ex.warnings] == ["state-tying.type"]  # across-word without context: honoured
    from sprint_control.parent.output import OutputDrain

    drain = OutputDrain(-1, "sprint[1]", 10, echo=False)
    with caplog.at_level(logging.WARNING, logger="sprint_control.parent.child"):
        drain.feed(b"[emulator] ignoring unknown option --*.foo\n[emulator] warning: state-tying.type is not given\n")
        drain.feed(b'<warning component="x">Changing loop probability</warning>\n')
    assert [r.getMessage() for r in caplog.records] == [
        "sprint[1]: [emulator] warning: state-tying.type is not given",
        'sprint[1]: <warning component="x">Changing loop probability</warning>']


# -- criteria ------------------------------------------------------------------------------------
def _fd_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        d = np.zeros_like(a)
        d[idx] = eps
        g[idx] = (f(a + d) - f(a - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("crit", ["squared-error", "binary-divergence"])
def test_squared_error_and_binary_divergence_by_finite_differences(crit):
    rng = np.random.default_rng(1)
    T, L = 4, 5
    a = rng.standard_normal((T, L))
    align = np.array([0, 3, 3, 1])

    def lp_of(x):
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    def loss_of(x):  # RASR's objective, written out independently
        y = np.exp(lp_of(x))
        d = np.eye(L)[align]
        if crit == "squared-error":
            return float(((y - d) ** 2).sum())
        return float(-(d * np.log(y) + (1 - d) * np.log(1 - y)).sum())

    loss, err = criteria.compute_criterion(crit, lp_of(a), alignment=align)
    assert loss == pytest.approx(loss_of(a), rel=1e-9)
    grad = _fd_grad(loss_of, a)
    want = grad / 2 if crit == "squared-error" else grad  # RASR's squared-error signal is half the gradient
    np.testing.assert_allclose(err, want, atol=1e-5)


def test_alignment_criteria_through_the_callback(tmp_path):
    corpus = synthetic_corpus(2, seed=0, min_frames=5, max_frames=8)
    seg = corpus.segments[0]
    path = tmp_path / "align.txt"
    labels = np.arange(seg.num_frames) % 31
    path.write_text(f"# name<TAB>labels\n{seg.name}\t{' '.join(map(str, labels))}\nnot/in/corpus\t1 2\n")
    table = load_alignments(str(path), corpus, 31)
    np.testing.assert_array_equal(table[seg.name], labels)
    cb = Callback(corpus, criterion="squared-error", alignments=table)
    post = np.full((31, seg.num_frames), 1 / 31, dtype=np.float32)
    loss, err = cb("calculate_criterion", post, output_error_type="error-signal-before-softmax",
                   segment_name=seg.name)
    assert loss == pytest.approx(seg.num_frames * ((1 - 1 / 31) ** 2 + 30 / 31 ** 2), rel=1e-5)
    assert err.shape == (31, seg.num_frames)
    assert cb("calculate_criterion", post, output_error_type="pseudo-targets", segment_name=seg.name)[1] is None
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{seg.name}\t1 2\n")
    with pytest.raises(AlignmentFileError, match=f"segment '{seg.name}'.*2 frames"):
        load_alignments(str(bad), corpus, 31)
    cb2 = Callback(corpus, criterion="cross-entropy")
    with pytest.raises(ValueError, match=f"segment '{corpus.segments[1].name}'"):
        cb2("calculate_criterion", np.zeros((31, 3), np.float32), output_error_type="none",
            segment_name=corpus.segments[1].name)


def test_host_reads_the_alignment_file(tmp_path):
    corpus = synthetic_corpus(1, seed=0, min_frames=4, max_frames=4)
    path = tmp_path / "a.npz"
    np.savez(path, **{corpus.segments[0].name: np.zeros(4, dtype=np.int32)})
    host = Host(parse_args(["--*.corpus.synthetic=1", "--*.corpus.min-frames=4", "--*.corpus.max-frames=4",
                            "--*.training-criterion=binary-divergence", f"--*.corpus.alignment-file={path}"]),
                on_fatal=lambda m: (_ for _ in ()).throw(AssertionError(m)))
    np.testing.assert_array_equal(host.alignments[corpus.segments[0].name], np.zeros(4))


def test_a_pool_user_sees_the_childs_warning_without_echo_output(lexicon_file, caplog, no_leaks):
    from sprint_control import SprintPool

    with caplog.at_level(logging.WARNING, logger="sprint_control.parent.child"):
        with SprintPool(1, sprint_args=[f"--*.lexicon.file={lexicon_file}", "--*.hmm.states-per-phone=1"],
                        timeout=60):
            pass  # the child warns at start-up, before its module is loaded
    assert any("state-tying.type is not given" in r.getMessage() for r in caplog.records)


def test_unread_export_keys_warn_and_bad_values_are_critical(lexicon_file, run_emulator):
    run = run_emulator(f"--*.lexicon.file={lexicon_file}", "--*.state-tying.type=monophone",
                       "--*.acoustic-model.tdp.nonword-phones=[NOISE]", "--*.lm.file=x")
    assert run.returncode == 0, run.stderr
    assert ("[emulator] warning: ignoring option --*.acoustic-model.tdp.nonword-phones: a RASR key of the "
            "automaton export the emulator does not read") in run.stderr
    assert "[emulator] ignoring unknown option --*.lm.file" in run.stderr  # not about the automaton
    bad = run_emulator(f"--*.lexicon.file={lexicon_file}", "--*.state-tying.type=cart")
    assert bad.returncode == 1
    assert "critical error: state-tying.type=cart" in bad.stderr
