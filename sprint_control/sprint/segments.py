"""The hand-off of segments between the control thread and RASR's thread.

The control thread ``post``s each loss request of the parent as the *pending* segment and waits for
its result; RASR's segment order takes it (it becomes *active*), RASR computes it (flow A:
``process_segment``; flow B: its trainer, through the PythonLayer) and the result goes back to the
waiting control thread. One ``threading.Condition`` guards all of it; every wait on it is bounded
(``WAIT_STEP``), so RASR's thread never sleeps holding the GIL for long.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Optional

import numpy as np

from ..errors import SprintControlError
from .log import log as _log
from .rasr import check_error_signal_dtype, skipped_result

__all__ = ["Segment", "SegmentHandoff", "WAIT_STEP"]

#: How long any wait on the shared state sleeps at most before it looks again (seconds).
WAIT_STEP = 1.0


class Segment:
    """One loss request of the parent, from its arrival to the answer (guarded by the hand-off's cond)."""

    __slots__ = (
        "seq", "name", "seg_len", "posteriors", "loss", "error_signal", "error_text", "skipped",
        "yielded", "segment_notified", "asked_for_posteriors", "processed", "backpropagated", "answered",
    )

    def __init__(self, seq: int, name: str, seg_len: int, posteriors: np.ndarray):
        self.seq = seq
        self.name = name
        self.seg_len = seg_len
        self.posteriors: Optional[np.ndarray] = posteriors
        self.loss: Optional[float] = None
        self.error_signal: Optional[np.ndarray] = None  # (time, label)
        self.error_text: Optional[str] = None  # a failure to report instead of a result
        self.skipped = False
        self.yielded = False
        self.segment_notified = False
        self.asked_for_posteriors = False
        self.processed = False
        self.backpropagated = False
        self.answered = False

    @property
    def done(self) -> bool:
        return self.error_text is not None or (self.loss is not None and self.error_signal is not None)


class SegmentHandoff:
    """The pending and the active segment, and the condition that guards them.

    ``via_sprint_callback``: flow A (RASR's ``process_segment`` computes the criterion), else flow B;
    it only changes which missing step a skipped segment's log line names.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.pending: Optional[Segment] = None  # received, not yet handed to RASR
        self.active: Optional[Segment] = None  # handed to RASR, RASR works on it
        self.sprint_finished = False  # RASR called exit: no segment is taken any more
        self.loop_ended = False  # no segment will be posted any more
        self.via_sprint_callback = False
        self._seq = 0

    # -- the control thread's side --------------------------------------------------------------------

    def post(self, seg_name: str, seg_len: int, posteriors: np.ndarray) -> Segment:
        """Offers a segment to RASR's segment order."""
        with self.cond:
            if self.sprint_finished:
                raise SprintControlError(
                    f"RASR has finished its segment list; segment {seg_name!r} cannot be processed any more"
                )
            self._seq += 1
            seg = Segment(self._seq, seg_name, seg_len, posteriors)
            self.pending = seg
            self.cond.notify_all()
        return seg

    def wait_for_result(self, seg: Segment) -> None:
        with self.cond:
            while not seg.done:
                if self.sprint_finished and not seg.yielded:
                    seg.error_text = f"RASR finished before it took segment {seg.name!r}"
                    break
                self.cond.wait(WAIT_STEP)

    @contextlib.contextmanager
    def exchange(self, seg_name: str, seg_len: int, posteriors: np.ndarray) -> Iterator[tuple]:
        """Posts a segment and waits for RASR's (loss, error signal (time, label), skipped); the
        segment counts as answered when the block ends (``exit`` waits for that)."""
        seg = self.post(seg_name, seg_len, posteriors)
        try:
            self.wait_for_result(seg)
            with self.cond:
                if seg.error_text is not None:
                    raise SprintControlError(f"segment {seg.name!r} failed in RASR:\n{seg.error_text}")
                result = (seg.loss, seg.error_signal, seg.skipped)
            yield result
        finally:
            with self.cond:
                seg.answered = True
                seg.posteriors = None
                self.cond.notify_all()

    def end(self) -> Optional[Segment]:
        """The control loop ended: the segment list ends too. Returns a segment never handed to RASR."""
        with self.cond:
            self.loop_ended = True
            pending, self.pending = self.pending, None
            self.cond.notify_all()
        return pending

    # -- RASR's side ------------------------------------------------------------------------------------

    def segment_names(self) -> Iterator[str]:
        """Yields the names of the posted segments; when RASR asks for the next one, the previous
        is complete (or skipped). Ends when the control loop ends."""
        while True:
            with self.cond:
                while True:
                    if self.pending is not None:
                        seg, self.pending = self.pending, None
                        seg.yielded = True
                        self.active = seg
                        self.cond.notify_all()
                        break
                    if self.loop_ended:
                        return
                    # Condition.wait drops the GIL-holding lock; RASR's thread sleeps here, not spinning.
                    self.cond.wait(WAIT_STEP)
            _log(f"segment list: {seg.name!r}", verbose=True)
            try:
                yield seg.name
            finally:
                # RASR asks for the next segment (or drops the list): this one is over.
                with self.cond:
                    if not seg.done:
                        self.skip(seg, "RASR moved on")

    def finish(self, control_thread: Optional[threading.Thread], timeout: float) -> None:
        """RASR is finishing: an incomplete active segment is skipped, and the control thread gets up
        to ``timeout`` seconds to answer it."""
        with self.cond:
            self.sprint_finished = True
            active = self.active
            if active is not None and not active.done:
                self.skip(active, "RASR finished")
            self.cond.notify_all()
            waited = 0.0
            while (active is not None and not active.answered and not self.loop_ended
                   and control_thread is not None and control_thread is not threading.current_thread()
                   and waited < timeout):
                self.cond.wait(WAIT_STEP)
                waited += WAIT_STEP

    def current(self, seg_len, what: str) -> Segment:
        """The active segment (cond held), checked against the length RASR has."""
        seg = self.active
        if seg is None or seg.posteriors is None:
            raise SprintControlError(f"{what}: there is no current segment from the parent")
        if seg_len is not None and int(seg_len) != seg.seg_len:
            message = f"{what}: RASR's segment has {seg_len} frames, the parent's {seg.name!r} has {seg.seg_len}"
            self.fail(seg, message)
            raise SprintControlError(message)
        return seg

    def wrong_segment(self, call: str, name: Optional[str]) -> SprintControlError:
        """RASR names another segment than the parent's (cond held): the active one fails with why."""
        seg = self.active
        message = (
            f"{call} got segment {name!r}, but the parent's current segment is {seg.name if seg else None!r}:"
            " RASR must take its segment order from this module (--*.python-segment-order=true)"
        )
        if seg is not None:
            self.fail(seg, message)
        return SprintControlError(message)

    def set_error_signal(self, seg_len, error_signal) -> None:
        """Flow B: RASR's error signal, (time, label), for the active segment (kept as it comes)."""
        with self.cond:
            seg = self.current(seg_len, "backpropagate")
            assert seg.posteriors is not None  # kept until the segment is done
            if getattr(error_signal, "ndim", 0) != 2 or error_signal.shape != seg.posteriors.shape:
                message = (
                    f"error signal of shape {getattr(error_signal, 'shape', None)} does not match"
                    f" the posteriors' shape {seg.posteriors.shape} of segment {seg.name!r}"
                )
                self.fail(seg, message)
                raise ValueError(message)
            try:
                check_error_signal_dtype(error_signal, "backpropagate")
            except TypeError as exc:
                self.fail(seg, f"{exc} (segment {seg.name!r})")
                raise
            if error_signal.dtype != np.float32:
                error_signal = error_signal.astype(np.float32)
            seg.backpropagated = True
            if not seg.done:
                seg.error_signal = error_signal
            self.cond.notify_all()

    def set_loss(self, seg_name: Optional[str], loss) -> None:
        """The loss of the active segment (its name is checked when given)."""
        with self.cond:
            seg = self.active
            if seg is None:
                raise SprintControlError(f"a loss for {seg_name!r} arrived, but the parent sent no segment")
            if seg_name and seg_name != seg.name:
                message = f"a loss for segment {seg_name!r} arrived, but the current segment is {seg.name!r}"
                self.fail(seg, message)
                raise SprintControlError(message)
            if not seg.done:
                seg.loss = float(loss)
            self.cond.notify_all()

    def complete(self, seg: Segment, loss: float, error_signal: np.ndarray, skipped: bool) -> None:
        """Flow A: RASR's criterion gave the segment's result."""
        with self.cond:
            if not seg.done:
                seg.loss, seg.error_signal, seg.skipped = loss, error_signal, skipped
            self.cond.notify_all()

    # -- failures -----------------------------------------------------------------------------------------

    def fail(self, seg: Segment, message: str, log_line: Optional[str] = None) -> None:
        """Marks a segment as failed (cond held): the parent gets ``message`` instead of a result;
        the log gets ``log_line`` (default: the message)."""
        if not seg.done:
            seg.error_text = message
        _log(log_line or message, error=True)
        self.cond.notify_all()

    def fail_active(self, message: str) -> None:
        """RASR broke the contract in a call about the active segment: the parent gets ``message``."""
        with self.cond:
            if self.active is not None:
                self.fail(self.active, f"{message} (segment {self.active.name!r})")

    def skip(self, seg: Segment, why: str) -> None:
        """Answers a segment RASR left without a result with loss inf and a zero error signal (cond held)."""
        missing = self._missing_steps(seg)
        if seg.error_signal is None:
            assert seg.posteriors is not None  # kept until the segment is done
            seg.loss, seg.error_signal = skipped_result(seg.seg_len, seg.posteriors.shape[1])
            seg.skipped = True
            _log(f"segment {seg.name!r} skipped ({why}); never happened: {', '.join(missing) or '-'};"
                 " answering loss inf and a zero error signal")
        else:
            seg.loss = float("inf")
            _log(f"segment {seg.name!r}: no loss reported ({why}); never happened: {', '.join(missing)};"
                 " answering loss inf")
        self.cond.notify_all()

    def _missing_steps(self, seg: Segment) -> list:
        if not seg.yielded:
            return ["RASR never took the segment"]
        if self.via_sprint_callback:
            return [] if seg.processed else ["process_segment (RASR never processed it)"]
        steps = [
            (seg.segment_notified, "init_segment (is PythonControl used in RASR's trainer?)"),
            (seg.asked_for_posteriors, "forward (is the PythonLayer used in RASR's network?)"),
            (seg.backpropagated, "backpropagate (no error signal)"),
            (seg.loss is not None, "notify_segment_loss (no loss)"),
        ]
        return [what for happened, what in steps if not happened]
