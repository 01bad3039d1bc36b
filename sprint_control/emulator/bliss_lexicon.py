"""A RASR Bliss lexicon for the emulator, and the allophone-state automata it builds from pronunciations.

Read (the subset, see docs/emulator.md): ``<phoneme-inventory>`` of ``<phoneme><symbol>`` (with
``<variation>``, which monophones do not use), ``<lemma>`` with one or more ``<orth>``, ``<phon
score="...">`` pronunciations (phoneme symbols separated by spaces, score a -log weight, default 0)
and ``special="silence|unknown|sentence-begin|sentence-end"``.

Monophone tying: emission index 0 is silence (the phonemes of the silence lemma's pronunciations, one
HMM state); the k-th non-silence phoneme of the inventory (1-based, inventory order) in state s is
``1 + N * (k - 1) + s`` with N = ``hmm.states-per-phone``. An orthography is parsed into lemmas by
longest match of the lemmas' orthographies over its words; a word no lemma starts with takes the
unknown lemma. The automaton: optional silence at the start, between words and at the end; each
word one branch per pronunciation, entered at the pronunciation's score; every HMM state loops at
its loop cost and leaves at its forward cost (``tdp.silence.*`` for silence, ``tdp.*.*`` otherwise).
It has the layout of ``lexicon.Automaton`` (state 0 initial, one final state, one frame per edge).
CTC uses the first pronunciation of each word: label k - 1 for phoneme k, blank last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .bliss import BlissError, Node, first, parse_xml
from .lexicon import Automaton, ctc_topology, linear_alignment

SPECIALS = ("silence", "unknown", "sentence-begin", "sentence-end")
DEFAULT_STATES_PER_PHONE = 3


@dataclass(frozen=True)
class TransitionCosts:
    """-log transition probabilities: staying in an HMM state (loop) and leaving it (forward)."""

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


@dataclass
class _Graph:
    """Positions (one HMM state each) of an unrolled orthography and the transitions between them."""

    labels: list[int] = field(default_factory=list)
    silence: list[bool] = field(default_factory=list)
    arcs: list[tuple[int, int, float]] = field(default_factory=list)  # (from, to, extra cost); -1 = start

    def add(self, label: int, is_silence: bool) -> int:
        self.labels.append(label)
        self.silence.append(is_silence)
        return len(self.labels) - 1


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
        self.phoneme_index: dict[str, int] = {}  # non-silence phoneme -> k (1-based, inventory order)
        for p in self.phonemes:
            if p not in self.silence_phonemes:
                self.phoneme_index[p] = len(self.phoneme_index) + 1
        self._by_orth: dict[tuple[str, ...], Lemma] = {}
        for lemma in self.lemmas:
            for orth in lemma.orths:
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
        orths = [o.text for o in node.find_all("orth") if o.text]
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
        if not orths and special is None:
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
    @property
    def num_hmm_labels(self) -> int:
        return 1 + self.states_per_phone * len(self.phoneme_index)

    @property
    def silence_label(self) -> int:
        return 0

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
        """The emission indices of a phoneme's HMM states: [0] for silence."""
        if phoneme in self.silence_phonemes:
            return [0]
        base = 1 + self.states_per_phone * (self.phoneme_index[phoneme] - 1)
        return list(range(base, base + self.states_per_phone))

    # -- automata -------------------------------------------------------------------------------------
    def _graph(self, orthography: str) -> tuple[_Graph, list[int]]:
        """The positions and arcs of the orthography, and the positions a path may end in."""
        g = _Graph()
        has_silence = bool(self.silence_phonemes)
        frontier = [-1]  # where the next element may be entered from (-1: the start)

        def optional_silence() -> None:
            if has_silence:
                s = g.add(0, True)
                g.arcs.extend((f, s, 0.0) for f in frontier)
                frontier.append(s)

        lemmas = [lm for lm in self.lemmas_of(orthography) if lm.pronunciations]
        if not lemmas:
            if not has_silence:
                return g, []
            s = g.add(0, True)
            g.arcs.append((-1, s, 0.0))
            return g, [s]
        optional_silence()
        for lemma in lemmas:
            ends: list[Any] = []
            for phonemes, score in lemma.pronunciations:
                prev = None
                for ph in phonemes:
                    for label in self.hmm_labels(ph):
                        p = g.add(label, label == 0)
                        if prev is None:
                            g.arcs.extend((f, p, score) for f in frontier)
                        else:
                            g.arcs.append((prev, p, 0.0))
                        prev = p
                ends.append(prev)
            frontier[:] = ends
            optional_silence()
        return g, list(frontier)

    def hmm_automaton(self, orthography: str) -> Automaton:
        """The allophone-state automaton (module docstring), weights = transition costs + scores."""
        g, finals = self._graph(orthography)
        c = self.costs
        P = len(g.labels)
        sink = P + 1
        edges: list[tuple[int, int, int, float]] = []
        for p in range(P):
            edges.append((p + 1, p + 1, g.labels[p], c.silence_loop if g.silence[p] else c.loop))
        for f, t, extra in g.arcs:
            leave = 0.0 if f < 0 else (c.silence_forward if g.silence[f] else c.forward)
            edges.append((f + 1, t + 1, g.labels[t], leave + extra))
        final_set = set(finals)
        edges += [(f, sink, lab, w) for (f, t, lab, w) in edges if t - 1 in final_set]
        arr = np.array([e[:3] for e in edges], dtype=np.int64).reshape(-1, 3)
        return Automaton(
            num_states=P + 2,
            edges_from=arr[:, 0].copy(),
            edges_to=arr[:, 1].copy(),
            edges_label=arr[:, 2].copy(),
            weights=np.array([e[3] for e in edges], dtype=np.float32),
        )

    def ctc_automaton(self, orthography: str) -> Automaton:
        """CTC over the phonemes (no silence) of each word's first pronunciation."""
        symbols = [self.phoneme_index[p] - 1 for lm in self.lemmas_of(orthography) if lm.pronunciations
                   for p in lm.pronunciations[0][0] if p not in self.silence_phonemes]
        return ctc_topology(symbols, self.blank_label)

    def uniform_alignment(self, orthography: str, num_frames: int) -> Optional[np.ndarray]:
        """A linear segmentation of the first pronunciations' HMM states (no silence) over the frames,
        for generated features; None if they do not fit."""
        labels = [lab for lm in self.lemmas_of(orthography) if lm.pronunciations
                  for p in lm.pronunciations[0][0] for lab in self.hmm_labels(p) if lab != 0]
        return linear_alignment(labels, num_frames)

    @classmethod
    def from_config(cls, cfg) -> BlissLexicon:
        """The lexicon of ``--*.model-combination.lexicon.file`` with ``hmm.states-per-phone`` and the
        ``tdp.*`` costs of the emulator's parsed arguments."""
        def silence(what: str) -> float:  # RASR's tdp.*.<what> covers silence unless tdp.silence.<what> is set
            key = f"tdp.silence.{what}"
            return cfg[key] if cfg.given(key) else cfg[f"tdp.*.{what}"]

        costs = TransitionCosts(cfg["tdp.*.loop"], cfg["tdp.*.forward"], silence("loop"), silence("forward"))
        return cls(cfg["lexicon.file"], states_per_phone=cfg["hmm.states-per-phone"], costs=costs)

    def __repr__(self) -> str:
        return (f"BlissLexicon({self.path!r}, {len(self.phonemes)} phonemes, {len(self.lemmas)} lemmas, "
                f"{self.states_per_phone} states per phone)")
