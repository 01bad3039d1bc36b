"""The allophone-state automaton of an orthography, as RASR's ``alignment-fsa-exporter`` exports it.

One public function, ``build_automaton(exporter, lexicon, orthography)``, gives the automaton that
``export_allophone_state_fsa_*`` returns and the automaton criteria use; every caller (the callback,
the criteria, an in-process builder) goes through it, so they agree byte for byte.

The topology is chosen by the exporter's configuration (``ExporterConfig.topology``), never by the
training criterion: ``hmm`` (RASR's default) or ``ctc`` (the emulator's own blank topology).

HMM topology with a Bliss lexicon, following RASR's graph builder, transition model and exporter
(see docs/emulator.md, "Automata as RASR exports them"):

- emission labels by monophone state tying: phoneme ``k`` of the inventory (inventory order, silence
  included) in state ``s`` gets the next class index, silence has one state;
- each non-silence state is repeated ``hmm.state-repetitions`` times (RASR's sub-states), each
  repetition its own automaton state with the same label;
- optional silence between the words, at the start and at the end when the silence lemma has an
  empty orthography (``<orth/>``), as RASR's orthographic parser matches it there;
- equal (from, to, label) edges that RASR's epsilon removal collects (tropical semiring) keep the
  cheaper weight;
- weights from the transition model with RASR's legacy (default) or corrected applicator: loop,
  forward and skip inside a word, ``exit`` of the word's last state plus ``entry-m1.forward``
  (legacy) when entering the next word, skips not over the last state of a word, final weight =
  exit cost; pronunciation scores (normalised per lemma with ``normalize-pronunciation``) on the
  edges into a word's first states; all tdps times ``tdp.scale``; infinite costs remove the edge;
- the exporter's layout: states numbered in topological order, edges sorted by (to - from, to,
  from), equal (from, to, label) edges merged by log-sum, one final state added (copies of the
  edges into the final states, final weight added) unless the only final state is the last one
  with weight 0.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .lexicon import Automaton

TDP_TYPES = ("state-0", "state-1", "silence", "entry-m1", "entry-m2")
TDP_TRANSITIONS = ("loop", "forward", "skip", "exit")
#: RASR's StateTransitionModel defaults (-log probabilities)
TDP_DEFAULTS = {"loop": 3.0, "forward": 0.0, "skip": 3.0, "exit": 0.0}
TOPOLOGIES = ("hmm", "ctc")
APPLICATORS = ("legacy", "corrected")
_F32_MAX = float(np.finfo(np.float32).max)


class ExporterConfigError(ValueError):
    """A key of the exporter's configuration has a value the emulator cannot honour."""


@dataclass(frozen=True)
class Tdp:
    """One state type's transition costs (-log probabilities, already times ``tdp.scale``)."""

    loop: float = TDP_DEFAULTS["loop"]
    forward: float = TDP_DEFAULTS["forward"]
    skip: float = TDP_DEFAULTS["skip"]
    exit: float = TDP_DEFAULTS["exit"]


@dataclass(frozen=True)
class ExporterConfig:
    """What RASR's ``alignment-fsa-exporter`` reads, as far as the emulator follows it."""

    topology: str = "hmm"
    states_per_phone: Optional[int] = None  # None: the lexicon's
    state_repetitions: int = 2
    phone: Tdp = Tdp()
    silence: Tdp = Tdp()
    entry: Tdp = Tdp()  # entry-m1 (its loop is unused: RASR forbids it)
    applicator: str = "legacy"
    silence_repetitions: bool = True  # orthographic-parser.allow-for-silence-repetitions
    normalize_pronunciation: bool = True
    history_length: int = 1  # phonology.history-length: the left context that splits shared suffixes
    warnings: tuple = field(default=(), compare=False)

    def __post_init__(self):
        if self.topology not in TOPOLOGIES:
            raise ExporterConfigError(f"allophone-state-graph-builder.topology={self.topology!r}: the emulator builds "
                                      f"{' and '.join(TOPOLOGIES)} topologies only")
        if self.applicator not in APPLICATORS:
            raise ExporterConfigError(f"tdp.applicator-type={self.applicator!r}: expected legacy or corrected")
        if self.state_repetitions < 1:
            raise ExporterConfigError(f"hmm.state-repetitions must be >= 1, got {self.state_repetitions}")


# -- reading RASR's keys ------------------------------------------------------------------------------
def _tdp_value(cfg: Any, kind: str, transition: str, scale: float) -> float:
    """RASR's resolution of ``tdp.<kind>.<transition>``: the exact key, else ``tdp.*.<transition>``,
    else RASR's default; scaled and clipped to float32's range (infinity stays "no transition")."""
    for key in (f"tdp.{kind}.{transition}", f"tdp.*.{transition}"):
        if cfg.given(key):
            value = float(cfg[key])
            break
    else:
        value = TDP_DEFAULTS[transition]
    value *= scale
    if math.isnan(value):
        raise ExporterConfigError(f"tdp.{kind}.{transition}: not a number")
    return math.inf if value >= _F32_MAX else value


def exporter_keys_given(cfg: Any) -> list[str]:
    """The exporter's keys that the configuration sets (they make it an HMM-topology export unless
    the topology key says otherwise)."""
    from .args import EXPORTER_OPTIONS  # the option names the exporter reads

    return [name for name in EXPORTER_OPTIONS if cfg.given(name)]


#: components of RASR keys that shape the exported automaton
_EXPORT_COMPONENTS = ("tdp", "hmm", "state-tying", "allophone-state-graph-builder", "orthographic-parser",
                      "phonology", "allophones", "alignment-fsa-exporter")


def exporter_key_unread(key: str) -> bool:
    """Whether an unknown key belongs to what RASR's automaton export reads (tdp.*, hmm.*, the graph
    builder, ...): ignoring it could change the automaton, so the emulator warns instead of noting it."""
    parts = key.split(".")
    return any(c in parts[:-1] for c in _EXPORT_COMPONENTS)


def exporter_config(cfg: Any) -> ExporterConfig:
    """The exporter configuration of the emulator's parsed arguments. The topology: the
    ``allophone-state-graph-builder.topology`` key when given; else ``ctc`` when the training
    criterion is the emulator's ``ctc`` and no exporter key is set (the emulator's historic default);
    else ``hmm``, RASR's default. Raises ExporterConfigError for a value that would change the
    automaton and that the emulator cannot honour; ``warnings`` lists keys it reads differently."""
    warnings: list[str] = []
    if cfg.given("allophone-state-graph-builder.topology"):
        topology = cfg["allophone-state-graph-builder.topology"]
        if topology == "rna":
            raise ExporterConfigError("allophone-state-graph-builder.topology=rna: the emulator has no RNA topology")
    elif cfg["training-criterion"] == "ctc" and not exporter_keys_given(cfg):
        topology = "ctc"
    else:
        topology = "hmm"
    bliss = bool(cfg["lexicon.file"])
    if bliss and topology == "hmm":
        tying = cfg["state-tying.type"] if cfg.given("state-tying.type") else None
        if tying is None:
            warnings.append("state-tying.type is not given: RASR's default is cart (it needs a CART file); the "
                            "emulator uses monophone tying")
        elif tying != "monophone":
            raise ExporterConfigError(f"state-tying.type={tying}: the emulator has monophone state tying only "
                                      "(the emission labels would differ)")
        if cfg["hmm.across-word-model"] and (cfg["phonology.history-length"] or cfg["phonology.future-length"]):
            raise ExporterConfigError("hmm.across-word-model=true with phonology.history-length/future-length > 0: "
                                      "RASR splits the states at word boundaries by the neighbouring words' "
                                      "phonemes, the emulator does not (set the context lengths to 0 for "
                                      "monophones, or across-word-model=false)")
        if cfg["orthographic-parser.normalize-lemma-sequence-scores"]:
            raise ExporterConfigError("orthographic-parser.normalize-lemma-sequence-scores=true: not followed by "
                                      "the emulator (it changes the weights)")
        if cfg.given("tdp.tying-type") and cfg["tdp.tying-type"] != "global":
            raise ExporterConfigError(f"tdp.tying-type={cfg['tdp.tying-type']}: the emulator has the global "
                                      "transition model only")
    if bliss and topology == "ctc":
        warnings.append("allophone-state-graph-builder.topology=ctc with a Bliss lexicon: the emulator exports its own "
                        "CTC layout (non-silence phonemes, blank last, first pronunciations), not RASR's CTC graph "
                        "builder (HMM states with blank states inserted, a blank allophone)")
    if not bliss and topology == "hmm":
        ignored = [k for k in exporter_keys_given(cfg) if k.startswith(("tdp.", "hmm.", "state-tying", "normalize-",
                                                                       "orthographic-parser", "phonology"))]
        if ignored:
            warnings.append(f"{', '.join(ignored)}: apply to a Bliss lexicon (lexicon.file); the built-in "
                            "lexicon's HMM is the emulator's own uniform topology (lexicon.states-per-symbol)")
    scale = float(cfg["tdp.scale"])
    phone = Tdp(*(_tdp_value(cfg, "state-0", t, scale) for t in TDP_TRANSITIONS))
    state1 = Tdp(*(_tdp_value(cfg, "state-1", t, scale) for t in TDP_TRANSITIONS))
    if bliss and topology == "hmm" and state1 != phone:
        warnings.append("tdp.state-1.* differs from tdp.state-0.*: RASR's global transition model applies "
                        "state-0's costs to every phone state (as the emulator does)")
    silence = Tdp(*(_tdp_value(cfg, "silence", t, scale) for t in TDP_TRANSITIONS))
    entry = Tdp(*(_tdp_value(cfg, "entry-m1", t, scale) for t in TDP_TRANSITIONS))
    return ExporterConfig(
        topology=topology,
        states_per_phone=cfg["hmm.states-per-phone"],
        state_repetitions=cfg["hmm.state-repetitions"],
        phone=phone,
        silence=silence,
        entry=entry,
        applicator=cfg["tdp.applicator-type"],
        silence_repetitions=cfg["orthographic-parser.allow-for-silence-repetitions"],
        normalize_pronunciation=cfg["normalize-pronunciation"],
        history_length=cfg["phonology.history-length"],
        warnings=tuple(warnings),
    )


def default_exporter(criterion: str) -> ExporterConfig:
    """The exporter of a configuration without exporter keys: CTC topology for the ``ctc``
    criterion, RASR's HMM defaults otherwise."""
    return ExporterConfig(topology="ctc" if criterion == "ctc" else "hmm")


# -- the automaton ---------------------------------------------------------------------------------
def build_automaton(exporter: Any, lexicon: Any, orthography: str) -> Automaton:
    """THE automaton of an orthography: what the export commands return and the automaton criteria
    use. ``exporter`` is an ``ExporterConfig`` or the emulator's parsed arguments (``args.Config``,
    read with ``exporter_config``); ``lexicon`` is the built-in ``Lexicon`` or a ``BlissLexicon``."""
    if not isinstance(exporter, ExporterConfig):
        exporter = exporter_config(exporter)
    if exporter.topology == "ctc":
        return lexicon.ctc_automaton(orthography)
    if not hasattr(lexicon, "lemmas_of"):  # the built-in lexicon: the emulator's own HMM stand-in
        return lexicon.hmm_automaton(orthography)
    return _bliss_hmm(exporter, lexicon, orthography)


def monophone_labels(lexicon: Any, states_per_phone: int) -> dict:
    """RASR's monophone state tying: phoneme -> its states' class indices, classes numbered over the
    inventory in order, silence one state."""
    out, n = {}, 0
    for p in lexicon.phonemes:
        k = 1 if p in lexicon.silence_phonemes else states_per_phone
        out[p] = list(range(n, n + k))
        n += k
    return out


def _f32(x: float) -> float:
    return float(np.float32(x))


def _add(*costs: float) -> float:
    total = np.float32(0.0)
    for c in costs:
        if math.isinf(c):
            return math.inf
        total = np.float32(total + np.float32(c))
    return math.inf if float(total) >= _F32_MAX else float(total)


def _pron_scores(exporter: ExporterConfig, prons: list) -> list[float]:
    if not exporter.normalize_pronunciation or not prons:
        return [float(s) for _, s in prons]
    weights = [math.exp(-float(s)) for _, s in prons]
    total = sum(weights)
    return [-math.log(w / total) if w > 0 else math.inf for w in weights]


def _silence_optional(lexicon: Any) -> bool:
    sil = lexicon.special.get("silence")
    return bool(sil is not None and sil.pronunciations and any(not o.strip() for o in sil.orths))


def _bliss_hmm(exporter: ExporterConfig, lexicon: Any, orthography: str) -> Automaton:
    N = lexicon.states_per_phone
    if exporter.states_per_phone not in (None, N):
        raise ValueError(f"hmm.states-per-phone: the exporter has {exporter.states_per_phone}, the lexicon's labels "
                         f"{N} states per phone")
    R = exporter.state_repetitions
    H = exporter.history_length
    labels_of = monophone_labels(lexicon, N)
    legacy = exporter.applicator == "legacy"
    tdp_sil, tdp_phone, tdp_entry = exporter.silence, exporter.phone, exporter.entry

    pos_label: list[int] = []
    pos_sil: list[bool] = []
    arcs: list[tuple[int, int, int, float]] = []  # (from state, to state, label, weight); state 0 initial

    def tdp(p: int) -> Tdp:
        return tdp_sil if pos_sil[p - 1] else tdp_phone

    def new_position(label: int, is_sil: bool) -> int:
        pos_label.append(label)
        pos_sil.append(is_sil)
        return len(pos_label)  # state id = position + 1

    def lemma_states(prons: list) -> list[list[int]]:
        """Each pronunciation's chain of states. As in RASR's lexicon transducer, pronunciations of a
        lemma share the states of a common phoneme suffix, unless their allophones differ by the left
        context (``phonology.history-length`` phonemes, the word boundary counting as one): a state is
        keyed by that context, the phoneme sequence from its phoneme on, its HMM state and its
        repetition."""
        keyed: dict = {}
        chains = []
        for phonemes in prons:
            chain = []
            for j, ph in enumerate(phonemes):
                is_sil = ph in lexicon.silence_phonemes
                for s_index, lab in enumerate(labels_of[ph]):
                    for r in range(1 if is_sil else R):
                        key = (tuple(phonemes[max(0, j - H):]), j < H, s_index, r)
                        if key not in keyed:
                            keyed[key] = new_position(lab, is_sil)
                        chain.append(keyed[key])
            chains.append(chain)
        return chains

    # An entry point is the (epsilon) word-start state: the ways into it, (source state, cost so far),
    # source 0 = the initial state. Returns the lemma's last states.
    def enter(entries: list[tuple[int, float]], prons: list, scores: list[float]) -> list[int]:
        chains = lemma_states([phonemes for phonemes, _ in prons])
        looped: set = set()
        linked: set = set()
        for states, score in zip(chains, scores):
            first = states[0]
            for src, cost in entries:
                if legacy:
                    fwd, skip = tdp_entry.forward, tdp_entry.skip
                elif src == 0:
                    fwd, skip = 0.0, tdp_phone.skip
                else:
                    fwd, skip = tdp(src).forward, tdp(src).skip
                arcs.append((src, first, pos_label[first - 1], _add(cost, fwd, score)))
                if len(states) > 1:  # a skip never lands behind the word's last state
                    arcs.append((src, states[1], pos_label[states[1] - 1], _add(cost, skip, score)))
            for i, st in enumerate(states):  # a shared suffix has its edges once
                t = tdp(st)
                if st not in looped:
                    looped.add(st)
                    arcs.append((st, st, pos_label[st - 1], _add(t.loop)))
                if i + 1 < len(states) and (st, states[i + 1]) not in linked:
                    linked.add((st, states[i + 1]))
                    arcs.append((st, states[i + 1], pos_label[states[i + 1] - 1], _add(t.forward)))
                    if i + 2 < len(states):
                        arcs.append((st, states[i + 2], pos_label[states[i + 2] - 1], _add(t.skip)))
        return list(dict.fromkeys(chain[-1] for chain in chains))

    def exits(ends: list[int]) -> list[tuple[int, float]]:
        return [(e, _add(tdp(e).exit)) for e in ends]

    sil_lemma = lexicon.special.get("silence")
    optional_sil = _silence_optional(lexicon)
    silences: list[int] = []

    def optional_silence(entries: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if not optional_sil:
            return entries
        ends = enter(entries, sil_lemma.pronunciations, _pron_scores(exporter, sil_lemma.pronunciations))
        silences.extend(ends)
        return list(entries) + exits(ends)

    lemmas = [lm for lm in lexicon.lemmas_of(orthography) if lm.pronunciations]
    if not lemmas and not optional_sil:
        raise ValueError(f"orthography {orthography!r}: the allophone-state graph is empty (no word with a "
                         "pronunciation and no silence lemma with an empty orthography)")
    entries: list[tuple[int, float]] = [(0, 0.0)]
    entries = optional_silence(entries)
    for lemma in lemmas:
        ends = enter(entries, lemma.pronunciations, _pron_scores(exporter, lemma.pronunciations))
        entries = optional_silence(exits(ends))
    if exporter.silence_repetitions:
        # allow-for-silence-repetitions: the lemma acceptor loops on silence; leaving a silence and
        # entering it again is a second self-loop, collected with the loop (the cheaper one).
        for s in silences:
            again = tdp_entry.forward if legacy else tdp_sil.forward
            arcs.append((s, s, pos_label[s - 1], _add(tdp_sil.exit, again)))
    finals = {src: cost for src, cost in entries if src != 0}
    # Equal (from, to, label) edges arise here only where RASR's epsilon removal (leaving a word
    # through its word-start state) meets an edge that is already there; it collects them in the
    # graph's tropical semiring: the cheaper one.
    best: dict = {}
    for f, t, lab, w in arcs:
        best[(f, t, lab)] = min(w, best.get((f, t, lab), math.inf))
    return _export_layout(len(pos_label) + 1, [(*k, w) for k, w in best.items()], finals)


def _export_layout(num_states: int, arcs: list, finals: dict) -> Automaton:
    """RASR's exporter: drop infinite edges, number the states topologically (the lowest-numbered
    state without unvisited predecessors first), sort the edges by (to - from, to, from), merge equal
    (from, to, label) neighbours by log-sum, add one final state."""
    arcs = [a for a in arcs if not math.isinf(a[3])]
    finals = {s: w for s, w in finals.items() if not math.isinf(w)}
    in_count = [0] * num_states
    succ: list[list[int]] = [[] for _ in range(num_states)]
    for f, t, _, _ in arcs:
        if f != t:
            in_count[t] += 1
            succ[f].append(t)
    order: list[int] = []
    ready = [i for i in range(num_states) if in_count[i] == 0]
    heapq.heapify(ready)
    while ready:
        s = heapq.heappop(ready)
        order.append(s)
        for t in succ[s]:
            in_count[t] -= 1
            if in_count[t] == 0:
                heapq.heappush(ready, t)
    if len(order) != num_states:  # pragma: no cover - the graph is acyclic apart from loops
        raise RuntimeError("automaton is not acyclic")
    new_id = {s: i for i, s in enumerate(order)}
    edges = [(new_id[f], new_id[t], lab, w) for f, t, lab, w in arcs]
    edges.sort(key=lambda e: ((e[1] - e[0]), e[1], e[0]))
    merged: list[list] = []
    for e in edges:
        if merged and merged[-1][:3] == list(e[:3]):
            a, b = merged[-1][3], e[3]
            merged[-1][3] = _f32(min(a, b) - math.log1p(math.exp(-abs(a - b))))
        else:
            merged.append(list(e))
    finals = {new_id[s]: w for s, w in finals.items()}
    if not (len(finals) == 1 and num_states - 1 in finals and finals[num_states - 1] == 0.0):
        sink = num_states
        num_states += 1
        merged += [[f, sink, lab, _add(w, finals[t])] for f, t, lab, w in merged if t in finals]
    arr = np.array([e[:3] for e in merged], dtype=np.int64).reshape(-1, 3)
    return Automaton(
        num_states=num_states,
        edges_from=arr[:, 0].copy(),
        edges_to=arr[:, 1].copy(),
        edges_label=arr[:, 2].copy(),
        weights=np.array([e[3] for e in merged], dtype=np.float32),
    )
