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

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from .automaton import ExporterConfig, build_automaton, monophone_labels
from .bliss import BlissError, Node, first, parse_xml
from .lexicon import Automaton, ctc_topology, linear_alignment

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


@dataclass
class Lemma:
    orths: list[str]
    pronunciations: list[tuple[tuple[str, ...], float]]  # (phonemes, score)
    special: Optional[str]
    line: int


class BlissLexicon:
    """A Bliss lexicon file with monophone HMMs: the lexicon interface the criteria, the corpus and the
    callback use (``num_hmm_labels``, ``num_ctc_labels``, ``hmm_automaton``, ``ctc_automaton``,
    ``uniform_alignment``)."""

    def __init__(self, path: str, states_per_phone: int = DEFAULT_STATES_PER_PHONE,
                 costs: TransitionCosts = TransitionCosts()):
        if states_per_phone < 1:
            raise ValueError(f"hmm.states-per-phone must be >= 1, got {states_per_phone}")
        self.path = str(path)
        self.states_per_phone = int(states_per_phone)
        self.costs = costs
        root = parse_xml(self.path)
        if root.tag != "lexicon":
            raise root.error(f"expected a Bliss lexicon (root element <lexicon>), got <{root.tag}>")
        self.phonemes = self._inventory(root)
        self.lemmas = [self._lemma(node) for node in root.find_all("lemma")]
        self.special: dict[str, Lemma] = {}
        for lemma in self.lemmas:
            if lemma.special in self.special:
                raise BlissError(f"{self.path}:{lemma.line}: a second lemma special={lemma.special!r}")
            if lemma.special:
                self.special[lemma.special] = lemma
        sil = self.special.get("silence")
        self.silence_phonemes = {p for pron, _ in sil.pronunciations for p in pron} if sil else set()
        self.phoneme_index = {}  # non-silence phoneme -> k (1-based, inventory order)
        for p in self.phonemes:
            if p not in self.silence_phonemes:
                self.phoneme_index[p] = len(self.phoneme_index) + 1
        self._by_orth: dict[tuple[str, ...], Lemma] = {}
        for lemma in self.lemmas:
            for orth in lemma.orths:
                if orth.split():
                    self._by_orth.setdefault(tuple(orth.split()), lemma)
        self._longest = max((len(k) for k in self._by_orth), default=1)

    # -- reading --------------------------------------------------------------------------------------
    def _inventory(self, root: Node) -> list[str]:
        inv = first(root, "phoneme-inventory")
        if inv is None:
            raise root.error("the lexicon has no <phoneme-inventory>")
        phonemes: list[str] = []
        for ph in inv.find_all("phoneme"):
            sym = first(ph, "symbol")
            if sym is None or not sym.text:
                raise ph.error("<phoneme> needs a <symbol>")
            var = first(ph, "variation")
            if var is not None and var.text not in ("none", "context"):
                raise var.error(f"<variation> must be 'none' or 'context', got {var.text!r}")
            if sym.text in phonemes:
                raise sym.error(f"phoneme {sym.text!r} is defined twice")
            phonemes.append(sym.text)
        if not phonemes:
            raise inv.error("the phoneme inventory is empty")
        return phonemes

    def _lemma(self, node: Node) -> Lemma:
        special = node.attrib.get("special")
        if special is not None and special not in SPECIALS:
            raise node.error(f"unknown special={special!r}; expected one of {', '.join(SPECIALS)}")
        orths = [o.text or "" for o in node.find_all("orth")]  # "" = <orth/>: matches the empty word sequence
        prons = []
        known = set(self.phonemes)
        for ph in node.find_all("phon"):
            symbols = tuple(ph.text.split())
            unknown = [s for s in symbols if s not in known]
            if unknown:
                raise ph.error(f"unknown phoneme {unknown[0]!r} in pronunciation {ph.text!r} (not in the "
                               f"phoneme inventory: {' '.join(self.phonemes[:30])}"
                               f"{' ...' if len(self.phonemes) > 30 else ''})")
            try:
                score = float(ph.attrib.get("score", 0.0))
            except ValueError:
                raise ph.error(f"<phon score={ph.attrib['score']!r}> is not a number") from None
            if symbols:
                prons.append((symbols, score))
        if not any(orths) and special is None:
            raise node.error("<lemma> has no <orth>")
        return Lemma(orths, prons, special, node.line)

    # -- lookup ---------------------------------------------------------------------------------------
    def lemmas_of(self, orthography: str) -> list[Lemma]:
        """The orthography as lemmas: longest match of lemma orthographies over its words, the unknown
        lemma for a word no lemma starts with. ValueError when there is none."""
        words = orthography.split()
        out: list[Lemma] = []
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                lemma = self._by_orth.get(tuple(words[i : i + n]))
                if lemma is not None:
                    out.append(lemma)
                    i += n
                    break
            else:
                unk = self.special.get("unknown")
                if unk is None or not unk.pronunciations:
                    why = "no special=\"unknown\" lemma" if unk is None else "the unknown lemma has no <phon>"
                    raise ValueError(f"{self.path}: no lemma for word {words[i]!r} (orthography {orthography!r}) "
                                     f"and {why} to stand in for it")
                out.append(unk)
                i += 1
        return out

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
