"""The calls into RASR's callback: the criterion, a segment's orthography, its automaton.

Arguments are checked before RASR sees them, since RASR treats some wrong types as fatal errors
rather than Python exceptions; what RASR returns is checked before it reaches the parent.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..errors import SprintControlError
from .config import as_str
from .log import log as _log

__all__ = ["calculate_criterion", "orthography_of", "export_fsa", "check_error_signal_dtype", "skipped_result"]


def check_error_signal_dtype(error_signal: np.ndarray, source: str) -> None:
    """RASR's error signal must be real numbers; float32 is used as it is, other real types are
    converted. A complex, bool, object or text array would be mangled by a silent conversion."""
    if error_signal.dtype.kind not in "fiu":
        raise TypeError(f"{source} gave an error signal of dtype {error_signal.dtype}; expected float32 (label, time)")


def skipped_result(seg_len: int, num_labels: int) -> tuple[float, np.ndarray]:
    """The answer for a segment without a result: loss inf and a zero error signal."""
    return float("inf"), np.zeros((seg_len, num_labels), dtype=np.float32)


def calculate_criterion(callback: Optional[Callable], seg_name: str, orthography: Optional[str],
                        posteriors: np.ndarray, alignment=None, *, posteriors_in_log_space: bool = True,
                        sprint_knows_log_space: bool = True) -> tuple[float, np.ndarray, bool]:
    """Runs RASR's ``calculate_criterion`` on (time, label) posteriors.

    Returns (loss, error signal (time, label), skipped).
    """
    if callback is None:
        raise SprintControlError("no RASR callback to compute the criterion with")
    if posteriors_in_log_space and not sprint_knows_log_space:
        values = np.exp(posteriors)
        output_error_type = "error-signal-before-softmax"
    elif posteriors_in_log_space:
        values = posteriors
        output_error_type = "error-signal"
    else:
        values = posteriors
        output_error_type = "error-signal-before-softmax"
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        values = np.ascontiguousarray(values, dtype=np.float32)
    kwargs: dict[str, Any] = dict(
        posteriors=values.T,  # (label, time), F-contiguous: RASR's memcpy path
        output_error_type=output_error_type,
        segment_name=str(seg_name),
    )
    if alignment is not None:
        # RASR takes the alignment as a float vector (a uint32 array ends RASR with a fatal error), and
        # refuses an orthography next to it: an alignment is the more specific of the two.
        kwargs["alignment"] = np.ascontiguousarray(alignment, dtype=np.float32)
    elif orthography is not None:
        if not isinstance(orthography, str):
            raise TypeError(f"orthography must be str for RASR, got {type(orthography).__name__}")
        kwargs["orthography"] = orthography
    result = callback("calculate_criterion", **kwargs)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"calculate_criterion must return (loss, error_signal), got {result!r:.200}")
    loss, error_signal = result
    seg_len, num_labels = posteriors.shape
    if loss is None or error_signal is None:
        why = "discarded the segment" if loss is None else "gave a loss but no error signal"
        _log(f"segment {seg_name!r} skipped: the criterion {why}; answering loss inf, zero error signal")
        loss_inf, zeros = skipped_result(seg_len, num_labels)
        return loss_inf, zeros, True
    error_signal = np.asarray(error_signal)
    check_error_signal_dtype(error_signal, "calculate_criterion")
    if error_signal.shape != (num_labels, seg_len):
        raise ValueError(
            f"calculate_criterion returned an error signal of shape {error_signal.shape},"
            f" expected (label, time) = {(num_labels, seg_len)}"
        )
    error_signal = error_signal.T  # (time, label); a C-contiguous view when RASR's array is F-contiguous
    if error_signal.dtype != np.float32:
        error_signal = error_signal.astype(np.float32)
    return float(loss), error_signal, False


def orthography_of(callback: Callable, seg_name: str) -> Optional[str]:
    """The segment's orthography from RASR, or None when RASR has none to give."""
    try:
        orthography = callback("get_orthography_by_segment_name", segment_name=seg_name)
    except Exception as exc:  # the criterion may not need one; it says so itself if it does
        _log(f"no orthography for {seg_name!r} from RASR ({exc!r}); the criterion gets none", verbose=True)
        return None
    return as_str(orthography, "orthography")


def export_fsa(callback: Optional[Callable], seg_name: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """RASR's allophone-state automaton of a segment: (num_states, num_edges, edges (3*E,), weights (E,))."""
    if callback is None:
        raise SprintControlError("exporting an automaton needs RASR's callback, and RASR gave none")
    result = callback("export_allophone_state_fsa_by_segment_name", segment_name=seg_name)
    if not isinstance(result, (tuple, list)) or len(result) != 4:
        raise TypeError(
            f"export_allophone_state_fsa_by_segment_name must return (num_states, num_edges, edges, weights),"
            f" got {result!r:.200}"
        )
    num_states, num_edges, edges, weights = result
    edges = np.asarray(edges).reshape(-1)
    weights = np.asarray(weights).reshape(-1)
    if edges.shape[0] != 3 * int(num_edges) or weights.shape[0] != int(num_edges):
        raise ValueError(
            f"automaton of {num_edges} edges must have 3*{num_edges} edge entries and {num_edges} weights,"
            f" got {edges.shape[0]} and {weights.shape[0]}"
        )
    return int(num_states), int(num_edges), edges, weights
