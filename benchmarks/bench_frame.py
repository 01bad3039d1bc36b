"""Encode/decode of one frame in memory: the CPU cost of the formats without any pipe."""

from __future__ import annotations

import numpy as np

from sprint_control.wire import constants as w
from sprint_control.wire import framing
from sprint_control.wire.protocol import decode_v1, encode_v1

from ._pipes import SIZE_LIST, make_posteriors


class FrameCodec:
    """v2 frames (``encode_frame``/``decode_frame``) and v1 messages (RETURNN's writer, the C pickler,
    our safe reader) of a loss request with (time, label) float32 posteriors."""

    params = [SIZE_LIST]
    param_names = ["size"]
    number = 1
    repeat = (1, 5, 10.0)
    timeout = 300

    def setup(self, size):
        self.post = make_posteriors(*size)
        self.msg = ("get_loss_and_error_signal", "seg", int(size[0]), self.post)
        self.frame = framing.encode_frame(w.MSG_LOSS_REQUEST, "seg", self.post)
        self.v1_returnn = encode_v1(self.msg, returnn_style=True)
        self.v1_c = encode_v1(self.msg)

    def time_v2_encode(self, size):
        framing.encode_frame(w.MSG_LOSS_REQUEST, "seg", self.post)

    def time_v2_decode(self, size):
        framing.decode_frame(self.frame)

    def time_v1_encode_returnn(self, size):
        encode_v1(self.msg, returnn_style=True)

    def time_v1_encode_c(self, size):
        encode_v1(self.msg)

    def time_v1_decode(self, size):
        decode_v1(self.v1_returnn)

    def peakmem_v2_encode(self, size):
        framing.encode_frame(w.MSG_LOSS_REQUEST, "seg", self.post)

    def peakmem_v1_encode_returnn(self, size):
        encode_v1(self.msg, returnn_style=True)

    def track_v2_decode_is_view(self, size):
        """1 when the decoded array shares memory with the frame (no copy), else 0."""
        _, arr = framing.decode_frame(self.frame)
        return int(np.shares_memory(arr, np.frombuffer(self.frame, dtype=np.uint8)))

    track_v2_decode_is_view.unit = "bool"
