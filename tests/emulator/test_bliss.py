"""The emulator on RASR's Bliss XML files: corpora (names, nesting, includes, gzip, segment lists),
lexica (inventory, lemmas, special lemmas, monophone labels), the automata built from pronunciations
(full-sum loss = brute force over the exported automaton's paths), RASR's config keys (also from a
``--config`` file), and one-line errors that name the file and line."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from sprint_control.emulator import criteria
from sprint_control.emulator.args import parse_args
from sprint_control.emulator.automaton import build_automaton, exporter_config
from sprint_control.emulator.bliss import BlissError, read_bliss_corpus
from sprint_control.emulator.bliss_lexicon import BlissLexicon
from sprint_control.emulator.callback import Callback
from sprint_control.emulator.corpus import load_corpus
from sprint_control.emulator.host import Host
from sprint_control.emulator.lexicon import Lexicon

LEXICON = """<?xml version="1.0" encoding="utf-8"?>
<lexicon>
  <phoneme-inventory>
    <phoneme><symbol>a</symbol><variation>context</variation></phoneme>
    <phoneme><symbol>[SILENCE]</symbol><variation>none</variation></phoneme>
    <phoneme><symbol>b</symbol></phoneme>
    <phoneme><symbol>c</symbol></phoneme>
  </phoneme-inventory>
  <lemma special="silence"><orth>[SILENCE]</orth><phon>[SILENCE]</phon></lemma>
  <lemma special="unknown"><orth>[UNKNOWN]</orth><phon>c</phon></lemma>
  <lemma special="sentence-begin"><orth>[SENTENCE-BEGIN]</orth><synt><tok>&lt;s&gt;</tok></synt></lemma>
  <lemma special="sentence-end"><orth>[SENTENCE-END]</orth></lemma>
  <lemma><orth>ab</orth><orth>AB</orth><phon score="0.0">a b</phon><phon score="0.5">b</phon></lemma>
  <lemma><orth>c</orth><phon>c</phon></lemma>
  <lemma><orth>new york</orth><phon>a c</phon></lemma>
  <lemma><orth>new</orth><phon>b</phon></lemma>
</lexicon>
"""

CORPUS = """<?xml version="1.0" encoding="utf-8"?>
<corpus name="train">
  <speaker-description name="spk7" gender="female"/>
  <recording name="rec1" audio="rec1.wav">
    <segment name="s1" start="0.0" end="0.25"><orth> ab   c </orth></segment>
    <segment start="1.0" end="1.1"><speaker name="spk7"/><orth>c</orth></segment>
  </recording>
  <subcorpus name="dev">
    <recording name="rec2"><speaker name="spk7"/><segment name="x" start="2" end="2.3"><orth>AB</orth></segment>
    </recording>
    <include file="part.xml"/>
  </subcorpus>
</corpus>
"""

PART = """<corpus name="ignored-part-name">
  <recording name="rec3"><segment name="y" start="0" end="0.12"><orth>new york c</orth></segment></recording>
</corpus>
"""

NAMES = ["train/rec1/s1", "train/rec1/2", "train/dev/rec2/x", "train/dev/rec3/y"]


@pytest.fixture
def files(tmp_path: Path) -> dict:
    (tmp_path / "lexicon.xml").write_text(LEXICON)
    (tmp_path / "corpus.xml").write_text(CORPUS)
    (tmp_path / "part.xml").write_text(PART)
    with gzip.open(tmp_path / "corpus.xml.gz", "wt") as f:
        f.write(CORPUS)
    return {k: str(tmp_path / k) for k in ("lexicon.xml", "corpus.xml", "part.xml", "corpus.xml.gz")}


# ---------------------------------------------------------------------------------------------
# corpora


def test_corpus_names_frames_and_nesting_as_rasr_forms_them(files):
    name, segs = read_bliss_corpus(files["corpus.xml"])
    assert name == "train"
    assert [s["name"] for s in segs] == NAMES
    assert [s["num_frames"] for s in segs] == [25, 10, 30, 12]
    assert [s["orth"] for s in segs] == ["ab c", "c", "AB", "new york c"]
    # a segment's own speaker, else its recording's (RASR's default speaker of the recording)
    assert [s["speaker"] for s in segs] == [None, "spk7", "spk7", None]


def test_gzipped_corpus_through_load_corpus(files):
    lex = BlissLexicon(files["lexicon.xml"], states_per_phone=2)
    plain = load_corpus(files["corpus.xml"], lexicon=lex)
    gz = load_corpus(files["corpus.xml.gz"], lexicon=lex)
    assert gz.name == "train" and gz.names == NAMES == plain.names
    for a, b in zip(plain, gz):
        assert a.num_frames == b.num_frames and a.orthography == b.orthography
        assert a.features.shape == (a.num_frames, plain.feature_dim)


@pytest.mark.parametrize("text,line,what", [
    ('<corpus name="c">\n<recording name="r">\n<segment start="0" end="1"><orth>a</orth>\n</recording>\n</corpus>',
     4, "malformed XML: mismatched tag"),
    ('<corpus name="c">\n<recording name="r">\n\n<segment start="0"><orth>a</orth></segment>\n</recording></corpus>',
     4, "<segment> needs a end attribute"),
    ('<corpus>\n</corpus>', 1, "<corpus> needs a name attribute"),
    ('<corpus name="c">\n <include file="nowhere.xml"/></corpus>', 2, "included file 'nowhere.xml' not found"),
    ('<corpus name="c"><recording name="r">\n<segment name="1" start="0" end="1"/>\n'
     '<segment name="1" start="1" end="2"/></recording></corpus>', 3, "duplicate segment name 'c/r/1'"),
])
def test_corpus_errors_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: ") and what in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# lexica


def test_lexicon_labels_follow_monophone_tying(files):
    lex = BlissLexicon(files["lexicon.xml"], states_per_phone=3)
    # RASR's monophone tying: the inventory in order (a, [SILENCE], b, c), silence one state
    assert lex.hmm_labels("[SILENCE]") == [3]
    assert lex.hmm_labels("a") == [0, 1, 2] and lex.hmm_labels("b") == [4, 5, 6] and lex.hmm_labels("c") == [7, 8, 9]
    assert lex.num_hmm_labels == 10 == criteria.num_labels("fsa", lex)
    assert lex.num_ctc_labels == 4 == criteria.num_labels("ctc", lex)


def test_orthography_lookup_longest_match_and_unknown(files):
    lex = BlissLexicon(files["lexicon.xml"])
    orths = [lm.orths[0] for lm in lex.lemmas_of("AB new york new zzz c")]
    assert orths == ["ab", "new york", "new", "[UNKNOWN]", "c"]
    assert lex.special["sentence-begin"].pronunciations == []


@pytest.mark.parametrize("lexicon,line,what", [
    (LEXICON.replace('<lemma><orth>c</orth>', '<lemma><orth>c</orth\n>'), 14, None),
    (LEXICON.replace('score="0.5"', 'score="high"'), 13, "<phon score='high'> is not a number"),
    (LEXICON.replace('score="0.5"', 'score="0.5" weight="0.3"'), 13,
     "not possible to set both, pronunciation weight and score"),
    (LEXICON.replace("<variation>none</variation>", "<variation>some</variation>"), 5,
     'variation must be one of "none" or "context", "some" given'),
    (LEXICON.replace("<symbol>c</symbol>", "<symbol>b</symbol>"), 7, 'Phonetic symbol "b" already assigned'),
])
def test_lexicon_errors_name_file_and_line(tmp_path, lexicon, line, what):
    path = tmp_path / "lex.xml"
    path.write_text(lexicon)
    if what is None:  # still well-formed: no error
        BlissLexicon(str(path))
        return
    with pytest.raises(BlissError) as exc:
        BlissLexicon(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: ") and what in msg and "\n" not in msg


def test_rasr_non_fatal_lexicon_errors_are_logged_and_reading_goes_on(tmp_path, caplog):
    """RASR logs these and loads the lexicon: a pronunciation with a phoneme outside the inventory and a
    duplicate pronunciation are dropped, a second special lemma of one name stays ordinary, a lemma
    without <orth> is skipped; any special name is taken."""
    text = (LEXICON.replace("<phon>a c</phon>", "<phon>a x c</phon><phon>b</phon><phon>b</phon>")
            .replace('special="sentence-end"', 'special="blank"')
            .replace('<lemma><orth>new</orth>', '<lemma special="silence"><orth>new</orth>')
            .replace("</lexicon>", "<lemma><phon>a</phon></lemma>\n</lexicon>"))
    path = tmp_path / "lex.xml"
    path.write_text(text)
    lex = BlissLexicon(str(path), cache=None)
    york = lex.lemma_by_orth("new york")
    assert york.pronunciations == [(("b",), 0.0)]
    assert lex.special["blank"].orths == ["[SENTENCE-END]"]
    assert lex.special["silence"].orths == ["[SILENCE]"] and lex.lemma_by_orth("new").special is None
    assert len(lex.lemmas) == 8  # the lemma without <orth> is not one
    logged = caplog.text
    assert f'{path}:15: Could not create pronunciation for a x c: Unknown phoneme: "x"' in logged
    assert f"{path}:15: duplicate pronunciation" in logged
    assert f'{path}:16: Special lemma "silence" already defined' in logged
    assert f"{path}:17: Lemma without orthographic form" in logged


def test_phon_weight_and_score_follow_rasr(tmp_path):
    """score s -> s; weight w -> -log w; neither -> 0 (weight 1); a weight of 0 or below -> an
    impossible pronunciation (RASR takes a negative weight as 0, with an error)."""
    text = LEXICON.replace('<phon score="0.0">a b</phon><phon score="0.5">b</phon>',
                           '<phon weight="0.25">a b</phon><phon score="0.5">b</phon><phon>a</phon>'
                           '<phon weight="-1">c</phon><phon weight="0">a a</phon>')
    path = tmp_path / "lex.xml"
    path.write_text(text)
    lex = BlissLexicon(str(path), cache=None)
    prons = dict(lex.lemma_by_orth("ab").pronunciations)
    assert prons[("a", "b")] == pytest.approx(-math.log(0.25))
    assert prons[("b",)] == 0.5 and prons[("a",)] == 0.0
    assert prons[("c",)] == math.inf and prons[("a", "a")] == math.inf


def test_unknown_words_as_rasr_substituted_or_skipped(tmp_path, caplog):
    """With an unknown lemma that has a pronunciation: substituted (RASR's warning); without an
    unknown lemma: skipped with RASR's warning, the rest of the orthography stays; an unknown lemma
    without a pronunciation: an empty graph, an error for this orthography only."""
    with_unk = tmp_path / "with.xml"
    with_unk.write_text(LEXICON)
    lex = BlissLexicon(str(with_unk), cache=None)
    assert [lm.orths[0] for lm in lex.lemmas_of("c zzz c")] == ["c", "[UNKNOWN]", "c"]
    assert 'substituting unknown word "zzz" with "[UNKNOWN]"' in caplog.text
    without = tmp_path / "without.xml"
    without.write_text(LEXICON.replace('<lemma special="unknown"><orth>[UNKNOWN]</orth><phon>c</phon></lemma>', ""))
    lex = BlissLexicon(str(without), cache=None)
    assert [lm.orths[0] for lm in lex.lemmas_of("c zzz ab")] == ["c", "ab"]
    assert 'skipping unknown word "zzz"' in caplog.text
    np.testing.assert_array_equal(lex.hmm_automaton("c zzz ab").export()[2], lex.hmm_automaton("c ab").export()[2])
    no_phon = tmp_path / "nophon.xml"
    no_phon.write_text(LEXICON.replace("<orth>[UNKNOWN]</orth><phon>c</phon>", "<orth>[UNKNOWN]</orth>"))
    lex = BlissLexicon(str(no_phon), cache=None)
    with pytest.raises(ValueError, match=r"lemma-pronunciation graph is empty: the unknown lemma '\[UNKNOWN\]' "
                                         r".* has no pronunciation \(orthography 'c zzz'\)"):
        lex.hmm_automaton("c zzz")
    assert lex.hmm_automaton("c ab").num_edges > 0  # other orthographies are not affected


# ---------------------------------------------------------------------------------------------
# automata: the full-sum loss equals brute force


def _path_sum(fsa, lp: np.ndarray) -> float:
    """log sum over every path of T edges from the initial to the final state of the *exported*
    automaton: exp(sum_t lp[t, label_t] - weight_t)."""
    num_states, num_edges, edges, weights = fsa.export()
    frm, to, lab = edges.reshape(3, num_edges)
    out = {}
    for e in range(num_edges):
        out.setdefault(int(frm[e]), []).append((int(to[e]), int(lab[e]), float(weights[e])))
    T = lp.shape[0]
    scores = []

    def walk(state, t, score):
        if t == T:
            if state == num_states - 1:
                scores.append(score)
            return
        for nxt, label, w in out.get(state, []):
            walk(nxt, t + 1, score + float(lp[t, label]) - w)

    walk(0, 0, 0.0)
    return float(np.logaddexp.reduce(scores)) if scores else -math.inf


def test_ctc_over_the_first_pronunciations(files):
    lex = BlissLexicon(files["lexicon.xml"], states_per_phone=2)
    fsa = criteria.automaton("ctc", "AB new", lex)  # a b | b: labels a=0, b=1, c=2, blank=3
    labels = set(map(int, fsa.edges_label))
    assert labels == {0, 1, 3}
    lp = np.log(np.full((5, 4), 0.25))
    # paths of 5 frames over "a b b" with blanks: the brute force says there are some
    assert _path_sum(fsa, lp) > -math.inf
    assert criteria.compute_criterion("ctc", lp, orthography="AB new", lexicon=lex)[0] == pytest.approx(
        -_path_sum(fsa, lp), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# RASR's config keys


def test_rasr_config_file_selects_corpus_lexicon_segments_and_costs(files, tmp_path):
    seglist = tmp_path / "segments.txt"
    seglist.write_text("train/dev/rec3/y\n# a comment\ntrain/rec1/s1\nnot/in/corpus\n")
    config = tmp_path / "rasr.config"
    config.write_text(f"""
[*]
training-criterion = fsa
[neural-network-trainer.corpus]
file = {files['corpus.xml.gz']}
segments.file = {seglist}
[neural-network-trainer.model-combination.lexicon]
file = {files['lexicon.xml']}
[*.acoustic-model]
hmm.states-per-phone = 2
tdp.*.loop = 0.5
tdp.*.forward = 0.25
tdp.silence.forward = 2.0
""")
    cfg = parse_args([f"--config={config}", "--*.pymod-name=x"])
    assert cfg.unknown_keys() == []
    host = Host(cfg, on_fatal=_raise)
    lex = host.lexicon
    assert isinstance(lex, BlissLexicon) and lex.states_per_phone == 2
    # tdp.*.loop covers silence, as in RASR, unless tdp.silence.loop is given
    ex = host.exporter
    assert (ex.phone.loop, ex.phone.forward, ex.silence.loop, ex.silence.forward) == (0.5, 0.25, 0.5, 2.0)
    assert host.corpus.names == ["train/rec1/s1", "train/dev/rec3/y"]  # corpus order, listed only
    assert host.num_labels == lex.num_hmm_labels == 7
    cb = Callback(host.corpus, criterion="fsa", lexicon=lex, exporter=host.exporter)
    n, e, edges, weights = cb("export_allophone_state_fsa_by_segment_name", "train/dev/rec3/y")
    ref = build_automaton(host.exporter, lex, "new york c").export()
    assert (n, e) == ref[:2]
    np.testing.assert_array_equal(edges, ref[2])
    np.testing.assert_array_equal(weights, ref[3])
    # loop 0.5, forward 0.25, skip 3 (RASR's default), exit 0: no silence (no <orth/> in the silence lemma)
    assert set(np.unique(weights)) <= {0.0, 0.25, 0.5, 3.0}


def test_synthetic_corpus_needs_the_built_in_lexicon(files):
    cfg = parse_args([f"--*.model-combination.lexicon.file={files['lexicon.xml']}", "--*.corpus.synthetic=3"])
    with pytest.raises(ValueError, match="corpus.synthetic needs the built-in lexicon"):
        Host(cfg, on_fatal=_raise)


def _raise(message):
    raise AssertionError(message)


def test_emulator_children_serve_a_bliss_setup_from_one_rasr_config(files, tmp_path, no_leaks):
    """One RASR config file for the emulator children: losses, error signals and automata over the
    Bliss corpus and lexicon equal those computed here."""
    from sprint_control import SprintPool

    config = tmp_path / "train.config"
    config.write_text(f"[*]\ncorpus.file = {files['corpus.xml']}\nmodel-combination.lexicon.file = "
                      f"{files['lexicon.xml']}\ntraining-criterion = fsa\nhmm.states-per-phone = 2\n"
                      "tdp.*.loop = 0.3\nlog-level = warning\n")
    lex = BlissLexicon(files["lexicon.xml"], states_per_phone=2)
    exporter = exporter_config(parse_args([f"--config={config}"]))
    corpus = load_corpus(files["corpus.xml"], lexicon=lex)
    segs = [s for s in corpus if s.name != "train/dev/rec3/y"]  # 12 frames: room for its path
    rng = np.random.default_rng(0)
    T = max(s.num_frames for s in segs)
    a = rng.standard_normal((T, len(segs), lex.num_hmm_labels)).astype(np.float32)
    lp = a - np.log(np.exp(a).sum(axis=-1, keepdims=True))
    lengths = [s.num_frames for s in segs]
    with SprintPool(2, sprint_args=[f"--config={config}"], timeout=60) as pool:
        res = pool.compute(lp, lengths, [s.name for s in segs])
        edges, weights, _ = pool.automata([s.name for s in segs])
    for b, s in enumerate(segs):
        loss, err = criteria.compute_criterion("fsa", lp[: s.num_frames, b], orthography=s.orthography, lexicon=lex,
                                               exporter=exporter)
        assert res.loss[b] == pytest.approx(loss, rel=1e-5)
        np.testing.assert_allclose(res.error_signal[: s.num_frames, b], err, atol=1e-5)
    want = np.concatenate([build_automaton(exporter, lex, s.orthography).weights for s in segs])
    np.testing.assert_array_equal(weights, want)
    assert edges.shape[1] == want.size


def test_a_word_the_lexicon_cannot_spell_fails_only_its_segment(files, tmp_path):
    """RASR reads an orthography only when its segment is asked for: the corpus loads; an empty graph
    fails that segment's request (naming it), the other segments are served."""
    path = tmp_path / "lex.xml"
    path.write_text(LEXICON.replace("<orth>[UNKNOWN]</orth><phon>c</phon>", "<orth>[UNKNOWN]</orth>"))
    corpus_file = tmp_path / "c.xml"
    corpus_file.write_text(CORPUS.replace("<orth>c</orth>", "<orth>c zzz</orth>"))
    lex = BlissLexicon(str(path))
    corpus = load_corpus(str(corpus_file), lexicon=lex)
    assert corpus.names == NAMES
    bad = corpus.get("train/rec1/2")
    assert bad.features.shape == (bad.num_frames, corpus.feature_dim)  # features need no spelling
    cb = Callback(corpus, criterion="fsa", lexicon=lex)
    with pytest.raises(ValueError, match="lemma-pronunciation graph is empty"):
        cb("export_allophone_state_fsa_by_segment_name", "train/rec1/2")
    assert cb("export_allophone_state_fsa_by_segment_name", "train/rec1/s1")[1] > 0
    # the built-in lexicon's alphabet: the features still come (noise only)
    plain = load_corpus(str(corpus_file), lexicon=Lexicon(alphabet="abc"))
    assert plain.get("train/rec1/2").features.shape[0] == bad.num_frames


def test_speakers_conditions_and_names_as_rasr_inherits_them(tmp_path, caplog):
    """Defaults chosen in a section reach the segments below it; a segment's own speaker wins; an
    anonymous description is the section's default ("ANONYMOUS"); an undefined name is RASR's error
    and leaves the speaker unset (the recording's default then applies); an unnamed segment takes its
    position in the recording, with "+" while that name is taken."""
    path = tmp_path / "c.xml"
    path.write_text("""<corpus name="c">
  <speaker-description name="top"/><condition-description name="clean"/>
  <condition name="clean"/>
  <subcorpus name="s">
    <speaker-description name="inner"/>
    <speaker name="top"/>
    <recording name="r1" audio="r1.wav">
      <segment name="2" start="0" end="1"><speaker name="inner"/></segment>
      <segment start="1" end="2"/>
      <segment start="2" end="3"><speaker-description gender="male"/><condition name="clean"/></segment>
    </recording>
    <recording name="r2" audio="r2.wav"><speaker name="nobody"/><segment start="0" end="1"/></recording>
  </subcorpus>
  <recording name="r3" audio="r3.wav"><speaker-description/><segment start="0" end="1"/></recording>
</corpus>
""")
    _, segs = read_bliss_corpus(str(path))
    assert [(s["name"], s["speaker"], s["condition"]) for s in segs] == [
        ("c/s/r1/2", "inner", "clean"),
        ("c/s/r1/2+", "top", "clean"),
        ("c/s/r1/3", "ANONYMOUS", "clean"),
        ("c/s/r2/1", "top", "clean"),
        ("c/r3/1", "ANONYMOUS", "clean"),
    ]
    assert f'{path}:12: speaker "nobody" not defined' in caplog.text
