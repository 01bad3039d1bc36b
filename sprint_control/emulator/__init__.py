"""A stand-in for RASR's nn-trainer: a child program that loads a Python module and calls it exactly
as RASR does (``init``, ``run_control_loop``, ``init_processing``/``process_segment``,
``getSegmentList``, ``SprintNnPythonLayer``), with a callback that computes real criteria
(CTC, full-sum over an HMM automaton, cross-entropy) on a small built-in lexicon and corpus.

Run it as ``sprint-control-emulator --*.pymod-name=... ...`` or ``python -m sprint_control.emulator``;
options are documented in docs/emulator.md. The in-process API: ``corpus.synthetic_corpus``,
``corpus.load_corpus``, ``criteria.compute_criterion``, ``criteria.num_labels``, ``callback.Callback``.
"""

from __future__ import annotations

from .callback import Callback, EmulatorFatalError
from .corpus import Corpus, Segment, load_corpus, synthetic_corpus
from .criteria import compute_criterion, num_labels
from .lexicon import Lexicon

__all__ = [
    "Callback",
    "Corpus",
    "EmulatorFatalError",
    "Lexicon",
    "Segment",
    "compute_criterion",
    "load_corpus",
    "num_labels",
    "synthetic_corpus",
]
