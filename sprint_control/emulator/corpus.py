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
from collections.abc import Callable, Iterator
from typing import Any, Optional

import numpy as np

from .bliss import FRAME_SHIFT, MAX_SEGMENT_FRAMES, is_bliss_file, read_bliss_corpus, whitelist
from .lexicon import Lexicon
from .textfile import read_utf8

log = logging.getLogger("sprint_control.emulator.corpus")

DEFAULT_FEATURE_DIM = 40
DEFAULT_NOISE = 0.5
#: the synthetic corpus: frames per segment, symbols per orthography
DEFAULT_MIN_FRAMES = 20
DEFAULT_MAX_FRAMES = 200
DEFAULT_MAX_SYMBOLS = 6


class Segment:
    """One segment: ``name``, ``orthography``, ``num_frames``, an optional frame ``alignment`` and
    ``features``. The features of a file corpus are generated when asked for (``features`` is a
    property), never kept: a corpus of any length costs no feature memory until a segment is used.
    ``speaker`` and ``condition`` are the names RASR would give (inherited from the recording),
    ``time`` its length in seconds."""

    __slots__ = ("name", "orthography", "num_frames", "alignment", "_features", "speaker", "condition", "time",
                 "_make")

    def __init__(self, name: str, orthography: str, num_frames: int, alignment: Optional[np.ndarray] = None,
                 features: Optional[np.ndarray] = None, speaker: Optional[str] = None, *,
                 condition: Optional[str] = None, time: Optional[float] = None,
                 make_features: Optional[Callable[[Segment], np.ndarray]] = None):
        self.name = name
        self.orthography = orthography
        self.num_frames = num_frames
        self.alignment = alignment  # uint32 (T,)
        self._features = features  # float32 (T, feature_dim)
        self.speaker = speaker
        self.condition = condition
        self.time = num_frames * FRAME_SHIFT if time is None else time
        self._make = make_features

    @property
    def features(self) -> Optional[np.ndarray]:
        """float32 (T, feature_dim): stored (synthetic corpus) or generated afresh on every access."""
        if self._features is not None or self._make is None:
            return self._features
        return self._make(self)

    @features.setter
    def features(self, value: Optional[np.ndarray]) -> None:
        self._features = value

    def info(self) -> dict:
        """What ``getSegmentList`` receives in ``segmentsInfo`` for this segment (RASR's ``nframes``
        and ``time``, and the emulator's ``orth`` and ``speaker``)."""
        return {"orth": self.orthography, "nframes": self.num_frames, "time": self.time, "speaker": self.speaker}

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.orthography!r}, {self.num_frames} frames)"


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
    if max_frames > MAX_SEGMENT_FRAMES:
        raise ValueError(f"max_frames {max_frames} is more than the emulator's limit of {MAX_SEGMENT_FRAMES} frames "
                         "per segment")
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


def _feature_maker(lexicon, emb: np.ndarray, seed: int, noise: float) -> Callable[[Segment], np.ndarray]:
    """Generates a segment's features on demand: the same array every time (a generator keyed by the
    seed and the segment's name, so they do not depend on the file's order). Without an alignment
    they follow a linear segmentation of the orthography's HMM states; an orthography the lexicon
    cannot spell gets noise only (features are the emulator's own: RASR reads them from audio, not
    from the orthography)."""

    def make(seg: Segment) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(seg.name.encode("utf-8"))])
        basis = seg.alignment
        if basis is None:
            try:
                basis = lexicon.uniform_alignment(seg.orthography, seg.num_frames)
            except ValueError as exc:
                log.debug("segment %r: features without an alignment (%s)", seg.name, exc)
        return _features(basis, seg.num_frames, emb, rng, noise)

    return make


def _finish(
    name: str, raw: list[dict], lexicon: Lexicon, feature_dim: int, seed: int, noise: float, source: str
) -> Corpus:
    make = _feature_maker(lexicon, _embedding(seed, lexicon.num_hmm_labels, feature_dim), seed, noise)
    segments = []
    for item in raw:
        seg_name = str(item["name"])
        where = item.get("where") or source
        try:
            T = int(item["num_frames"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: segment {seg_name!r}: num_frames must be a whole number, got"
                             f" {item['num_frames']!r}") from None
        if T < 0:
            raise ValueError(f"{where}: segment {seg_name!r} has a negative frame count")
        if T > MAX_SEGMENT_FRAMES:
            raise ValueError(f"{where}: segment {seg_name!r} has {T} frames, more than the emulator's limit of "
                             f"{MAX_SEGMENT_FRAMES} (it generates features for every frame)")
        orth = str(item["orth"])
        alignment = item.get("alignment")
        if alignment is not None:
            try:
                alignment = np.asarray(alignment, dtype=np.int64)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: segment {seg_name!r}: alignment must be a list of label indices") from None
            if alignment.shape != (T,):
                raise ValueError(f"{where}: segment {seg_name!r}: alignment has {alignment.size} frames, expected {T}")
            if T and (alignment.min() < 0 or alignment.max() >= lexicon.num_hmm_labels):
                raise ValueError(f"{where}: segment {seg_name!r}: alignment label out of range")
            alignment = alignment.astype(np.uint32)
        segments.append(Segment(seg_name, orth, T, alignment, None, item.get("speaker"),
                                condition=item.get("condition"), time=item.get("time"), make_features=make))
    try:
        return Corpus(name, segments, feature_dim)
    except ValueError as exc:  # a duplicate name: say which file holds it
        raise ValueError(f"{source}: {exc}") from None


def _listed(raw: list[dict], keep: Optional[set]) -> list[dict]:
    if keep is None:
        return raw
    return [r for r in raw if str(r["name"]) in keep or str(r["name"]).rsplit("/", 1)[-1] in keep]


def load_corpus(
    path: str,
    *,
    lexicon: Optional[Lexicon] = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
    name: Optional[str] = None,
    segments_file: Optional[str] = None,
) -> Corpus:
    """Reads a corpus file: Bliss XML (bliss.py), else JSON if it starts with ``[`` or ``{``, else
    the text format (module docstring). With ``segments_file`` (RASR's ``corpus.segments.file``)
    only the listed segments are kept, chosen while reading. Features are generated per segment
    when asked for (``Segment.features``)."""
    lexicon = lexicon or Lexicon()
    keep = whitelist(segments_file) if segments_file else None
    if is_bliss_file(path):  # RASR's Bliss XML corpus (bliss.py)
        bliss_name, bliss_segments = read_bliss_corpus(path, keep=keep)
        for seg in bliss_segments:
            seg["where"] = f"{seg['file']}:{seg['line']}"
        corpus = _finish(name or bliss_name, bliss_segments, lexicon, feature_dim, seed, noise, path)
    else:
        corpus_name, raw = _read_text_or_json(path, name)
        corpus = _finish(corpus_name or "corpus", _listed(raw, keep), lexicon, feature_dim, seed, noise, path)
    if keep is not None:
        _report_missing(str(segments_file), keep, corpus)
    return corpus


def _read_text_or_json(path: str, name: Optional[str]) -> tuple[Optional[str], list[dict]]:
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
            if T > MAX_SEGMENT_FRAMES:  # before the alignment check: refuse without building anything
                raise ValueError(f"{path}:{lineno}: segment {cols[0]!r} has {T} frames, more than the emulator's "
                                 f"limit of {MAX_SEGMENT_FRAMES} (it generates features for every frame)")
            raw.append({"name": cols[0], "num_frames": T, "orth": cols[2], "alignment": align,
                        "where": f"{path}:{lineno}"})
    return corpus_name, raw


def empty_corpus(name: str = "corpus", feature_dim: int = DEFAULT_FEATURE_DIM) -> Corpus:
    return Corpus(name, [], feature_dim)


def select_segments(corpus: Corpus, path: str) -> Corpus:
    """The corpus restricted to the segments listed in ``path`` (full or short names), in corpus
    order (as RASR's segment whitelist); listed names the corpus lacks are logged and ignored. For a
    corpus already in memory: ``corpus.load_corpus(segments_file=...)`` applies the list while
    reading, before any per-segment work."""
    keep = whitelist(path)
    if keep is None:
        return corpus
    _report_missing(path, keep, corpus)
    return Corpus(corpus.name, [s for s in corpus.segments if s.name in keep or s.name.rsplit("/", 1)[-1] in keep],
                  corpus.feature_dim)


def _report_missing(path: str, keep: set, corpus) -> None:
    short = {s.name.rsplit("/", 1)[-1] for s in corpus.segments}
    missing = sorted(n for n in keep if n not in corpus and n not in short)
    if missing:
        log.warning("%s: %d listed segments are not in corpus %r (first: %r); ignored", path, len(missing),
                    corpus.name, missing[0])
