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
- ``bench``: a cheap vectorised criterion for throughput measurements: cross-entropy against the
  frame-wise argmax; any label count.
- ``none``: loss 0 and a zero error signal.

A segment whose automaton has no path of exactly T frames is discarded: ``(None, None)``.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .. import fsa as _fsa
from .lexicon import Automaton, Lexicon

log = logging.getLogger("sprint_control.emulator.criteria")


CRITERIA = ("ctc", "fsa", "full-sum", "cross-entropy", "bench", "none")
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


def automaton(criterion: str, orthography: str, lexicon: Optional[Lexicon] = None) -> Automaton:
    """The allophone-state automaton the criterion uses for an orthography (HMM topology for every
    criterion except ``ctc``, as RASR's exporter does not depend on the criterion)."""
    lexicon = lexicon or DEFAULT_LEXICON
    if criterion == "ctc":
        return lexicon.ctc_automaton(orthography)
    return lexicon.hmm_automaton(orthography)


def _targets(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str],
    alignment: Optional[np.ndarray],
    lexicon: Optional[Lexicon],
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
        fsa = automaton(criterion, orthography, lexicon)
        log_total, occ = _fsa.forward_backward(
            lp, fsa.num_states, fsa.edges_from, fsa.edges_to, fsa.edges_label, fsa.weights, fsa.start, fsa.final
        )
        if occ is None:
            return None, None, None
        return -log_total, occ, np.unique(fsa.edges_label)
    if criterion == "bench":
        align = np.argmax(lp, axis=1)
    else:  # cross-entropy
        if alignment is None:
            raise ValueError("cross-entropy needs a frame alignment (from the corpus or the 'alignment' argument)")
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
    loss = -float(np.sum(lp[rows, align], dtype=np.float64))
    tgt = np.zeros((T, L))
    tgt[rows, align] = 1.0
    return loss, tgt, np.unique(align)


def targets(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str] = None,
    alignment: Optional[np.ndarray] = None,
    lexicon: Optional[Lexicon] = None,
) -> tuple[Optional[float], Optional[np.ndarray]]:
    """``(loss, targets (T, L) float64)``, or ``(None, None)`` when the segment is discarded. The
    targets are what the posteriors are pulled towards: occupancies, or the one-hot alignment
    (RASR's "pseudo-targets")."""
    loss, tgt, _ = _targets(criterion, log_posteriors, orthography, alignment, lexicon)
    return loss, tgt


def compute_criterion(
    criterion: str,
    log_posteriors: np.ndarray,
    orthography: Optional[str] = None,
    alignment: Optional[np.ndarray] = None,
    lexicon: Optional[Lexicon] = None,
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
    total, tgt, cols = _targets(criterion, lp, orthography, alignment, lexicon)
    if total is None:
        return None, None
    if criterion == "none":
        return 0.0, np.zeros(lp.shape, dtype=np.float32)
    # posteriors - targets; float32 input is exponentiated in float32 (fast) and only the columns with
    # targets are computed in float64, so (1000, 9001) matrices cost little beyond one exp.
    assert tgt is not None  # a loss comes with its targets
    if cols is None:
        return float(total), (np.exp(lp.astype(np.float64)) - tgt).astype(np.float32)
    err = np.exp(lp).astype(np.float32, copy=False)
    err[:, cols] = np.exp(lp[:, cols].astype(np.float64)) - tgt[:, cols]
    return float(total), err
