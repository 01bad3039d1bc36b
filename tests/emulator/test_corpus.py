"""Corpora: synthetic (deterministic, in range, consistent with the lexicon) and files (text, JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sprint_control.emulator.corpus import load_corpus, synthetic_corpus
from sprint_control.emulator.lexicon import Lexicon


def test_synthetic_is_deterministic():
    a, b = synthetic_corpus(6, seed=4), synthetic_corpus(6, seed=4)
    assert a.names == b.names
    for x, y in zip(a, b):
        assert x.orthography == y.orthography and x.num_frames == y.num_frames
        np.testing.assert_array_equal(x.alignment, y.alignment)
        np.testing.assert_array_equal(x.features, y.features)
    c = synthetic_corpus(6, seed=5)
    assert [s.orthography for s in c] != [s.orthography for s in a]


def test_synthetic_segments_are_well_formed():
    lex = Lexicon()
    corpus = synthetic_corpus(40, seed=0)
    assert len(corpus) == 40 and corpus.feature_dim == 40
    for seg in corpus:
        assert 20 <= seg.num_frames <= 200
        assert seg.alignment.dtype == np.uint32 and seg.alignment.shape == (seg.num_frames,)
        assert seg.features.dtype == np.float32 and seg.features.shape == (seg.num_frames, 40)
        assert seg.features.flags.c_contiguous
        assert 1 <= len(seg.orthography.replace(" ", "")) <= 6
        # the alignment is a path through the segment's HMM automaton: its run-length collapse is the
        # state sequence with some of the optional silences
        runs = [int(k) for i, k in enumerate(seg.alignment) if i == 0 or seg.alignment[i - 1] != k]
        labels, optional = lex.hmm_positions(seg.orthography)
        core = [lab for lab, opt in zip(labels, optional) if not opt]
        assert [r for r in runs if r != lex.silence_label] == core


def test_synthetic_features_are_informative():
    corpus = synthetic_corpus(10, seed=1)
    # nearest class mean classifies frames far above chance (31 labels)
    X = np.concatenate([s.features for s in corpus])
    y = np.concatenate([s.alignment for s in corpus])
    means = {k: X[y == k].mean(axis=0) for k in np.unique(y)}
    keys = np.array(sorted(means))
    M = np.stack([means[k] for k in keys])
    pred = keys[np.argmin(((X[:, None, :] - M[None]) ** 2).sum(-1), axis=1)]
    assert (pred == y).mean() > 0.9


def test_segment_lookup():
    corpus = synthetic_corpus(3)
    seg = corpus.segments[1]
    assert corpus.get(seg.name) is seg
    assert seg.name in corpus
    with pytest.raises(KeyError):
        corpus.get("nope")
    info = corpus.segments_info()[seg.name]
    assert info == {"orth": seg.orthography, "nframes": seg.num_frames, "speaker": seg.speaker,
                    "time": pytest.approx(seg.num_frames * 0.01)}


def test_text_corpus(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# name\tframes\torth\talign\nrec/1\t5\tab\t0 1 2 3 4\nrec/2\t30\tba ab\n\n")
    corpus = load_corpus(str(p), seed=2)
    assert corpus.names == ["rec/1", "rec/2"]
    s1, s2 = corpus.segments
    np.testing.assert_array_equal(s1.alignment, [0, 1, 2, 3, 4])
    assert s1.alignment.dtype == np.uint32
    assert s2.alignment is None and s2.orthography == "ba ab"
    assert s2.features.shape == (30, 40) and s2.features.dtype == np.float32
    # features depend on the seed and the name, not the line order
    p2 = tmp_path / "c2.txt"
    p2.write_text("rec/2\t30\tba ab\n")
    np.testing.assert_array_equal(load_corpus(str(p2), seed=2).get("rec/2").features, s2.features)


def test_json_corpus(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(
        json.dumps(
            {
                "name": "mine",
                "segments": [
                    {"name": "x/1", "orth": "a", "num_frames": 4, "alignment": [30, 0, 1, 2], "speaker": "s"},
                    {"name": "x/2", "orthography": "b", "num_frames": 3},
                ],
            }
        )
    )
    corpus = load_corpus(str(p))
    assert corpus.name == "mine"
    assert corpus.get("x/1").speaker == "s"
    assert corpus.get("x/2").orthography == "b"
    p.write_text(json.dumps([{"name": "y", "orth": "c", "num_frames": 2}]))
    assert load_corpus(str(p)).names == ["y"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("a\t3\n", "expected"),
        ("a\tx\tab\n", "integers"),
        ("a\t3\tab\t0 1\n", "alignment has 2 frames"),
        ("a\t2\tab\t0 99\n", "out of range"),
        ("a\t2\tab\nb\t2\tab\na\t2\tb\n", "duplicate"),
    ],
)
def test_bad_text_corpus(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_corpus(str(p))


@pytest.mark.parametrize(
    "content,words",
    [
        ('[{"name": "s1", "num_frames": 5}]', ["segment #0", "'s1'", "no 'orth'"]),
        ('[{"name": "s1", "num_frames": 5, ', ["not valid JSON"]),
        ('{"segments": {"name": "s1"}}', ["'segments' must be a list"]),
        ('[{"name": "s1", "orth": "a", "num_frames": "many"}]', ["'s1'", "num_frames must be a whole number"]),
        ('[{"name": "s1", "orth": "a", "num_frames": 2, "alignment": "zero one"}]', ["'s1'", "alignment"]),
        ('[{"name": "s", "orth": "a", "num_frames": 2}, {"name": "s", "orth": "b", "num_frames": 2}]',
         ["duplicate segment name 's'"]),
        (b"a\t3\tab\xff\n", ["byte 0xff", "not UTF-8"]),
    ],
    ids=["json-without-orth", "json-broken", "json-segments-not-a-list", "json-frames-not-a-number",
         "json-alignment-not-numbers", "json-duplicate", "not-utf8"],
)
def test_corpus_file_errors_name_the_file(tmp_path, content, words):
    p = tmp_path / "my-corpus.json"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    with pytest.raises(ValueError) as err:
        load_corpus(str(p))
    assert str(p) in str(err.value)
    for word in words:
        assert word in str(err.value)
