"""The emulator's built-in lexicon and the allophone-state automata it builds from an orthography.

RASR turns an orthography into an allophone-state automaton with its lexicon and HMM topology.
The emulator has a small built-in stand-in: an alphabet of single-character symbols, each symbol is
``states_per_symbol`` HMM states (a loop on every state, a forward transition to the next), an
optional silence state before, between and after the words. A word is a whitespace-separated run
of symbols and is spelled letter by letter. CTC uses the same machinery with a blank-label
topology: ``blank l1 blank l2 ... blank``, every blank optional, a blank between two equal labels
mandatory.

Label layout (the columns of the posterior matrix):

- HMM (``fsa``/``full-sum``/``cross-entropy``): symbol ``i``, state ``j`` -> ``i * states_per_symbol + j``;
  silence -> ``len(alphabet) * states_per_symbol`` (the last label; present even when silence is off,
  so the label count does not depend on that option).
- CTC: symbol ``i`` -> ``i``; blank -> ``len(alphabet)`` (the last label).

Automaton layout (what ``export_allophone_state_fsa_*`` returns): state 0 is the initial state; state
``p + 1`` means "the last frame was emitted by position p" (a position is one HMM state, silence or
blank of the unrolled orthography); the last state is the only final state, reached by a copy of
every edge that enters a position allowed to end the segment. Every edge consumes one frame and
emits its label. Weights are -log transition probabilities; the topology is uniform, so they are
all 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

DEFAULT_ALPHABET = "abcdefghij"
DEFAULT_STATES_PER_SYMBOL = 3
_EXTRA_SYMBOLS_START = 0x4E00  # CJK block: thousands of single-character symbols for big alphabets


def make_alphabet(size: int) -> str:
    """An alphabet of ``size`` single-character symbols: a-z first, then CJK ideographs."""
    if size < 1:
        raise ValueError(f"alphabet size must be >= 1, got {size}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    if size <= len(letters):
        return letters[:size]
    return letters + "".join(chr(_EXTRA_SYMBOLS_START + i) for i in range(size - len(letters)))


@dataclass(frozen=True)
class Automaton:
    """An emitting automaton: edge e goes from ``edges_from[e]`` to ``edges_to[e]``, consumes one frame
    and emits label ``edges_label[e]`` at cost ``weights[e]`` (-log probability)."""

    num_states: int
    edges_from: np.ndarray
    edges_to: np.ndarray
    edges_label: np.ndarray
    weights: np.ndarray
    start: int = 0
    final: int = field(default=-1)

    def __post_init__(self):
        if self.final < 0:
            object.__setattr__(self, "final", self.num_states - 1)

    @property
    def num_edges(self) -> int:
        return int(self.edges_from.shape[0])

    def export(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """RASR's export layout: ``(num_states, num_edges, edges uint32 (3*E,) = [all from, all to,
        all labels], weights float32 (E,))``."""
        edges = np.concatenate([self.edges_from, self.edges_to, self.edges_label]).astype(np.uint32)
        return self.num_states, self.num_edges, edges, self.weights.astype(np.float32)


def _build(labels: list[int], optional: list[bool], skip_needs_distinct: bool) -> Automaton:
    """Unrolls positions (one label each, some optional) into the emitting automaton described above."""
    P = len(labels)
    start, sink = 0, P + 1
    edges: list[tuple[int, int, int]] = []

    def successors(p: int) -> list[int]:
        out = []
        if p + 1 < P:
            out.append(p + 1)
            if optional[p + 1] and p + 2 < P and not (skip_needs_distinct and labels[p] == labels[p + 2]):
                out.append(p + 2)
        return out

    initial = [0] if P else []
    if P > 1 and optional[0]:
        initial.append(1)
    for q in initial:
        edges.append((start, q + 1, labels[q]))
    for p in range(P):
        edges.append((p + 1, p + 1, labels[p]))
        for q in successors(p):
            edges.append((p + 1, q + 1, labels[q]))
    finals = set()
    if P:
        finals.add(P - 1)
        if P > 1 and optional[P - 1]:
            finals.add(P - 2)
    # A single final state: copy every edge that enters a final position, redirected to the sink.
    edges += [(f, sink, lab) for (f, t, lab) in edges if t - 1 in finals and t != start]
    arr = np.array(edges, dtype=np.int64).reshape(-1, 3)
    return Automaton(
        num_states=P + 2,
        edges_from=arr[:, 0].copy(),
        edges_to=arr[:, 1].copy(),
        edges_label=arr[:, 2].copy(),
        weights=np.zeros(len(edges), dtype=np.float32),
    )


def ctc_topology(symbols: list[int], blank: int) -> Automaton:
    """The CTC automaton of a label sequence: ``blank l1 blank l2 ... blank``, every blank optional
    except between two equal labels; a lone blank for an empty sequence."""
    labels = [blank]
    optional = [True]
    for s in symbols:
        labels += [s, blank]
        optional += [False, True]
    if not symbols:
        optional = [False]
    return _build(labels, optional, skip_needs_distinct=True)


def linear_alignment(labels: list[int], num_frames: int) -> np.ndarray | None:
    """``labels`` spread evenly over ``num_frames`` frames (uint32), or None if they do not fit."""
    if not labels or len(labels) > num_frames:
        return None
    bounds = np.linspace(0, num_frames, len(labels) + 1).round().astype(int)
    return np.repeat(np.array(labels, dtype=np.uint32), np.diff(bounds))


@dataclass(frozen=True)
class Lexicon:
    """The built-in lexicon: ``alphabet`` (single-character symbols), HMM states per symbol, optional
    silence."""

    alphabet: str = DEFAULT_ALPHABET
    states_per_symbol: int = DEFAULT_STATES_PER_SYMBOL
    silence: bool = True

    def __post_init__(self):
        if (
            not self.alphabet
            or len(set(self.alphabet)) != len(self.alphabet)
            or any(c.isspace() for c in self.alphabet)
        ):
            raise ValueError(f"alphabet must be distinct non-space characters, got {self.alphabet!r}")
        if self.states_per_symbol < 1:
            raise ValueError(f"states_per_symbol must be >= 1, got {self.states_per_symbol}")

    @property
    def num_hmm_labels(self) -> int:
        return len(self.alphabet) * self.states_per_symbol + 1

    @property
    def silence_label(self) -> int:
        return len(self.alphabet) * self.states_per_symbol

    @property
    def num_ctc_labels(self) -> int:
        return len(self.alphabet) + 1

    @property
    def blank_label(self) -> int:
        return len(self.alphabet)

    @cached_property
    def _index(self) -> dict:
        return {c: i for i, c in enumerate(self.alphabet)}

    def words(self, orthography: str) -> list[list[int]]:
        """The orthography as words of symbol indices; ValueError for a symbol outside the alphabet."""
        index = self._index
        out = []
        for word in orthography.split():
            try:
                out.append([index[c] for c in word])
            except KeyError as exc:
                raise ValueError(
                    f"orthography {orthography!r}: symbol {exc.args[0]!r} is not in the lexicon's alphabet "
                    f"{self.alphabet[:40]!r}{'...' if len(self.alphabet) > 40 else ''}"
                ) from None
        return out

    def hmm_positions(self, orthography: str) -> tuple[list[int], list[bool]]:
        """The unrolled HMM state sequence (labels, optional flags) with optional silences."""
        labels: list[int] = []
        optional: list[bool] = []
        S = self.states_per_symbol

        def sil():
            if self.silence:
                labels.append(self.silence_label)
                optional.append(True)

        words = self.words(orthography)
        if not words:
            if self.silence:
                return [self.silence_label], [False]
            return [], []
        sil()
        for w in words:
            for sym in w:
                for j in range(S):
                    labels.append(sym * S + j)
                    optional.append(False)
            sil()
        return labels, optional

    def hmm_automaton(self, orthography: str) -> Automaton:
        labels, optional = self.hmm_positions(orthography)
        return _build(labels, optional, skip_needs_distinct=False)

    def ctc_automaton(self, orthography: str) -> Automaton:
        return ctc_topology([s for w in self.words(orthography) for s in w], self.blank_label)

    def uniform_alignment(self, orthography: str, num_frames: int) -> np.ndarray | None:
        """A linear segmentation of the HMM states (no silence) over ``num_frames``: used to give a
        corpus without alignments informative features. None if the states do not fit."""
        labels, optional = self.hmm_positions(orthography)
        return linear_alignment([lab for lab, opt in zip(labels, optional) if not opt], num_frames)
