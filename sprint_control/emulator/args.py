"""RASR-style command-line parsing for the emulator.

RASR takes ``--<selector>.<key>=<value>`` arguments, where the selector is a path of component
names with ``*`` wildcards (``--*.pymod-name=x``, ``--neural-network-trainer.corpus.file=y``); a key
given several times takes its last value. The emulator resolves an option by matching the trailing
dot-separated components of each argument's key against the option name (``corpus.file`` matches
``--*.corpus.file`` and ``--train.corpus.file``), the last match wins. Arguments that match no known
option are kept, and each distinct one is logged once as ignored. ``--config=<file>`` reads a RASR
config file (``key = value`` lines, ``[selector]`` sections, ``#`` comments); command-line
arguments take precedence over it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from . import corpus, lexicon
from .textfile import read_utf8

log = logging.getLogger("sprint_control.emulator.args")

#: The PythonControl version of the RASR the emulator plays (``version_number`` of ``init``), by default.
VERSION_NUMBER = 5

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # "bool" | "int" | "str" | "float" | "choice"
    default: Any
    help: str
    choices: tuple = ()
    minimum: Optional[float] = None  # int/float options: the smallest value that makes sense


def _tdp_options() -> list[Option]:
    out = []
    for kind, who in (("*", "every state type"), ("state-0", "phone states"), ("state-1", "phone states (RASR "
                      "applies state-0's)"), ("silence", "silence"), ("entry-m1", "the word-start state"),
                      ("entry-m2", "the second entry state (unused by RASR)")):
        for transition, default in (("loop", 3.0), ("forward", 0.0), ("skip", 3.0), ("exit", 0.0)):
            out.append(Option(f"tdp.{kind}.{transition}", "float", default,
                              f"RASR transition cost (-log prob.) of {who}: {transition} (RASR's default {default})."))
    return out


#: RASR's keys of the alignment-fsa-exporter (model combination, acoustic model, graph builder); any of
#: them given makes the export an HMM-topology one unless the topology key says otherwise
EXPORTER_KEY_OPTIONS: tuple[Option, ...] = (
    Option("allophone-state-graph-builder.topology", "choice", "hmm",
           "Topology of the exported automata: hmm (RASR's default) or ctc (the emulator's blank topology).",
           ("hmm", "ctc", "rna")),
    Option("hmm.state-repetitions", "int", 2, "Repetitions of each phone HMM state (RASR's default 2).", minimum=1),
    Option("hmm.across-word-model", "bool", False, "Across-word context (no effect with monophone tying)."),
    Option("hmm.early-recombination", "bool", False, "A search option: no effect on exported automata."),
    Option("phonology.history-length", "int", 1, "Allophone left context (splits shared pronunciation suffixes).",
           minimum=0),
    Option("phonology.future-length", "int", 1, "Allophone right context (no effect with monophone tying).",
           minimum=0),
    Option("fix-allophone-context-at-word-boundaries", "bool", False,
           "Across-word allophone contexts (no effect: across-word context is refused)."),
    Option("transducer-builder-filter-out-invalid-allophones", "bool", False,
           "Across-word allophone filter (no effect: across-word context is refused)."),
    Option("allophones.add-from-lexicon", "bool", True, "Allophones from the lexicon (no effect with monophones)."),
    Option("allophones.add-all", "bool", False, "All allophones (no effect with monophone tying)."),
    Option("state-tying.type", "str", "cart", "State tying; the emulator has monophone only (RASR's default: cart)."),
    Option("normalize-pronunciation", "bool", True, "Normalise each lemma's pronunciation weights to sum 1."),
    Option("orthographic-parser.allow-for-silence-repetitions", "bool", True,
           "Silence loops in the lemma acceptor (RASR's default) instead of one optional silence."),
    Option("orthographic-parser.normalize-lemma-sequence-scores", "bool", False,
           "Normalised lemma-acceptor scores (not followed: true is an error)."),
    Option("tdp.scale", "float", 1.0, "Scale of every transition cost."),
    Option("tdp.applicator-type", "choice", "legacy", "RASR's transition-model applicator.", ("legacy", "corrected")),
    Option("tdp.tying-type", "choice", "global", "Transition-model tying (global only).",
           ("global", "global-and-nonword", "cart")),
    *_tdp_options(),
)
EXPORTER_OPTIONS = ("lexicon.file", "hmm.states-per-phone", *(o.name for o in EXPORTER_KEY_OPTIONS))

OPTIONS: tuple[Option, ...] = (
    Option(
        "python-control-enabled",
        "bool",
        False,
        "Call the module's init/init_segment/notify_segment_loss/exit in the segment-wise trainer "
        "(action=supervised-segmentwise-training). action=python-control always uses PythonControl.",
    ),
    Option("pymod-path", "str", "", "Directory prepended to sys.path before importing the module."),
    Option("pymod-name", "str", "", "Name of the Python module to import (required)."),
    Option("pymod-config", "str", "", "Config string passed as config= to init() and SprintNnPythonLayer()."),
    Option(
        "python-segment-order",
        "bool",
        False,
        "Take the segment order from the module's getSegmentList() instead of the corpus order.",
    ),
    Option(
        "python-segment-order-pymod-path", "str", "", "Directory for the segment-order module (default: pymod-path)."
    ),
    Option("python-segment-order-pymod-name", "str", "", "Module providing getSegmentList (default: pymod-name)."),
    Option("python-segment-order-config", "str", "", "config= passed to getSegmentList (default: pymod-config)."),
    Option(
        "python-segment-order-allow-copy",
        "bool",
        True,
        "Accepted for compatibility; a segment yielded twice is processed twice either way.",
    ),
    Option(
        "action",
        "choice",
        "python-control",
        "python-control: NnTrainer with PythonControl; supervised-segmentwise-training: segment-wise "
        "trainer with a PythonLayer (flow B).",
        ("python-control", "supervised-segmentwise-training"),
    ),
    Option(
        "python-control-loop-type",
        "choice",
        "python-control-loop",
        "python-control-loop: hand control to run_control_loop(); iterate-corpus: feed the corpus "
        "through init_processing/process_segment (flow A).",
        ("python-control-loop", "iterate-corpus"),
    ),
    Option(
        "training-criterion",
        "choice",
        "ctc",
        "Criterion behind calculate_criterion and the trainer.",
        ("ctc", "fsa", "full-sum", "cross-entropy", "squared-error", "binary-divergence", "bench", "none"),
    ),
    Option("input-in-log-space", "bool", True, "Flow B: the layer's output are log-posteriors (else probabilities)."),
    Option("extract-features", "bool", True, "Flow A: pass features to process_segment (else None, input_dim=-1)."),
    Option(
        "extract-alignments",
        "bool",
        False,
        "Flow A: pass the alignment (alignment file, else corpus) to process_segment (output_dim = label count).",
    ),
    Option(
        "version-number",
        "str",
        str(VERSION_NUMBER),
        "version_number passed to init() and answered by callback('version_number'); 'none' acts like an "
        "old RASR that passes neither version_number nor callback to init().",
    ),
    Option("corpus.file", "str", "", "Corpus file (text, JSON or Bliss XML, see docs/emulator.md)."),
    Option(
        "corpus.synthetic", "int", 0, "Generate a synthetic corpus of N segments (used when no corpus.file).", minimum=0
    ),
    Option("corpus.seed", "int", 0, "Seed for the synthetic corpus and for generated features."),
    Option("corpus.name", "str", "", "Corpus name (passed as corpusName to getSegmentList)."),
    Option(
        "corpus.feature-dim",
        "int",
        corpus.DEFAULT_FEATURE_DIM,
        "Feature dimension of generated features.",
        minimum=1,
    ),
    Option(
        "corpus.min-frames",
        "int",
        corpus.DEFAULT_MIN_FRAMES,
        "Synthetic corpus: minimum frames per segment.",
        minimum=1,
    ),
    Option(
        "corpus.max-frames",
        "int",
        corpus.DEFAULT_MAX_FRAMES,
        "Synthetic corpus: maximum frames per segment.",
        minimum=1,
    ),
    Option(
        "corpus.max-symbols",
        "int",
        corpus.DEFAULT_MAX_SYMBOLS,
        "Synthetic corpus: maximum symbols per orthography.",
        minimum=1,
    ),
    Option(
        "corpus.noise",
        "float",
        corpus.DEFAULT_NOISE,
        "Standard deviation of the noise added to the label embedding.",
        minimum=0,
    ),
    Option(
        "corpus.num-labels",
        "int",
        0,
        "Label count of the bench/none criteria and flow-B output dimension for them (0: the HMM count).",
        minimum=0,
    ),
    Option(
        "lexicon.alphabet",
        "str",
        "",
        f"The lexicon's symbols as one string (default {lexicon.DEFAULT_ALPHABET!r}).",
    ),
    Option(
        "lexicon.alphabet-size",
        "int",
        0,
        "Use a generated alphabet of N symbols (a-z, then CJK characters); overrides lexicon.alphabet.",
        minimum=0,
    ),
    Option("lexicon.states-per-symbol", "int", lexicon.DEFAULT_STATES_PER_SYMBOL, "HMM states per symbol.", minimum=1),
    Option("lexicon.silence", "bool", True, "Optional silence before, between and after words (HMM topology)."),
    # RASR's own keys for Bliss XML files (bliss.py, bliss_lexicon.py)
    Option("lexicon.file", "str", "", "Bliss XML lexicon (RASR's model-combination.lexicon.file); replaces the "
           "built-in lexicon: monophone HMMs from its pronunciations."),
    Option("corpus.alignment-file", "str", "", "Frame alignments for the alignment criteria (.npz or "
           "'name<TAB>labels' text, see docs/emulator.md)."),
    Option("corpus.segments.file", "str", "", "Segment list: keep only the corpus segments named there."),
    Option("hmm.states-per-phone", "int", 3, "With lexicon.file: HMM states per non-silence phoneme.", minimum=1),
    *EXPORTER_KEY_OPTIONS,
    Option("log-level", "choice", "info", "Log verbosity on stderr.", ("debug", "info", "warning", "error")),
    Option("quiet", "bool", False, "Only errors on stderr (same as log-level=error)."),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


class ArgumentError(ValueError):
    """A malformed argument or an option value of the wrong type."""


def _parse_value(opt: Option, raw: str) -> Any:
    v = raw.strip()
    if opt.kind == "bool":
        if v.lower() in _TRUE:
            return True
        if v.lower() in _FALSE:
            return False
        raise ArgumentError(f"option {opt.name}: expected a boolean (true/false), got {raw!r}")
    if opt.kind in ("int", "float"):
        kind = "an integer" if opt.kind == "int" else "a number"
        try:
            number = int(v) if opt.kind == "int" else float(v)
        except ValueError:
            raise ArgumentError(f"option {opt.name}: expected {kind}, got {raw!r}") from None
        if opt.minimum is not None and not number >= opt.minimum:
            raise ArgumentError(f"option {opt.name}: expected {kind} >= {opt.minimum}, got {raw!r}")
        return number
    if opt.kind == "choice":
        if v not in opt.choices:
            raise ArgumentError(f"option {opt.name}: expected one of {', '.join(opt.choices)}, got {raw!r}")
        return v
    return raw


def _matches(key: str, name: str) -> bool:
    parts = key.split(".")
    want = name.split(".")
    return len(parts) >= len(want) and parts[-len(want) :] == want


def read_config_file(path: str) -> list[tuple[str, str]]:
    """``key = value`` entries of a RASR config file, with ``[selector]`` section prefixes."""
    entries: list[tuple[str, str]] = []
    section = ""
    try:
        text = read_utf8(path, "config file", "a RASR config file in UTF-8 text", ArgumentError)
    except OSError as exc:
        raise ArgumentError(f"config file {path}: {exc.strerror or exc}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" not in line:
            raise ArgumentError(f"{path}:{lineno}: expected 'key = value', got {line!r}")
        k, v = line.split("=", 1)
        k = k.strip()
        entries.append((f"{section}.{k}" if section else k, v.strip()))
    return entries


class Config:
    """The parsed arguments: ordered (key, value) entries; options resolve to the last match."""

    def __init__(self, entries: list[tuple[str, str]], positional: Optional[list[str]] = None):
        self.entries = list(entries)
        self.positional = list(positional or [])
        self._values: dict[str, Any] = {}
        self._given: set[str] = set()
        for opt in OPTIONS:
            raw = None
            for key, value in self.entries:
                if _matches(key, opt.name):
                    raw = value
            if raw is None:
                self._values[opt.name] = opt.default
            else:
                self._values[opt.name] = _parse_value(opt, raw)
                self._given.add(opt.name)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def given(self, name: str) -> bool:
        return name in self._given

    def unknown_keys(self) -> list[str]:
        """Distinct keys that match no known option, in first-seen order."""
        out: list[str] = []
        for key, _ in self.entries:
            if key == "config" or key in out:
                continue
            if not any(_matches(key, o.name) for o in OPTIONS):
                out.append(key)
        return out


def parse_args(argv: list[str]) -> Config:
    """Parses RASR-style arguments (``--key=value``, ``--*.key=value``, ``--config=file``)."""
    cli: list[tuple[str, str]] = []
    files: list[tuple[str, str]] = []
    positional: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        body = arg[2:]
        key, sep, value = body.partition("=")
        key = key.strip()
        if not key:
            raise ArgumentError(f"malformed argument {arg!r}: expected --key=value")
        if not sep:
            value = "true"  # a bare --flag sets a boolean
        if key == "config":
            files.extend(read_config_file(value))
            continue
        cli.append((key, value))
    return Config(files + cli, positional)


def option_table_markdown() -> str:
    """The option table of docs/emulator.md."""
    lines = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        kind = " \\| ".join(o.choices) if o.kind == "choice" else o.kind
        default = "" if o.default == "" else str(o.default).lower() if o.kind == "bool" else str(o.default)
        lines.append(f"| `{o.name}` | {kind} | `{default}` | {o.help} |")
    return "\n".join(lines)
