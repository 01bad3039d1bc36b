"""Synthetic Bliss files of any size, for benchmarks and tests: a lexicon shaped like a large word
lexicon (a phoneme inventory of 40 phonemes plus silence, the four usual special lemmas, then
``num_lemmas`` word lemmas of 1-2 orthographies and 1-3 pronunciations of 2-10 phonemes each) and a
corpus over its words. Everything is deterministic given the seed; nothing is kept on disk but what
the caller writes."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional, Union

import numpy as np

PHONEMES = tuple(f"p{i:02d}" for i in range(40))
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def _word(rng: np.random.Generator, i: int) -> str:
    # a pronounceable-looking unique word: random letters, then the index for uniqueness
    n = int(rng.integers(3, 10))
    return "".join(_LETTERS[int(k)] for k in rng.integers(0, 26, size=n)) + str(i)


def lexicon_text(num_lemmas: int, seed: int = 0) -> str:
    """The XML text of a synthetic lexicon of ``num_lemmas`` word lemmas (their orthographies are
    ``words(num_lemmas, seed)``)."""
    rng = np.random.default_rng([seed, 11])
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<lexicon>", "  <phoneme-inventory>"]
    out.append("    <phoneme><symbol>[SILENCE]</symbol><variation>none</variation></phoneme>")
    out += [f"    <phoneme><symbol>{p}</symbol><variation>context</variation></phoneme>" for p in PHONEMES]
    out.append("  </phoneme-inventory>")
    out.append('  <lemma special="silence"><orth>[SILENCE]</orth><orth></orth><phon score="0.0">[SILENCE]</phon>'
               "<synt/><eval/></lemma>")
    out.append('  <lemma special="sentence-begin"><orth>[SENTENCE-BEGIN]</orth><synt><tok>&lt;s&gt;</tok></synt>'
               "<eval/></lemma>")
    out.append('  <lemma special="sentence-end"><orth>[SENTENCE-END]</orth><synt><tok>&lt;/s&gt;</tok></synt>'
               "<eval/></lemma>")
    out.append('  <lemma special="unknown"><orth>[UNKNOWN]</orth><phon>p00</phon><synt><tok>&lt;UNK&gt;</tok>'
               "</synt><eval/></lemma>")
    word_rng = np.random.default_rng([seed, 12])
    for i in range(num_lemmas):
        word = _word(word_rng, i)
        lines = ["  <lemma>", f"    <orth>{word}</orth>"]
        if rng.random() < 0.1:
            lines.append(f"    <orth>{word.lower()}</orth>")
        n_prons = 1 + int(rng.random() < 0.15) + int(rng.random() < 0.03)
        seen = set()
        for _ in range(n_prons):
            phon = " ".join(PHONEMES[int(k)] for k in rng.integers(0, len(PHONEMES), size=int(rng.integers(2, 11))))
            if phon in seen:
                continue
            seen.add(phon)
            score = f' score="{rng.random() * 2:.4f}"' if n_prons > 1 else ""
            lines.append(f"    <phon{score}>{phon}</phon>")
        lines.append("  </lemma>")
        out.append("\n".join(lines))
    out.append("</lexicon>")
    return "\n".join(out) + "\n"


def words(num_lemmas: int, seed: int = 0) -> list[str]:
    """The first orthography of each word lemma of ``lexicon_text(num_lemmas, seed)``, in order."""
    word_rng = np.random.default_rng([seed, 12])
    return [_word(word_rng, i) for i in range(num_lemmas)]


def write_lexicon(path: Union[str, Path], num_lemmas: int, seed: int = 0) -> Path:
    """Writes ``lexicon_text(num_lemmas, seed)`` to ``path`` (gzip'd if it ends in ``.gz``)."""
    path = Path(path)
    text = lexicon_text(num_lemmas, seed)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def corpus_text(num_segments: int, vocabulary: list[str], seed: int = 0, name: str = "synthetic",
                unknown: Optional[list[str]] = None, seconds: tuple[float, float] = (1.0, 15.0)) -> str:
    """A Bliss corpus of ``num_segments`` segments (one recording each) of 1-12 words drawn from
    ``vocabulary`` (plus, with ``unknown``, a word from that list in every 10th segment), each
    ``seconds`` long (uniform in the range)."""
    rng = np.random.default_rng([seed, 13])
    out = ['<?xml version="1.0" encoding="utf-8"?>', f'<corpus name="{name}">']
    for i in range(num_segments):
        n = int(rng.integers(1, 13))
        ws = [vocabulary[int(k)] for k in rng.integers(0, len(vocabulary), size=n)]
        if unknown and i % 10 == 0:
            ws.insert(int(rng.integers(0, n + 1)), unknown[(i // 10) % len(unknown)])
        length = float(rng.uniform(*seconds))
        out.append(f'  <recording name="rec{i}" audio="rec{i}.wav"><segment name="1" start="0.00" '
                   f'end="{length:.2f}"><orth>{" ".join(ws)}</orth></segment></recording>')
    out.append("</corpus>")
    return "\n".join(out) + "\n"
