"""The emulator's training criteria, computed in-process on a (time, label) matrix.

Every criterion returns the loss (summed over frames) and the error signal, defined as the gradient
of the loss with respect to the pre-softmax activations ``a`` where the log-posteriors are
``log_softmax(a)``: the posteriors minus the targets (state occupancies for the automaton criteria,
a one-hot of the alignment for cross-entropy). The posteriors are ``exp(log_posteriors)`` as given
(RASR takes them as they come and does not renormalise).

- ``fsa`` / ``full-sum``: -log of the total score of the orthography's HMM automaton (built-in
  lexicon, see ``lexicon.py``) under the posteriors, by forward-backward in log space.
- ``ctc``: the same with the blank-label topology.
- ``cross-entropy``: -sum_t log p(alignment[t] | t); needs a frame alignment.
- ``squared-error``, ``binary-divergence``: RASR's, against the frame alignment (one-hot targets);
  their error signal (only "before softmax", as RASR) is RASR's natural pairing with a softmax.
- ``bench``: a cheap vectorised criterion for throughput measurements: cross-entropy against the
  frame-wise argmax; any label count.
- ``none``: loss 0 and a zero error signal.

A segment whose automaton has no path of exactly T frames is discarded: ``(None, None)``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np

from .. import fsa as _fsa
from .automaton import ExporterConfig, build_automaton, default_exporter
from .lexicon import Automaton, Lexicon

log = logging.getLogger("sprint_control.emulator.criteria")


CRITERIA = ("ctc", "fsa", "full-sum", "cross-entropy", "squared-error", "binary-divergence", "bench", "none")
#: the criteria that need a frame alignment
ALIGNMENT_CRITERIA = ("cross-entropy", "squared-error", "binary-divergence")
AUTOMATON_CRITERIA = ("ctc", "fsa", "full-sum")
DEFAULT_CRITERION = "ctc"
DEFAULT_LEXICON = Lexicon()


def as_log_posteriors(posteriors: np.ndarray, in_log_space: bool) -> np.ndarray:
    """The criterion's input as log-probabilities: as it is, or the log of probabilities (a zero
    probability becomes -inf, as RASR takes it)."""
    if in_log_space:
        return posteriors
    with np.errstate(divide="ignore"):
        return np.log(posteriors)


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown training criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    return criterion


def num_labels(criterion: str, lexicon: Optional[Lexicon] = None, default: Optional[int] = None) -> int:
    """The label count (posterior columns) the criterion expects: ``ctc`` = alphabet + blank, the HMM
    criteria (``fsa``, ``full-sum``, ``cross-entropy``) = symbols x states + silence. ``bench`` and
    ``none`` accept any count; they report ``default`` (or the HMM count when not given)."""
    lexicon = lexicon or DEFAULT_LEXICON
    check_criterion(criterion)
    if criterion == "ctc":
        return lexicon.num_ctc_labels
    if criterion in ("bench", "none") and default is not None:
        return int(default)
    return lexicon.num_hmm_labels


def automaton(criterion: str, orthography: str, lexicon: Optional[Lexicon] = None,
              exporter: Optional[ExporterConfig] = None) -> Automaton:
    """The automaton the criterion uses for an orthography: the ``ctc`` criterion always the CTC
    topology, the others the exporter's (``automaton.build_automaton``; without ``exporter``, RASR's
    HMM defaults)."""
    lexicon = lexicon or DEFAULT_LEXICON
    if criterion == "ctc":
        return lexicon.ctc_automaton(orthography)
    if exporter is None:
        exporter = default_exporter(criterion)
    elif exporter.topology != "hmm":
        exporter = dataclasses.replace(exporter, topology="hmm")
    return build_automaton(exporter, lexicon, orthography)


def _targets(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str],
    alignment: Optional[np.ndarray],
    lexicon: Optional[Lexicon],
    exporter: Optional[ExporterConfig] = None,
) -> tuple[Optional[float], Optional[np.ndarray], Optional[np.ndarray]]:
    """``(loss, targets (T, L) float64, columns)``: ``columns`` are the labels whose target can be
    non-zero (None: any), so that big label counts are only touched where needed."""
    check_criterion(criterion)
    lp = np.asarray(log_posteriors)
    if lp.ndim != 2:
        raise ValueError(f"log-posteriors must be a (time, label) matrix, got shape {lp.shape}")
    T, L = lp.shape
    if criterion == "none":
        return 0.0, np.exp(lp.astype(np.float64)), None
    if criterion in AUTOMATON_CRITERIA:
        if orthography is None:
            raise ValueError(f"criterion {criterion!r} needs an orthography (or a segment name of the corpus)")
        lexicon = lexicon or DEFAULT_LEXICON
        need = num_labels(criterion, lexicon)
        if L != need:
            raise ValueError(
                f"criterion {criterion!r} with this lexicon has {need} labels, but the posteriors have {L} "
                f"(shape (time, label) = {lp.shape})"
            )
        fsa = automaton(criterion, orthography, lexicon, exporter)
        log_total, occ = _fsa.forward_backward(
            lp, fsa.num_states, fsa.edges_from, fsa.edges_to, fsa.edges_label, fsa.weights, fsa.start, fsa.final
        )
        if occ is None:
            return None, None, None
        return -log_total, occ, np.unique(fsa.edges_label)
    if criterion == "bench":
        align = np.argmax(lp, axis=1)
    else:  # cross-entropy, squared-error, binary-divergence
        if alignment is None:
            raise ValueError(f"{criterion} needs a frame alignment (from the corpus, the alignment file or the "
                             "'alignment' argument)")
        align = np.asarray(alignment).reshape(-1)
        if align.shape[0] != T:
            raise ValueError(f"alignment has {align.shape[0]} frames, posteriors have {T}")
        if align.dtype.kind == "f":
            if not np.all(np.isfinite(align)) or np.any(align != np.round(align)):
                raise ValueError("alignment must hold integral label indices")
        align = align.astype(np.int64)
        if T and (align.min() < 0 or align.max() >= L):
            raise ValueError(f"alignment label out of range [0, {L})")
    rows = np.arange(T)
    tgt = np.zeros((T, L))
    tgt[rows, align] = 1.0
    if criterion == "squared-error":
        return float(np.sum((np.exp(lp.astype(np.float64)) - tgt) ** 2)), tgt, None
    if criterion == "binary-divergence":
        y = np.exp(lp.astype(np.float64))
        with np.errstate(divide="ignore"):
            return -float(np.sum(np.where(tgt > 0, np.log(y), np.log1p(-y)))), tgt, None
    loss = -float(np.sum(lp[rows, align], dtype=np.float64))
    return loss, tgt, np.unique(align)


def error_signal_after_softmax(criterion: str, posteriors: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """RASR's "natural pairing" of squared-error and binary-divergence with a softmax output layer:
    the error signal with respect to the pre-softmax activations, (T, L) float64 from posteriors y
    and one-hot targets d. Squared error: y * (y - d - sum_k (y_k - d_k) y_k) (half the gradient of
    its loss, as RASR computes it); binary divergence: the gradient of -log y_a - sum_{l != a} log(1 - y_l)."""
    y = posteriors
    if criterion == "squared-error":
        e = y - targets
        return y * (e - np.sum(e * y, axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((targets == 0) & (y < 1.0), y / (1.0 - y), 0.0)
        const = np.sum(ratio, axis=1, keepdims=True) - 1.0
        other = np.where(y < 1.0, y * (1.0 / (1.0 - y) - const), 0.0)
    return np.where(targets > 0, -1.0 - y * const, other)


def targets(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str] = None,
    alignment: Optional[np.ndarray] = None,
    lexicon: Optional[Lexicon] = None,
    exporter: Optional[ExporterConfig] = None,
) -> tuple[Optional[float], Optional[np.ndarray]]:
    """``(loss, targets (T, L) float64)``, or ``(None, None)`` when the segment is discarded. The
    targets are what the posteriors are pulled towards: occupancies, or the one-hot alignment
    (RASR's "pseudo-targets")."""
    loss, tgt, _ = _targets(criterion, log_posteriors, orthography, alignment, lexicon, exporter)
    return loss, tgt


def compute_criterion(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str] = None,
    alignment: Optional[np.ndarray] = None,
    lexicon: Optional[Lexicon] = None,
    exporter: Optional[ExporterConfig] = None,
) -> tuple[Optional[float], Optional[np.ndarray]]:
    """Loss and error signal for (T, L) log-posteriors: ``(loss, error_signal float32 (T, L))``, the
    error signal being d loss / d pre-softmax activations = posteriors - targets; ``(None, None)``
    when the segment is discarded (its automaton cannot align to T frames)."""
    lp = np.asarray(log_posteriors)
    if criterion == "bench":
        # The throughput path: no float64 temporaries of the full matrix.
        lp32 = lp if lp.dtype == np.float32 else lp.astype(np.float32)
        T = lp32.shape[0]
        align = np.argmax(lp32, axis=1)
        rows = np.arange(T)
        err = np.exp(lp32)
        loss = -float(np.sum(lp32[rows, align], dtype=np.float64))
        err[rows, align] -= 1.0
        return loss, err
    total, tgt, cols = _targets(criterion, lp, orthography, alignment, lexicon, exporter)
    if total is None:
        return None, None
    if criterion == "none":
        return 0.0, np.zeros(lp.shape, dtype=np.float32)
    if criterion in ("squared-error", "binary-divergence"):
        y = np.exp(lp.astype(np.float64))
        assert tgt is not None  # a loss comes with its targets
        return float(total), error_signal_after_softmax(criterion, y, tgt).astype(np.float32)
    # posteriors - targets; float32 input is exponentiated in float32 (fast) and only the columns with
    # targets are computed in float64, so (1000, 9001) matrices cost little beyond one exp.
    assert tgt is not None  # a loss comes with its targets
    if cols is None:
        return float(total), (np.exp(lp.astype(np.float64)) - tgt).astype(np.float32)
    err = np.exp(lp).astype(np.float32, copy=False)
    err[:, cols] = np.exp(lp[:, cols].astype(np.float64)) - tgt[:, cols]
    return float(total), err
