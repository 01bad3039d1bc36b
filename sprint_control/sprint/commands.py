"""The Sprint side's handlers of the parent's commands (``wire.server.CommandServer`` runs them).

A loss request is computed in one of two ways: when RASR runs the control loop itself
(``run_control_loop`` with RASR's callback), right here with RASR's criterion; when this module runs
it in its own thread, the segment is handed to RASR's thread (``segments.SegmentHandoff``) and the
answer is sent once RASR produced it.

The handlers get what they use: the segment hand-off, the control loop (which knows the running
callback), the criterion function and two questions about RASR (its callback, what ``init`` tells
the parent about it); they know nothing of the facade above them (``control.PythonControl``).
"""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..errors import ProtocolError
from ..wire.server import FSA_COMMAND, LOSS_COMMAND, Handler, Reply
from . import rasr
from .config import as_str
from .log import log as _log

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ControlLoop
    from .segments import SegmentHandoff

__all__ = ["CommandHandlers", "Criterion"]

#: ``criterion(callback, seg_name, orthography, posteriors)`` -> (loss, error signal, skipped),
#: with RASR's callback, on (time, label) posteriors
Criterion = Callable[..., "tuple[float, np.ndarray, bool]"]


class CommandHandlers:
    """What the Sprint side's command server dispatches to.

    :param segments: the hand-off to RASR's thread (the threaded loop's loss requests)
    :param loop: the control loop; its running callback decides how a loss is computed
    :param criterion: computes a segment's criterion with RASR's callback
    :param rasr_callback: RASR's callback as ``init`` registered it (None: none yet)
    :param about: what ``init`` tells the parent about RASR (version number, unit)
    """

    def __init__(self, segments: SegmentHandoff, loop: ControlLoop, criterion: Criterion,
                 rasr_callback: Callable[[], Optional[Callable]], about: Callable[[], dict]):
        self.segments = segments
        self.loop = loop
        self.criterion = criterion
        self.rasr_callback = rasr_callback
        self.about = about

    def table(self) -> dict[str, Handler]:
        return {LOSS_COMMAND: self.loss, FSA_COMMAND: self.fsa}

    def capabilities(self) -> dict:
        """What ``init`` announces besides the protocols."""
        return {"pid": os.getpid(), **self.about()}

    def loss(self, reply: Reply, seg_name, seg_len, posteriors) -> None:
        seg_name = as_str(seg_name, "segment name")
        if not isinstance(seg_len, numbers.Integral) or isinstance(seg_len, bool):
            raise TypeError(f"seg_len must be an integer, got {type(seg_len).__name__}")
        seg_len = int(seg_len)
        if not isinstance(posteriors, np.ndarray) or posteriors.ndim != 2:
            got = getattr(posteriors, "shape", type(posteriors).__name__)
            raise ProtocolError(f"posteriors must be a (time, label) matrix, got {got!r:.100}")
        if seg_len <= 0:
            raise ProtocolError(f"segment {seg_name!r} has {seg_len} frames: RASR computes no criterion on an empty"
                                " segment")
        if posteriors.shape[0] != seg_len:
            raise ProtocolError(f"seg_len {seg_len} does not match the posteriors' shape {posteriors.shape}")
        if posteriors.dtype != np.float32 or not posteriors.flags.c_contiguous:
            posteriors = np.ascontiguousarray(posteriors, dtype=np.float32)  # not on the v2 path
        _log(f"loss request: {seg_name!r}, shape {posteriors.shape}", verbose=True)
        if self.loop.threaded:  # RASR's thread computes it
            with self.segments.exchange(seg_name, seg_len, posteriors) as (loss, error_signal, skipped):
                reply.loss(loss, error_signal, skipped)
            return
        # RASR runs the control loop itself: compute the criterion right here via its callback.
        callback = self.loop.callback
        assert callback is not None  # the loop runs, with RASR's callback
        orthography = rasr.orthography_of(callback, seg_name)
        loss, error_signal, skipped = self.criterion(callback, seg_name, orthography, posteriors)
        reply.loss(loss, error_signal, skipped)

    def fsa(self, reply: Reply, seg_name) -> None:
        callback = self.rasr_callback() or self.loop.rasr_callback
        reply.fsa(*rasr.export_fsa(callback, str(as_str(seg_name, "segment name"))))
