"""The Sprint side's handlers of the parent's commands (``wire.server.CommandServer`` runs them).

A loss request is computed in one of two ways: when RASR runs the control loop itself
(``run_control_loop`` with RASR's callback), right here with RASR's criterion; when this module runs
it in its own thread, the segment is handed to RASR's thread (``segments.SegmentHandoff``) and the
answer is sent once RASR produced it.
"""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProtocolError
from ..wire.server import FSA_COMMAND, LOSS_COMMAND, Handler, Reply
from . import rasr
from .config import as_str
from .log import log as _log

if TYPE_CHECKING:  # pragma: no cover
    from ..control import PythonControl

__all__ = ["CommandHandlers"]


class CommandHandlers:
    """The handlers of one ``PythonControl``: what its command server dispatches to."""

    def __init__(self, control: PythonControl):
        self.control = control

    def table(self) -> dict[str, Handler]:
        return {LOSS_COMMAND: self.loss, FSA_COMMAND: self.fsa}

    def capabilities(self) -> dict:
        """What ``init`` announces besides the protocols."""
        return {
            "pid": os.getpid(),
            "sprint_version_number": self.control.sprint_version_number,
            "sprint_unit": self.control.sprint_unit,
        }

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
        control = self.control
        if control.callback == control.own_threaded_callback:
            with control.segments.exchange(seg_name, seg_len, posteriors) as (loss, error_signal, skipped):
                reply.loss(loss, error_signal, skipped)
            return
        # RASR runs the control loop itself: compute the criterion right here via its callback.
        orthography = rasr.orthography_of(control.callback, seg_name)
        loss, error_signal, skipped = control._criterion_via_sprint_callback(
            control.callback, seg_name, orthography, posteriors
        )
        reply.loss(loss, error_signal, skipped)

    def fsa(self, reply: Reply, seg_name) -> None:
        control = self.control
        callback = control.sprint_callback
        if callback is None and control.callback is not None and control.callback != control.own_threaded_callback:
            callback = control.callback
        reply.fsa(*rasr.export_fsa(callback, as_str(seg_name, "segment name")))
