"""Corpora for the emulator: a small text or JSON file, or a synthetic one generated from a seed.

A segment has a name (RASR style ``corpus/recording/segment``), an orthography, a frame count, an
optional frame alignment (HMM labels of the built-in lexicon, uint32 (T,)) and features
(float32 (T, feature_dim)). Features are informative of the frame's label: a fixed random
embedding of the aligned label plus noise, so that a small model trained on them with the
automaton criteria lowers its loss. Everything is deterministic given the seed.

File formats:

- text: one segment per line, tab-separated ``name<TAB>num_frames<TAB>orthography[<TAB>alignment]``
  where the alignment is space-separated label indices; ``#`` starts a comment line.
- JSON: a list of segment objects, or ``{"name": ..., "segments": [...]}``; a segment object has
  ``name``, ``orth`` (or ``orthography``), ``num_frames`` and optionally ``alignment`` (list of int)
  and ``speaker``.

Files carry no features: they are generated from the alignment (or, without one, from a linear
segmentation of the orthography's HMM states) and the seed.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .bliss import is_bliss_file, read_bliss_corpus, read_segment_list
from .lexicon import Lexicon
from .textfile import read_utf8

log = logging.getLogger("sprint_control.emulator.corpus")

DEFAULT_FEATURE_DIM = 40
DEFAULT_NOISE = 0.5
#: the synthetic corpus: frames per segment, symbols per orthography
DEFAULT_MIN_FRAMES = 20
DEFAULT_MAX_FRAMES = 200
DEFAULT_MAX_SYMBOLS = 6


@dataclass
class Segment:
    name: str
    orthography: str
    num_frames: int
    alignment: Optional[np.ndarray] = None  # uint32 (T,)
    features: Optional[np.ndarray] = None  # float32 (T, feature_dim)
    speaker: Optional[str] = None

    def info(self) -> dict:
        """What ``getSegmentList`` receives in ``segmentsInfo`` for this segment."""
        return {"orth": self.orthography, "nframes": self.num_frames, "speaker": self.speaker}


class Corpus:
    """An ordered list of segments with lookup by name."""

    def __init__(self, name: str, segments: list[Segment], feature_dim: int):
        self.name = name
        self.segments = list(segments)
        self.feature_dim = int(feature_dim)
        self._by_name: dict[str, Segment] = {}
        for seg in self.segments:
            if seg.name in self._by_name:
                raise ValueError(f"corpus {name!r}: duplicate segment name {seg.name!r}")
            self._by_name[seg.name] = seg

    def get(self, name: str) -> Segment:
        """The segment called ``name``; KeyError if the corpus has none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"corpus {self.name!r} has no segment {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def segments_info(self) -> dict:
        return {s.name: s.info() for s in self.segments}

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, {len(self)} segments, feature_dim={self.feature_dim})"


def _embedding(seed: int, num_labels: int, feature_dim: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x5EED])
    return rng.standard_normal((num_labels, feature_dim)).astype(np.float32)


def _features(
    alignment: Optional[np.ndarray], num_frames: int, embedding: np.ndarray, rng: np.random.Generator, noise: float
) -> np.ndarray:
    dim = embedding.shape[1]
    feats = rng.standard_normal((num_frames, dim)).astype(np.float32)
    if alignment is None:
        return feats
    feats *= noise
    feats += embedding[alignment]
    return feats


def synthetic_corpus(
    num_segments: int,
    seed: int = 0,
    *,
    lexicon: Optional[Lexicon] = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_symbols: int = DEFAULT_MAX_SYMBOLS,
    noise: float = DEFAULT_NOISE,
    name: str = "synthetic",
) -> Corpus:
    """A deterministic corpus of ``num_segments`` segments: 1..``max_symbols`` symbols in words of 1-3,
    ``min_frames``..``max_frames`` frames, a frame alignment through the HMM topology (random
    durations, each optional silence taken with probability 1/2) and features from it."""
    lexicon = lexicon or Lexicon()
    if num_segments < 0:
        raise ValueError(f"num_segments must be >= 0, got {num_segments}")
    if not 1 <= min_frames <= max_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    S = lexicon.states_per_symbol
    rng = np.random.default_rng([seed, 1])
    emb = _embedding(seed, lexicon.num_hmm_labels, feature_dim)
    segments = []
    for i in range(num_segments):
        T = int(rng.integers(min_frames, max_frames + 1))
        k_max = max(1, min(max_symbols, T // S))
        k = int(rng.integers(1, k_max + 1))
        symbols = rng.integers(0, len(lexicon.alphabet), size=k)
        words, pos = [], 0
        while pos < k:
            n = int(rng.integers(1, 4))
            words.append("".join(lexicon.alphabet[s] for s in symbols[pos : pos + n]))
            pos += n
        orth = " ".join(words)
        labels, optional = lexicon.hmm_positions(orth)
        keep = [not opt or rng.random() < 0.5 for opt in optional]
        units = [lab for lab, kp in zip(labels, keep) if kp]
        if len(units) > T:  # too many optional silences for a short segment
            units = [lab for lab, opt in zip(labels, optional) if not opt]
        if not units or len(units) > T:
            raise ValueError(f"cannot fit orthography {orth!r} into {T} frames")
        cuts: Any = np.sort(rng.choice(np.arange(1, T), size=len(units) - 1, replace=False)) if len(units) > 1 else []
        durations = np.diff(np.r_[0, cuts, T]).astype(int)
        alignment = np.repeat(np.array(units, dtype=np.uint32), durations)
        feats = _features(alignment, T, emb, rng, noise)
        segments.append(
            Segment(
                name=f"{name}/rec{i:04d}/seg",
                orthography=orth,
                num_frames=T,
                alignment=alignment,
                features=feats,
                speaker=f"spk{i % 4}",
            )
        )
    return Corpus(name, segments, feature_dim)


def _finish(
    name: str, raw: list[dict], lexicon: Lexicon, feature_dim: int, seed: int, noise: float, source: str
) -> Corpus:
    emb = _embedding(seed, lexicon.num_hmm_labels, feature_dim)
    segments = []
    for item in raw:
        seg_name = str(item["name"])
        try:
            T = int(item["num_frames"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}: segment {seg_name!r}: num_frames must be a whole number, got"
                             f" {item['num_frames']!r}") from None
        if T < 0:
            raise ValueError(f"{source}: segment {seg_name!r} has a negative frame count")
        orth = str(item["orth"])
        alignment = item.get("alignment")
        if alignment is not None:
            try:
                alignment = np.asarray(alignment, dtype=np.int64)
            except (TypeError, ValueError):
                raise ValueError(f"{source}: segment {seg_name!r}: alignment must be a list of label indices") from None
            if alignment.shape != (T,):
                raise ValueError(f"{source}: segment {seg_name!r}: alignment has {alignment.size} frames, expected {T}")
            if T and (alignment.min() < 0 or alignment.max() >= lexicon.num_hmm_labels):
                raise ValueError(f"{source}: segment {seg_name!r}: alignment label out of range")
            alignment = alignment.astype(np.uint32)
        # Per-segment generator keyed by the name, so features do not depend on the file's order.
        rng = np.random.default_rng([seed, zlib.crc32(seg_name.encode("utf-8"))])
        basis = alignment if alignment is not None else lexicon.uniform_alignment(orth, T)
        feats = _features(basis, T, emb, rng, noise)
        segments.append(Segment(seg_name, orth, T, alignment, feats, item.get("speaker")))
    try:
        return Corpus(name, segments, feature_dim)
    except ValueError as exc:  # a duplicate name: say which file holds it
        raise ValueError(f"{source}: {exc}") from None


def load_corpus(
    path: str,
    *,
    lexicon: Optional[Lexicon] = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
    name: Optional[str] = None,
) -> Corpus:
    """Reads a text or JSON corpus file (format in the module docstring); JSON if it starts with
    ``[`` or ``{``."""
    lexicon = lexicon or Lexicon()
    if is_bliss_file(path):  # RASR's Bliss XML corpus (bliss.py)
        bliss_name, bliss_segments = read_bliss_corpus(path, lexicon)
        return _finish(name or bliss_name, bliss_segments, lexicon, feature_dim, seed, noise, path)
    text = read_utf8(path, "corpus file", "a text or JSON corpus in UTF-8")
    raw: list[dict] = []
    corpus_name = name
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"corpus file {path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            corpus_name = corpus_name or data.get("name")
            data = data.get("segments", [])
        if not isinstance(data, list):
            raise ValueError(f"corpus file {path}: 'segments' must be a list of segment objects")
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "name" not in item or "num_frames" not in item:
                raise ValueError(f"corpus file {path}: segment #{i} must be an object with 'name' and 'num_frames'")
            if "orth" not in item and "orthography" not in item:
                # RASR needs the orthography of every segment; an empty one would train on silence
                raise ValueError(f"corpus file {path}: segment #{i} ({item['name']!r}) has no 'orth'"
                                 " (or 'orthography'): expected its transcription")
            raw.append({**item, "orth": item.get("orth", item.get("orthography"))})
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                raise ValueError(
                    f"{path}:{lineno}: expected 'name<TAB>num_frames<TAB>orthography[<TAB>alignment]', got {line!r}"
                )
            try:
                T = int(cols[1])
                align = [int(x) for x in cols[3].split()] if len(cols) > 3 and cols[3].strip() else None
            except ValueError:
                raise ValueError(f"{path}:{lineno}: frame count and alignment must be integers: {line!r}") from None
            raw.append({"name": cols[0], "num_frames": T, "orth": cols[2], "alignment": align})
    return _finish(corpus_name or "corpus", raw, lexicon, feature_dim, seed, noise, path)


def empty_corpus(name: str = "corpus", feature_dim: int = DEFAULT_FEATURE_DIM) -> Corpus:
    return Corpus(name, [], feature_dim)


def select_segments(corpus: Corpus, path: str) -> Corpus:
    """The corpus restricted to the segments listed in ``path``, in corpus order (as RASR's segment
    whitelist); listed names the corpus lacks are logged and ignored."""
    wanted = read_segment_list(path)
    missing = [n for n in wanted if n not in corpus]
    if missing:
        log.warning("%s: %d listed segments are not in corpus %r (first: %r); ignored", path, len(missing),
                    corpus.name, missing[0])
    keep = set(wanted)
    return Corpus(corpus.name, [s for s in corpus.segments if s.name in keep], corpus.feature_dim)
