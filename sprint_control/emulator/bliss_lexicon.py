"""A RASR Bliss lexicon for the emulator, and the allophone-state automata it builds from pronunciations.

Read (the subset, see docs/emulator.md): ``<phoneme-inventory>`` of ``<phoneme><symbol>`` (with
``<variation>``, which monophones do not use), ``<lemma>`` with one or more ``<orth>``, ``<phon
score="...">`` pronunciations (phoneme symbols separated by spaces, score a -log weight, default 0)
and ``special="silence|unknown|sentence-begin|sentence-end"``.

Monophone tying as RASR's: the phonemes of the inventory in order (silence = the phonemes of the
silence lemma's pronunciations, one HMM state; the others N = ``hmm.states-per-phone`` states) get
consecutive class indices. An orthography is parsed into lemmas by longest match of the lemmas'
orthographies over its words; a word no lemma starts with takes the unknown lemma. The automaton is
built by ``automaton.build_automaton`` (RASR's graph builder, transition model and exporter rules).
CTC uses the first pronunciation of each word: label k - 1 for phoneme k, blank last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from .automaton import ExporterConfig, build_automaton, monophone_labels
from .lexicon import Automaton, ctc_topology, linear_alignment
from .lexicon_file import Lemma, LemmaTable, read_lexicon

log = logging.getLogger("sprint_control.emulator.bliss_lexicon")

#: The special lemma names the emulator's automata give a meaning to; RASR accepts any name (CTC
#: lexica use ``special="blank"``), and so does the reader.
SPECIALS = ("silence", "unknown", "sentence-begin", "sentence-end")
DEFAULT_STATES_PER_PHONE = 3


@dataclass(frozen=True)
class TransitionCosts:
    """Kept for callers of the former constructor argument; the automaton's costs come from the
    exporter configuration (``automaton.ExporterConfig``)."""

    loop: float = 0.0
    forward: float = 0.0
    silence_loop: float = 0.0
    silence_forward: float = 0.0


class BlissLexicon:
    """A Bliss lexicon file with monophone HMMs: the lexicon interface the criteria, the corpus and the
    callback use (``num_hmm_labels``, ``num_ctc_labels``, ``hmm_automaton``, ``ctc_automaton``,
    ``uniform_alignment``). The file is read by ``lexicon_file.read_lexicon`` (through its cache
    unless ``cache=None``); ``lemmas`` is a sequence whose Lemma objects are made on first use."""

    def __init__(self, path: str, states_per_phone: int = DEFAULT_STATES_PER_PHONE,
                 costs: TransitionCosts = TransitionCosts(), cache: Optional[str] = "auto"):
        if states_per_phone < 1:
            raise ValueError(f"hmm.states-per-phone must be >= 1, got {states_per_phone}")
        self.path = str(path)
        self.states_per_phone = int(states_per_phone)
        self.costs = costs
        data = read_lexicon(self.path, cache)
        self.data = data
        self.phonemes = data.phonemes
        self.lemmas = LemmaTable(data)
        self.special: dict[str, Lemma] = {name: self.lemmas[i] for i, name in sorted(data.specials.items())}
        sil = self.special.get("silence")
        self.silence_phonemes = {p for pron, _ in sil.pronunciations for p in pron} if sil else set()
        self.phoneme_index: dict[str, int] = {}  # non-silence phoneme -> k (1-based, inventory order)
        for p in self.phonemes:
            if p not in self.silence_phonemes:
                self.phoneme_index[p] = len(self.phoneme_index) + 1
        # orthography (whitespace-normalized) -> index of the first lemma that has it
        orths, offsets = data.orths, data.lemma_orth_offsets
        owner = np.repeat(np.arange(data.num_lemmas), np.diff(offsets)).tolist()
        self._by_orth: dict[str, int] = dict(zip(reversed(orths), reversed(owner)))
        self._by_orth.pop("", None)
        self._longest = max((o.count(" ") + 1 for o in self._by_orth), default=1)
        self._reported: set[str] = set()

    # -- lookup ---------------------------------------------------------------------------------------
    def lemma_by_orth(self, orth: str) -> Optional[Lemma]:
        """The first lemma with this (whitespace-normalized) orthography, or None."""
        i = self._by_orth.get(orth)
        return None if i is None else self.lemmas[i]

    def lemmas_of(self, orthography: str) -> list[Lemma]:
        """The orthography as lemmas, as RASR's orthographic parser reads it: longest match of lemma
        orthographies over its words; a word no lemma starts with is RASR's unknown word: the
        ``special="unknown"`` lemma stands in for it (warning ``substituting unknown word``), or
        without one it is left out (warning ``skipping unknown word``). Each warning is logged once
        per word. A lemma without any pronunciation (also an unknown lemma without ``<phon>``) leaves
        no path: ValueError with RASR's "lemma-pronunciation graph is empty", for this orthography
        alone."""
        words = orthography.split()
        out: list[Lemma] = []
        i = 0
        unk = self.special.get("unknown")
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                lemma = self.lemma_by_orth(" ".join(words[i : i + n]))
                if lemma is not None:
                    out.append(lemma)
                    i += n
                    break
            else:
                self._unknown_word(words[i], unk)
                if unk is not None:
                    out.append(unk)
                i += 1
        for lemma in out:
            if not lemma.pronunciations and lemma.empty_pronunciation is None:
                what = "the unknown lemma" if lemma is unk else "lemma"
                raise ValueError(f"lemma-pronunciation graph is empty: {what} {lemma.orths[0]!r} ({self.path}:"
                                 f"{lemma.line}) has no pronunciation (orthography {orthography!r})")
        return out

    def _unknown_word(self, word: str, unk: Optional[Lemma]) -> None:
        if word in self._reported:
            return
        self._reported.add(word)
        if unk is not None:
            log.warning('substituting unknown word "%s" with "%s" (%s)', word, unk.orths[0], self.path)
        else:
            log.warning('skipping unknown word "%s" (%s has no special="unknown" lemma)', word, self.path)

    # -- labels ---------------------------------------------------------------------------------------
    @cached_property
    def _monophone(self) -> dict:
        return monophone_labels(self, self.states_per_phone)

    @property
    def num_hmm_labels(self) -> int:
        return sum(len(v) for v in self._monophone.values())

    @property
    def silence_label(self) -> int:
        sil = [self._monophone[p][0] for p in self.phonemes if p in self.silence_phonemes]
        return sil[0] if sil else -1

    @property
    def num_ctc_labels(self) -> int:
        return len(self.phoneme_index) + 1

    @property
    def blank_label(self) -> int:
        return len(self.phoneme_index)

    @property
    def states_per_symbol(self) -> int:
        # what the synthetic corpus generator asks for first: it spells the built-in alphabet
        raise ValueError("corpus.synthetic needs the built-in lexicon; with lexicon.file give a corpus.file")

    def hmm_labels(self, phoneme: str) -> list[int]:
        """The emission indices of a phoneme's HMM states, by RASR's monophone state tying: classes
        numbered over the inventory in order, silence one state."""
        return list(self._monophone[phoneme])

    # -- automata (built by automaton.build_automaton) -----------------------------------------------
    def hmm_automaton(self, orthography: str, exporter=None) -> Automaton:
        """The allophone-state automaton as RASR exports it (``automaton.build_automaton``); without
        ``exporter``, RASR's defaults with this lexicon's states per phone."""
        return build_automaton(exporter or ExporterConfig(), self, orthography)

    def ctc_automaton(self, orthography: str) -> Automaton:
        """CTC over the phonemes (no silence) of each word's first pronunciation."""
        symbols = [self.phoneme_index[p] - 1 for lm in self.lemmas_of(orthography) if lm.pronunciations
                   for p in lm.pronunciations[0][0] if p not in self.silence_phonemes]
        return ctc_topology(symbols, self.blank_label)

    def uniform_alignment(self, orthography: str, num_frames: int) -> Optional[np.ndarray]:
        """A linear segmentation of the first pronunciations' HMM states (no silence) over the frames,
        for generated features; None if they do not fit."""
        labels = [lab for lm in self.lemmas_of(orthography) if lm.pronunciations
                  for p in lm.pronunciations[0][0] if p not in self.silence_phonemes for lab in self.hmm_labels(p)]
        return linear_alignment(labels, num_frames)

    @classmethod
    def from_config(cls, cfg) -> BlissLexicon:
        """The lexicon of ``--*.model-combination.lexicon.file`` with ``hmm.states-per-phone`` of the
        emulator's parsed arguments (the transition costs are the exporter's: ``automaton.exporter_config``)."""
        return cls(cfg["lexicon.file"], states_per_phone=cfg["hmm.states-per-phone"])

    def __repr__(self) -> str:
        return (f"BlissLexicon({self.path!r}, {len(self.phonemes)} phonemes, {len(self.lemmas)} lemmas, "
                f"{self.states_per_phone} states per phone)")
