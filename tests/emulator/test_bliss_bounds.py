"""The emulator's input files within bounds: gzip streamed with a size limit, frame counts bounded,
features generated per segment, non-regular files refused, include trees and deep nesting, unknown
encodings, segment lists that are not UTF-8; and the checked cache of compiled lexica. Every refusal
is one line naming the file (and the line where there is one)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from sprint_control.emulator import bliss, lexicon_file, synthetic_bliss
from sprint_control.emulator.args import ArgumentError, parse_args
from sprint_control.emulator.bliss import BlissError, is_bliss_file, read_bliss_corpus
from sprint_control.emulator.bliss_lexicon import BlissLexicon
from sprint_control.emulator.corpus import load_corpus
from sprint_control.emulator.lexicon import Lexicon


def _one_line(exc: BaseException, starts: str) -> str:
    msg = str(exc)
    assert msg.startswith(starts), msg
    assert "\n" not in msg
    return msg


def _bomb(path: Path, megabytes: int) -> Path:
    """A gzip file of a Bliss corpus padded with ``megabytes`` MB of blank lines (compresses ~1000:1)."""
    with gzip.open(path, "wb") as f:
        f.write(b'<?xml version="1.0"?>\n<corpus name="c">\n')
        block = b"\n" * (1 << 20)
        for _ in range(megabytes):
            f.write(block)
        f.write(b"</corpus>\n")
    return path


def test_gzip_is_streamed_and_stops_at_the_limit(tmp_path, monkeypatch):
    path = _bomb(tmp_path / "bomb.gz", 12)
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("SPRINT_CONTROL_MAX_INPUT_BYTES", str(4 << 20))
    # sniffing a name without .xml reads the first chunk only: no error although the whole is over the limit
    assert is_bliss_file(str(path))
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(path))
    msg = _one_line(exc.value, f"{path}:")
    line = int(msg.split(":")[1])
    assert 2 < line <= (4 << 20) + 3  # the line the reader had reached, not the whole file
    assert "decompresses to more than 4194304 bytes" in msg and "SPRINT_CONTROL_MAX_INPUT_BYTES" in msg
    monkeypatch.delenv("SPRINT_CONTROL_MAX_INPUT_BYTES")
    assert read_bliss_corpus(str(path)) == ("c", [])  # within the default limit it is just a corpus


def test_a_broken_gzip_stream_is_one_line(tmp_path):
    path = tmp_path / "c.xml.gz"
    data = gzip.compress(b'<corpus name="c"><recording name="r"/></corpus>' * 100)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(path))
    assert "not a readable gzip file" in _one_line(exc.value, f"{path}:")


def test_frame_counts_are_bounded_before_anything_is_allocated(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("# big\nx\t100000000\tab c\n")
    with pytest.raises(ValueError) as exc:
        load_corpus(str(text))
    assert "more than the emulator's limit of 1000000" in _one_line(exc.value, f"{text}:2: segment 'x'")
    xml = tmp_path / "c.xml"
    xml.write_text('<corpus name="c">\n<recording name="r" audio="r.wav">\n'
                   '<segment name="s" start="0" end="100000"><orth>a</orth></segment></recording></corpus>')
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(xml))
    assert "10000000 frames, more than the emulator's limit" in _one_line(exc.value, f"{xml}:3: ")
    with pytest.raises(ValueError, match="more than the emulator's limit"):
        from sprint_control.emulator.corpus import synthetic_corpus

        synthetic_corpus(1, max_frames=10**8)


def test_features_are_generated_per_segment_not_at_start_up(tmp_path):
    """A 10-hour Bliss corpus (3,600 segments of 10 s): loading it allocates no features (they would
    be 3.6M frames x 40 x 4 bytes = 576 MB); a segment's features are the same every time."""
    vocab = ["a", "b", "c"]
    path = tmp_path / "ten_hours.xml"
    path.write_text(synthetic_bliss.corpus_text(3600, vocab, seconds=(10.0, 10.0)))
    tracemalloc.start()
    try:
        corpus = load_corpus(str(path), lexicon=Lexicon(alphabet="abc"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(corpus) == 3600 and sum(s.num_frames for s in corpus) == 3_600_000
    assert peak < 60e6, peak
    seg = corpus.segments[7]
    a, b = seg.features, seg.features
    assert a.shape == (1000, 40) and a is not b
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_non_regular_files_are_refused_without_blocking(tmp_path, kind):
    if kind == "dev-zero":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero here")
        path = "/dev/zero"
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = str(tmp_path / "pipe.xml")
        os.mkfifo(path)
    else:
        path = str(tmp_path)
    results: list = []

    def attempt():
        for fn in (lambda: read_bliss_corpus(path), lambda: load_corpus(path + ("" if kind != "dev-zero" else "")),
                   lambda: BlissLexicon(path, cache=None)):
            try:
                fn()
                results.append(None)
            except (ValueError, OSError) as exc:
                results.append(exc)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "reading a non-regular file blocked"
    for exc in results:
        assert isinstance(exc, ValueError), exc
        msg = str(exc)
        assert path in msg and "expected a regular file" in msg and "\n" not in msg
    with pytest.raises(ArgumentError, match="expected a regular file"):
        parse_args([f"--config={path}"])


def test_an_include_tree_is_not_parsed_two_to_the_depth_times(tmp_path, monkeypatch):
    depth = 24
    for i in range(depth):
        nxt = f'<include file="f{i + 1}.xml"/>' if i + 1 < depth else ""
        (tmp_path / f"f{i}.xml").write_text(f'<corpus name="c">\n{nxt}\n{nxt}\n</corpus>\n')
    calls = []
    real = bliss.stream_xml
    monkeypatch.setattr(bliss, "stream_xml", lambda path, *a: calls.append(path) or real(path, *a))
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(tmp_path / "f0.xml"))
    assert "is already included into 'c'" in _one_line(exc.value, f"{tmp_path / f'f{depth - 2}.xml'}:3: ")
    assert len(calls) == depth
    # included under two different subcorpora it is parsed once for each: distinct segment names
    (tmp_path / "part.xml").write_text('<corpus name="x"><recording name="r" audio="r.wav">'
                                       '<segment start="0" end="1"><orth>a</orth></segment></recording></corpus>')
    (tmp_path / "top.xml").write_text('<corpus name="c"><subcorpus name="a"><include file="part.xml"/></subcorpus>'
                                      '<subcorpus name="b"><include file="part.xml"/></subcorpus></corpus>')
    assert [s["name"] for s in read_bliss_corpus(str(tmp_path / "top.xml"))[1]] == ["c/a/r/1", "c/b/r/1"]


def test_include_cycles_and_depth(tmp_path):
    (tmp_path / "a.xml").write_text('<corpus name="c">\n<subcorpus name="s"><include file="b.xml"/></subcorpus>'
                                    '</corpus>')
    (tmp_path / "b.xml").write_text('<corpus name="s">\n\n<include file="a.xml"/></corpus>')
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(tmp_path / "a.xml"))
    assert "include cycle" in _one_line(exc.value, f"{tmp_path / 'b.xml'}:3: ")


@pytest.mark.parametrize("depth", [51, 300])
def test_deeply_nested_empty_subcorpora(tmp_path, depth):
    path = tmp_path / "deep.xml"
    path.write_text('<corpus name="c">' + '<subcorpus name="s">' * depth + "</subcorpus>" * depth + "</corpus>")
    assert read_bliss_corpus(str(path)) == ("c", [])
    path.write_text('<corpus name="c">' + '<subcorpus name="s">' * depth + '<recording name="r" audio="r.wav">'
                    '<segment start="0" end="0.5"/></recording>' + "</subcorpus>" * depth + "</corpus>")
    assert read_bliss_corpus(str(path))[1][0]["name"] == "c" + "/s" * depth + "/r/1"


def test_an_unknown_encoding_is_one_line(tmp_path):
    path = tmp_path / "c.xml"
    path.write_text('<?xml version="1.0" encoding="klingon-8"?>\n<corpus name="c"/>\n')
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(path))
    assert "unknown encoding='klingon-8'" in _one_line(exc.value, f"{path}:1: ")
    path.write_text('<?xml version="1.0" encoding="iso-8859-1"?>\n<corpus name="c"><recording name="r" '
                    'audio="r.wav"><segment start="0" end="1"><orth>\xe9t\xe9</orth></segment></recording>'
                    "</corpus>\n", encoding="latin-1")
    assert read_bliss_corpus(str(path))[1][0]["orth"] == "\xe9t\xe9"


def test_a_segment_list_that_is_not_utf8_names_the_file(tmp_path):
    corpus = tmp_path / "c.xml"
    corpus.write_text('<corpus name="c"><recording name="r" audio="r.wav"><segment start="0" end="1"/>'
                      "</recording></corpus>")
    seglist = tmp_path / "segments"
    seglist.write_bytes(b"c/r/1\n\xe9\n")
    with pytest.raises(BlissError) as exc:
        load_corpus(str(corpus), segments_file=str(seglist))
    assert "byte 0xe9 at offset 6 is not UTF-8" in _one_line(exc.value, f"segment list {seglist}: ")


def test_the_segment_list_is_applied_before_any_per_segment_work(tmp_path, monkeypatch, caplog):
    """Only listed segments (full or short names, as RASR's whitelist) become segments; nothing of the
    others touches the lexicon, and an empty list is RASR's error and keeps every segment."""
    vocab = synthetic_bliss.words(50)
    lex_path = synthetic_bliss.write_lexicon(tmp_path / "lex.xml", 50)
    corpus = tmp_path / "c.xml"
    corpus.write_text(synthetic_bliss.corpus_text(40, vocab, unknown=["NOTAWORD"]))
    seglist = tmp_path / "segments.gz"
    with gzip.open(seglist, "wt") as f:
        f.write("synthetic/rec3/1\n# comment\n  synthetic/rec7/1  \n\nnot/there\n")
    lex = BlissLexicon(str(lex_path))
    seen = []
    monkeypatch.setattr(lex, "lemmas_of", lambda orth: seen.append(orth) or [])
    c = load_corpus(str(corpus), lexicon=lex, segments_file=str(seglist))
    assert c.names == ["synthetic/rec3/1", "synthetic/rec7/1"] and seen == []
    assert "1 listed segments are not in corpus" in caplog.text
    seglist.write_bytes(gzip.compress(b""))
    assert len(load_corpus(str(corpus), lexicon=lex, segments_file=str(seglist))) == 40
    assert "Discard segment whitelist, because file is empty" in caplog.text


# ---------------------------------------------------------------------------------------------
# the compiled-lexicon cache


def _same(a: BlissLexicon, b: BlissLexicon) -> None:
    assert a.phonemes == b.phonemes and len(a.lemmas) == len(b.lemmas)
    for x, y in zip(a.lemmas, b.lemmas):
        assert (x.orths, x.pronunciations, x.special, x.line, x.empty_pronunciation) == \
               (y.orths, y.pronunciations, y.special, y.line, y.empty_pronunciation)


def test_the_cache_is_used_checked_and_rebuilt(tmp_path, monkeypatch, caplog):
    path = synthetic_bliss.write_lexicon(tmp_path / "lex.xml.gz", 300, seed=4)
    cache = tmp_path / "cache"
    fresh = BlissLexicon(str(path), cache=None)
    first = BlissLexicon(str(path), cache=str(cache))
    _same(first, fresh)
    [entry] = [p for p in cache.iterdir() if p.suffix == ".npz"]
    real_parse = lexicon_file.parse_lexicon

    def no_parse(p):
        raise AssertionError("parsed although the cache holds the lexicon")

    monkeypatch.setattr(lexicon_file, "parse_lexicon", no_parse)
    _same(BlissLexicon(str(path), cache=str(cache)), fresh)
    # damaged entries are not used: garbage, a truncated file, arrays that do not fit together
    monkeypatch.setattr(lexicon_file, "parse_lexicon", real_parse)
    good = entry.read_bytes()
    for damage in (b"garbage", good[: len(good) // 2]):
        entry.write_bytes(damage)
        _same(BlissLexicon(str(path), cache=str(cache)), fresh)
        assert "is not usable" in caplog.text
        caplog.clear()
    data = lexicon_file.parse_lexicon(str(path))
    data.pron_phonemes = data.pron_phonemes.copy()
    data.pron_phonemes[0] = 999  # no such phoneme
    digest, size = lexicon_file.file_digest(str(path))
    lexicon_file.save_cache(data, str(entry), digest, size)
    _same(BlissLexicon(str(path), cache=str(cache)), fresh)
    assert "inconsistent arrays" in caplog.text
    # another file (other bytes): another entry
    other = synthetic_bliss.write_lexicon(tmp_path / "lex2.xml", 300, seed=5)
    BlissLexicon(str(other), cache=str(cache))
    assert len([p for p in cache.iterdir() if p.suffix == ".npz"]) == 2


def test_an_unwritable_cache_directory_only_costs_the_parse(tmp_path, caplog):
    path = synthetic_bliss.write_lexicon(tmp_path / "lex.xml", 20)
    blocker = tmp_path / "file"
    blocker.write_text("")
    lex = BlissLexicon(str(path), cache=str(blocker / "sub"))
    assert len(lex.lemmas) == 24 and "cannot be created" in caplog.text


_CHILD = """
import sys
from sprint_control.emulator import lexicon_file
real = lexicon_file.parse_lexicon
def counted(p):
    print("PARSED", flush=True)
    return real(p)
lexicon_file.parse_lexicon = counted
from sprint_control.emulator.bliss_lexicon import BlissLexicon
lex = BlissLexicon(sys.argv[1])
print("LEMMAS", len(lex.lemmas), flush=True)
"""


def test_children_started_together_parse_the_lexicon_once(tmp_path):
    path = synthetic_bliss.write_lexicon(tmp_path / "lex.xml", 20_000)
    env = dict(os.environ, SPRINT_CONTROL_CACHE_DIR=str(tmp_path / "shared"))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all("LEMMAS 20004" in o for o in outs)
    assert sum(o.count("PARSED") for o in outs) == 1, outs


def test_an_orthography_of_gigabytes_is_refused_as_it_comes(tmp_path, monkeypatch):
    monkeypatch.setattr(bliss, "MAX_ORTH_CHARS", 100_000)
    path = tmp_path / "c.xml.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'<corpus name="c">\n<recording name="r" audio="r.wav"><segment start="0" end="1">\n<orth>')
        for _ in range(20):
            f.write(b"a " * 50_000)
        f.write(b"</orth></segment></recording></corpus>")
    with pytest.raises(BlissError) as exc:
        read_bliss_corpus(str(path))
    assert "<orth> longer than 100000 characters" in _one_line(exc.value, f"{path}:3: ")
