"""Reading a RASR Bliss lexicon file fast, into flat arrays, and a checked on-disk cache of them.

The reader streams the XML (``bliss.stream_xml``) and keeps what the emulator needs as flat arrays
(``LexiconData``): orthographies, pronunciations as phoneme indices with their scores, special
names and lines; ``Lemma`` objects are made only for the lemmas a lookup touches. RASR's rules
(``Bliss/LexiconParser.cc``): a ``<phoneme>`` may have several ``<symbol>``s, ``<variation>`` is
``none`` or ``context``; a lemma exists from its first ``<orth>`` (orthographies whitespace-
normalized; a lemma without one is skipped with a warning), ``special`` may be any name (a second
lemma of one special name is an error and stays ordinary); ``<phon weight=w>`` has score
``-log w``, ``<phon score=s>`` score ``s``, neither score 0 (weight 1), both a critical error, a
negative weight an error (taken as 0); a pronunciation with a phoneme outside the inventory and a
duplicate pronunciation of one lemma are errors that drop that pronunciation. RASR's non-fatal
errors are logged (``file:line: ...``) and reading goes on, as RASR does; the fatal ones raise
``BlissError``. Scores are not normalized here (``normalize-pronunciation`` is the automaton's).

The cache: ``<cache dir>/lexicon-<sha256 of the file>.npz``, written atomically (a temporary file
renamed into place) under a lock, so that the children of one pool parse a lexicon once between
them; read back with ``allow_pickle=False`` and checked (format, source digest and size, array
shapes, index ranges) before use; a file that fails a check is rebuilt. The directory is
``SPRINT_CONTROL_CACHE_DIR``, else ``$XDG_CACHE_HOME/sprint_control``, else
``~/.cache/sprint_control``; ``SPRINT_CONTROL_CACHE_DIR=off`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .bliss import BlissError, stream_xml
from .textfile import CHUNK, InputError, _open_regular

log = logging.getLogger("sprint_control.emulator.lexicon_file")

#: Bumped whenever the arrays or the reading rules change: older cache files are then not used.
CACHE_FORMAT = 1
_LOCK_WAIT = 600.0  # seconds a child waits for another that builds the same cache file


@dataclass(slots=True)
class Lemma:
    orths: list[str]
    pronunciations: list[tuple[tuple[str, ...], float]]  # (phonemes, score = -log weight), no empty ones
    special: Optional[str]
    line: int
    #: score of an empty ``<phon/>`` (zero phonemes) of this lemma, None if it has none
    empty_pronunciation: Optional[float] = None
    index: int = -1  # position in the lexicon


@dataclass
class LexiconData:
    """A lexicon file as flat arrays: P pronunciations, N lemmas."""

    path: str
    phonemes: list[str]  # inventory order, each phoneme's first symbol
    context_dependent: list[bool]
    orths: list[str]  # every orthography, lemma by lemma
    lemma_orth_offsets: np.ndarray  # int64 (N + 1,)
    lemma_lines: np.ndarray  # int64 (N,)
    pron_phonemes: np.ndarray  # int32: phoneme indices of all pronunciations
    pron_offsets: np.ndarray  # int64 (P + 1,)
    pron_scores: np.ndarray  # float64 (P,)
    lemma_pron_offsets: np.ndarray  # int64 (N + 1,)
    empty_scores: np.ndarray  # float64 (N,): score of the lemma's empty pronunciation, NaN if none
    specials: dict[int, str] = field(default_factory=dict)  # lemma index -> special name

    @property
    def num_lemmas(self) -> int:
        return int(self.lemma_lines.shape[0])

    def lemma(self, i: int) -> Lemma:
        o0, o1 = self.lemma_orth_offsets[i], self.lemma_orth_offsets[i + 1]
        p0, p1 = self.lemma_pron_offsets[i], self.lemma_pron_offsets[i + 1]
        ph = self.phonemes
        prons = []
        for p in range(p0, p1):
            a, b = self.pron_offsets[p], self.pron_offsets[p + 1]
            prons.append((tuple(ph[k] for k in self.pron_phonemes[a:b].tolist()), float(self.pron_scores[p])))
        empty = float(self.empty_scores[i])
        return Lemma(self.orths[o0:o1], prons, self.specials.get(i), int(self.lemma_lines[i]),
                     None if math.isnan(empty) else empty, i)


class LemmaTable:
    """The lemmas of a ``LexiconData`` as a read-only sequence; each Lemma is made on first use and
    kept, so that a lemma is always the same object."""

    def __init__(self, data: LexiconData):
        self._data = data
        self._made: list[Optional[Lemma]] = [None] * data.num_lemmas

    def __len__(self) -> int:
        return len(self._made)

    def __getitem__(self, i: int) -> Lemma:
        lemma = self._made[i]
        if lemma is None:
            lemma = self._made[i] = self._data.lemma(range(len(self._made))[i])
        return lemma

    def __iter__(self):
        return (self[i] for i in range(len(self._made)))


# -- the reader ------------------------------------------------------------------------------------
class _Reader:
    """expat handlers over a lexicon file. Lean on purpose (one Python call per element start and
    end, character data appended by C straight into the open element's list): the reader runs once
    per element of files with millions of them."""

    def __init__(self, path: str):
        self.path = path
        self.parser: Any = None  # the expat parser, set by bliss.stream_xml
        self.phonemes: list[str] = []
        self.context: list[bool] = []
        self.symbol_index: dict[str, int] = {}
        self.inventory_seen = False
        self.root_seen = False
        self.orths: list[str] = []
        self.orth_off = [0]
        self.lines: list[int] = []
        self.pron_ph: list[int] = []
        self.pron_off = [0]
        self.scores: list[float] = []
        self.lemma_pron_off = [0]
        self.empty: list[float] = []
        self.specials: dict[int, str] = {}
        self.special_names: dict[str, int] = {}
        self.text: list[str] = []
        self.in_lemma = False
        self.lemma_line = 0
        self.lemma_special: Optional[str] = None
        self.lemma_orth0 = self.lemma_pron0 = self.lemma_ph0 = 0
        self.lemma_prons: list[tuple[int, ...]] = []
        self.lemma_empty: Optional[float] = None
        self.phon_line = 0
        self.phon_score = 0.0
        self.phoneme_symbols: list[str] = []
        self.variation: Optional[bool] = None
        self.in_phoneme = False

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def start_root(self, tag: str, a: dict) -> None:
        """The first element: it must be <lexicon>; then ``start`` takes over."""
        if tag != "lexicon":
            raise BlissError(f"{self.path}:{self.parser.CurrentLineNumber}: expected a Bliss lexicon (root element "
                             f"<lexicon>), got <{tag}>")
        self.parser.StartElementHandler = self.start

    def start(self, tag: str, a: dict) -> None:
        if tag == "orth" or tag == "symbol" or tag == "variation":
            text = self.text = []
            self.parser.CharacterDataHandler = text.append
        elif tag == "phon":
            parser = self.parser
            text = self.text = []
            parser.CharacterDataHandler = text.append
            self.phon_line = parser.CurrentLineNumber
            self.phon_score = self._score(parser, a) if a else 0.0
        elif tag == "lemma":
            self.in_lemma = True
            self.lemma_line = self.parser.CurrentLineNumber
            self.lemma_special = a.get("special") if a else None
            self.lemma_orth0 = len(self.orths)
            self.lemma_pron0 = len(self.scores)
            self.lemma_ph0 = len(self.pron_ph)
            self.lemma_prons = []
            self.lemma_empty = None
        elif tag == "phoneme":
            self.in_phoneme = True
            self.phoneme_symbols = []
            self.variation = None
        elif tag == "phoneme-inventory":
            if self.inventory_seen:
                log.error("%s: Phoneme inventory already defined", self.where(self.parser.CurrentLineNumber))
            self.inventory_seen = True

    def end(self, tag: str) -> None:
        if tag == "orth":
            self.parser.CharacterDataHandler = None
            if self.in_lemma:
                text = self.text
                self.orths.append(" ".join((text[0] if len(text) == 1 else "".join(text)).split()))
        elif tag == "phon":
            self.parser.CharacterDataHandler = None
            if self.in_lemma:
                text = self.text
                symbols = (text[0] if len(text) == 1 else "".join(text)).split()
                try:
                    phonemes = tuple(map(self.symbol_index.__getitem__, symbols))
                except KeyError as exc:
                    self._bad_phon(" ".join(symbols), exc.args[0])
                    return
                if not phonemes or phonemes in self.lemma_prons:
                    self._odd_phon(phonemes)
                    return
                self.lemma_prons.append(phonemes)
                pron_ph = self.pron_ph
                pron_ph.extend(phonemes)
                self.pron_off.append(len(pron_ph))
                self.scores.append(self.phon_score)
        elif tag == "lemma":
            self.in_lemma = False
            if self.lemma_special is None and len(self.orths) > self.lemma_orth0:  # the usual lemma
                self.lines.append(self.lemma_line)
                self.orth_off.append(len(self.orths))
                self.lemma_pron_off.append(len(self.scores))
                self.empty.append(math.nan if self.lemma_empty is None else self.lemma_empty)
            else:
                self._end_lemma()
        elif tag == "symbol":
            self.parser.CharacterDataHandler = None
            if self.in_phoneme:
                self.phoneme_symbols.append("".join(self.text).strip())
        elif tag == "variation":
            self.parser.CharacterDataHandler = None
            if self.in_phoneme:
                value = "".join(self.text).strip()
                if value not in ("none", "context"):
                    raise BlissError(f"{self.path}:{self.parser.CurrentLineNumber}: variation must be one of "
                                     f"\"none\" or \"context\", \"{value}\" given")
                self.variation = value == "context"
        elif tag == "phoneme":
            self.in_phoneme = False
            self._end_phoneme()

    def _score(self, parser, a: dict) -> float:
        weight, score = a.get("weight"), a.get("score")
        line = parser.CurrentLineNumber
        if weight is not None and score is not None:
            raise BlissError(f"{self.where(line)}: not possible to set both, pronunciation weight and score")
        raw = score if score is not None else weight
        if raw is None:
            return 0.0  # weight 1
        try:
            value = float(raw)
        except ValueError:
            attr = "score" if score is not None else "weight"
            raise BlissError(f"{self.where(line)}: <phon {attr}={raw!r}> is not a number") from None
        if score is not None:
            return value
        if value < 0:
            log.error("%s: pronunciation weight must be non-negative (weight=%r taken as 0)", self.where(line), raw)
            value = 0.0
        return -math.log(value) if value > 0 else math.inf

    def _bad_phon(self, text: str, symbol: str) -> None:
        if not self.inventory_seen:
            log.warning("%s: No phoneme inventory defined. Ignoring pronunciation", self.where(self.phon_line))
        else:
            log.error('%s: Could not create pronunciation for %s: Unknown phoneme: "%s"', self.where(self.phon_line),
                      text, symbol)

    def _odd_phon(self, phonemes: tuple) -> None:
        """An empty pronunciation (the lemma's first is kept) or a duplicate one (RASR's error)."""
        if not phonemes and self.lemma_empty is None:
            self.lemma_empty = self.phon_score
        else:
            log.error("%s: duplicate pronunciation", self.where(self.phon_line))

    def _end_phoneme(self) -> None:
        line = self.parser.CurrentLineNumber
        if not self.phoneme_symbols or not self.phoneme_symbols[0]:
            raise BlissError(f"{self.where(line)}: <phoneme> needs a <symbol>")
        k = len(self.phonemes)
        for sym in self.phoneme_symbols:
            if sym in self.symbol_index:
                if self.symbol_index[sym] == k:
                    log.warning('%s: Redundant definition of phonetic symbol "%s"', self.where(line), sym)
                    continue
                raise BlissError(f"{self.where(line)}: Phonetic symbol \"{sym}\" already assigned to a different "
                                 f"phoneme (phoneme {sym!r} is defined twice)")
            self.symbol_index[sym] = k
        self.phonemes.append(self.phoneme_symbols[0])
        self.context.append(True if self.variation is None else self.variation)

    def _end_lemma(self) -> None:
        if len(self.orths) == self.lemma_orth0:
            log.warning("%s: Lemma without orthographic form (skipped, as RASR does)", self.where(self.lemma_line))
            del self.pron_ph[self.lemma_ph0:], self.pron_off[self.lemma_pron0 + 1:], self.scores[self.lemma_pron0:]
            return
        special = self.lemma_special
        if special is not None:
            i = len(self.lines)
            if special in self.special_names:
                log.error('%s: Special lemma "%s" already defined (at line %d)', self.where(self.lemma_line), special,
                          self.lines[self.special_names[special]])
            else:
                self.special_names[special] = i
                self.specials[i] = special
        self.lines.append(self.lemma_line)
        self.orth_off.append(len(self.orths))
        self.lemma_pron_off.append(len(self.scores))
        self.empty.append(math.nan if self.lemma_empty is None else self.lemma_empty)

    def data(self) -> LexiconData:
        if not self.inventory_seen:
            raise BlissError(f"{self.path}:1: the lexicon has no <phoneme-inventory>")
        if not self.phonemes:
            raise BlissError(f"{self.path}:1: the phoneme inventory is empty")
        return LexiconData(
            self.path, self.phonemes, self.context, self.orths, np.asarray(self.orth_off, np.int64),
            np.asarray(self.lines, np.int64), np.asarray(self.pron_ph, np.int32), np.asarray(self.pron_off, np.int64),
            np.asarray(self.scores, np.float64), np.asarray(self.lemma_pron_off, np.int64),
            np.asarray(self.empty, np.float64), dict(self.specials))


def parse_lexicon(path: str) -> LexiconData:
    """The lexicon file read afresh (no cache)."""
    reader = _Reader(str(path))
    stream_xml(str(path), reader)
    return reader.data()


# -- the cache -------------------------------------------------------------------------------------
def cache_dir() -> Optional[str]:
    """Where compiled lexica go, or None when the cache is off (module docstring)."""
    env = os.environ.get("SPRINT_CONTROL_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "none", "0") else env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sprint_control")


def file_digest(path: str) -> tuple[str, int]:
    """sha256 of the file's bytes as stored (gzip'd or not) and its size."""
    h = hashlib.sha256()
    size = 0
    try:
        with _open_regular(path, "lexicon file", InputError) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
    except InputError as exc:
        raise BlissError(f"{path}:0: {exc.reason}") from None
    return h.hexdigest(), size


def _join(strings: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _split(arr: np.ndarray, count: int) -> list[str]:
    if count == 0:
        return []
    out = arr.tobytes().decode("utf-8").split("\n")
    if len(out) != count:
        raise ValueError(f"expected {count} strings, got {len(out)}")
    return out


def save_cache(data: LexiconData, target: str, digest: str, size: int) -> None:
    """Writes ``data`` to ``target`` atomically (a temporary file in the same directory, renamed)."""
    spec_idx = np.asarray(sorted(data.specials), np.int64)
    arrays: dict[str, np.ndarray] = {
        "meta": np.asarray([CACHE_FORMAT, size], np.int64),
        "digest": np.frombuffer(digest.encode("ascii"), np.uint8),
        "phonemes": _join(data.phonemes),
        "context": np.asarray(data.context_dependent, np.bool_),
        "orths": _join(data.orths),
        "lemma_orth_offsets": data.lemma_orth_offsets,
        "lemma_lines": data.lemma_lines,
        "pron_phonemes": data.pron_phonemes,
        "pron_offsets": data.pron_offsets,
        "pron_scores": data.pron_scores,
        "lemma_pron_offsets": data.lemma_pron_offsets,
        "empty_scores": data.empty_scores,
        "special_index": spec_idx,
        "special_names": _join([data.specials[int(i)] for i in spec_idx]),
    }
    fd, tmp = tempfile.mkstemp(prefix=".lexicon-", suffix=".tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_cache(source: str, target: str, digest: str, size: int) -> LexiconData:
    """The arrays of a cache file, checked; ValueError (or OSError) if any check fails."""
    with np.load(target, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    meta = a["meta"]
    if meta.shape != (2,) or int(meta[0]) != CACHE_FORMAT or int(meta[1]) != size:
        raise ValueError("another format or source size")
    if a["digest"].tobytes().decode("ascii") != digest:
        raise ValueError("another source digest")
    context = a["context"].astype(bool).tolist()
    phonemes = _split(a["phonemes"], len(context))
    lo, po, lpo = a["lemma_orth_offsets"], a["pron_offsets"], a["lemma_pron_offsets"]
    lines, ph, scores, empty = a["lemma_lines"], a["pron_phonemes"], a["pron_scores"], a["empty_scores"]
    n, p = lines.shape[0], scores.shape[0]
    ok = (lo.shape == (n + 1,) and lpo.shape == (n + 1,) and po.shape == (p + 1,) and empty.shape == (n,)
          and lo[0] == 0 and lpo[0] == 0 and po[0] == 0 and lpo[-1] == p and po[-1] == ph.shape[0]
          and bool(np.all(np.diff(lo) >= 0)) and bool(np.all(np.diff(po) >= 1)) and bool(np.all(np.diff(lpo) >= 0))
          and (ph.size == 0 or (int(ph.min()) >= 0 and int(ph.max()) < len(phonemes))))
    if not ok:
        raise ValueError("inconsistent arrays")
    orths = _split(a["orths"], int(lo[-1]))
    spec_idx = a["special_index"].tolist()
    names = _split(a["special_names"], len(spec_idx))
    if any(not 0 <= i < n for i in spec_idx):
        raise ValueError("special lemma out of range")
    return LexiconData(source, phonemes, context, orths, lo, lines, ph, po, scores, lpo, empty,
                       dict(zip(spec_idx, names)))


class _Lock:
    """An exclusive lock on a file (fcntl.flock), waited for at most ``timeout`` seconds; without
    fcntl, or on timeout, no lock (the cache file is written atomically either way)."""

    def __init__(self, path: str, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    log.warning("%s: waited %.0f s for another process building this cache entry; going on",
                                self.path, self.timeout)
                    return self
                time.sleep(0.05)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def read_lexicon(path: str, cache: Optional[str] = "auto") -> LexiconData:
    """The lexicon file's data: from the cache when it holds a valid entry for these exact bytes,
    else parsed (and stored there). ``cache``: a directory, None (no cache) or "auto"
    (``cache_dir()``). A cache that cannot be written is logged once and skipped."""
    path = str(path)
    where = cache_dir() if cache == "auto" else cache
    if where is None:
        return parse_lexicon(path)
    digest, size = file_digest(path)
    target = os.path.join(where, f"lexicon-{digest[:40]}.npz")
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
    except OSError as exc:
        log.warning("lexicon cache %s cannot be created (%s); parsing %s", where, exc, path)
        return parse_lexicon(path)

    def cached() -> Optional[LexiconData]:
        if not os.path.exists(target):
            return None
        try:
            data = load_cache(path, target, digest, size)
            log.debug("lexicon %s from the cache %s", path, target)
            return data
        except Exception as exc:  # any damage: a zip that does not open, a wrong array, a check that fails
            log.warning("lexicon cache file %s is not usable (%s); rebuilding it", target, exc)
            return None

    data = cached()
    if data is not None:
        return data
    try:
        lock = _Lock(target + ".lock", _LOCK_WAIT)
        lock.__enter__()
    except OSError as exc:
        log.warning("lexicon cache %s cannot be locked (%s); parsing %s", where, exc, path)
        return parse_lexicon(path)
    try:
        data = cached()  # another process may have built it while this one waited
        if data is not None:
            return data
        data = parse_lexicon(path)
        try:
            save_cache(data, target, digest, size)
        except OSError as exc:
            log.warning("lexicon cache file %s cannot be written (%s)", target, exc)
        return data
    finally:
        lock.__exit__(None, None, None)
