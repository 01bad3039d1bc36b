"""The child's end of a link: reading commands and writing the answers.

Every answer on v2 carries the sequence number of the request it answers (the parent checks it),
and a loss answer the request's segment name. A v1 message longer than the limit is read and
dropped, then refused: the next length prefix is again a real one (``in_step``).
``CommandServer`` (``server``) runs the loop over this link.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from ..errors import ProtocolError
from . import constants as w
from . import framing, shm
from .limits import v1_message_limit
from .link import PROTOCOL_V1, PROTOCOL_V2, SUPPORTED_PROTOCOLS, LinkBase, discard_exact, read_exact
from .v1 import INIT_VERSION, error_text, unpickle_v1

__all__ = ["ChildLink"]

LOSS_COMMAND = "get_loss_and_error_signal"
FSA_COMMAND = "export_allophone_state_fsa_by_segment_name"


class _SharedAnswer(NamedTuple):
    """Where the answer to the shared-memory request being served goes."""

    descriptor: shm.Descriptor
    out: np.ndarray  # the error signal's place in the region


class ChildLink(LinkBase):
    """The child's end: ``recv_command`` and the ``reply_*`` calls, one answer per command."""

    def __init__(self, read_fd: int, write_fd: int, **kwargs):
        super().__init__(read_fd, write_fd, **kwargs)
        self._request_seq = 0  # the v2 sequence number of the command being served (0: unknown)
        self._shared_answer: Optional[_SharedAnswer] = None
        #: False once a malformed message left the stream out of step (the next bytes are no message)
        self.in_step = True

    # -- commands -------------------------------------------------------------------------------------

    def recv_command(self) -> tuple:
        """The next command as a v1-style tuple ``(cmd, *args)``, whatever the protocol.

        v2 frames map to ``("get_loss_and_error_signal", seg_name, seg_len, posteriors)``,
        ``("export_allophone_state_fsa_by_segment_name", seg_name)``, ``("exit",)`` or the tuple
        of a CONTROL frame (``("shm_remap", size, generation)`` among them). Raises EOFError when
        the parent closed the pipe, ProtocolError for a malformed message.
        """
        self._shared_answer = None
        self._request_seq = 0
        if self.protocol == PROTOCOL_V1:
            return self._recv_v1_command()
        try:
            header, arr = framing.read_frame(self.read_fd, max_payload=self.max_payload)
        except ProtocolError:
            self.in_step = False  # a bad header leaves the rest of the frame unread
            raise
        self._request_seq = header.seq
        t = header.msg_type
        if t == w.MSG_LOSS_REQUEST and header.flags & w.FLAG_SHM:
            return self._shared_request(header, arr)
        if t == w.MSG_LOSS_REQUEST:
            if arr is None or arr.ndim != 2 or arr.dtype != np.float32:
                raise ProtocolError(
                    f"posteriors must be a float32 (time, label) matrix, got {header.shape} {header.dtype}"
                )
            return (LOSS_COMMAND, header.name, arr.shape[0], arr)
        if t == w.MSG_FSA_REQUEST:
            return (FSA_COMMAND, header.name)
        if t == w.MSG_EXIT:
            return ("exit",)
        if t == w.MSG_CONTROL:
            return self._control_of(arr)
        raise ProtocolError(f"a child does not expect {w.MSG_NAMES.get(t)} frames")

    def _recv_v1_command(self) -> tuple:
        try:
            size = self._recv_v1_length()
        except ProtocolError:
            self.in_step = False  # a length below 1: where the next message starts is unknown
            raise
        if size > v1_message_limit(self.max_payload):
            # drop the whole message, so that the next length prefix is read as one
            discard_exact(self.read_fd, size, "v1 message")
            raise ProtocolError(
                f"v1 message of {size} bytes exceeds the limit of {self.max_payload} bytes"
                " (raise max_payload if such segments are real); the message was dropped"
            )
        return unpickle_v1(read_exact(self.read_fd, size, "v1 message"))

    def _shared_request(self, header, arr) -> tuple:
        if self.shm is None:
            raise ProtocolError("shared-memory request, but no shared region was negotiated")
        desc = shm.Descriptor.from_array(arr)
        if desc.generation != self.shm.generation:
            raise ProtocolError(
                f"shared-memory request of generation {desc.generation}, the region is at {self.shm.generation}"
            )
        if desc.seq != header.seq:
            raise ProtocolError(f"shared-memory descriptor seq {desc.seq} differs from the frame's {header.seq}")
        post = self.shm.view(desc.in_offset, desc.time, desc.labels, desc.in_row_stride, "posteriors")
        out = self.shm.view(desc.out_offset, desc.time, desc.labels, desc.out_row_stride, "error signal")
        if not post.flags.c_contiguous:
            post = np.ascontiguousarray(post)  # RASR's fast path wants a column-major (label, time) matrix
        self._shared_answer = _SharedAnswer(desc, out)
        return (LOSS_COMMAND, header.name, desc.time, post)

    @property
    def shared_destination(self) -> Optional[np.ndarray]:
        """Where the error signal of the shared-memory request being served goes (a view of the
        region), or None when the request came through the pipe. An error signal computed straight
        into it is sent without a copy."""
        return self._shared_answer.out if self._shared_answer is not None else None

    # -- the transport's own commands ---------------------------------------------------------------

    def accept_protocol(self, version: int, options: Optional[dict] = None) -> None:
        """Confirms a ``use_protocol`` request (in v1) and switches to ``version``; maps the shared
        region the options name, or says why it cannot."""
        if version not in SUPPORTED_PROTOCOLS:
            raise ProtocolError(f"protocol {version!r} is not supported; this side speaks {SUPPORTED_PROTOCOLS}")
        accepted: dict[str, Any] = {}
        spec = (options or {}).get("shm")
        if spec is not None and version == PROTOCOL_V2:
            try:
                self.shm = shm.SharedRegion.attach(int(spec["fd"]), int(spec["size"]), int(spec.get("generation", 0)))
                accepted["shm"] = True
            except (ProtocolError, KeyError, TypeError, ValueError, OSError) as exc:
                accepted["shm"] = False
                accepted["shm_error"] = str(exc)
        self.send_v1(("ok", version, accepted))
        self.protocol = version

    def remap_shm(self, size, generation) -> None:
        """Follows a growth of the shared region the parent announced (``shm_remap``)."""
        if self.shm is None:
            raise ProtocolError("shm_remap, but no shared region was negotiated")
        self.shm.remap(int(size), int(generation))

    # -- answers --------------------------------------------------------------------------------------

    def _send_message(self, message: tuple) -> None:
        if self.protocol == PROTOCOL_V2:
            self._send_control(message, self._request_seq)
        else:
            self.send_v1(message)

    def reply_ok(self, *results) -> None:
        """A generic successful answer ("ok", *results)."""
        self._send_message(("ok",) + results)

    def reply_init(self, name: str, capabilities: dict) -> None:
        """Answers v1 ``init`` byte-compatibly, announcing what this end can do."""
        caps = dict(capabilities)
        caps.setdefault("shm", shm.available())
        self.send_v1(("ok", name, INIT_VERSION, caps))

    def reply_loss(self, seg_name: str, loss: float, error_signal: np.ndarray, skipped: bool = False) -> None:
        """The answer to a loss request; ``error_signal`` (time, label) float32."""
        shared = self._shared_answer
        if shared is not None:
            self._shared_answer = None
            err = np.asarray(error_signal)
            if err.shape != shared.out.shape:
                raise ValueError(f"error signal of shape {err.shape}, the posteriors were {shared.out.shape}")
            if not (err.ctypes.data == shared.out.ctypes.data and err.strides == shared.out.strides):
                np.copyto(shared.out, err, casting="same_kind")  # the one copy: RASR's result into the parent's buffer
            flags = w.FLAG_SHM | (w.FLAG_SKIPPED if skipped else 0)
            framing.write_frame(self.write_fd, w.MSG_LOSS_RESULT, seg_name, shared.descriptor.to_array(),
                                value=float(loss), seq=self._request_seq, flags=flags, timeout=self._timeout)
        elif self.protocol == PROTOCOL_V2:
            framing.write_frame(
                self.write_fd, w.MSG_LOSS_RESULT, seg_name, error_signal, value=float(loss),
                seq=self._request_seq, flags=w.FLAG_SKIPPED if skipped else 0, timeout=self._timeout,
            )
        else:
            self.send_v1(("ok", float(loss), np.ascontiguousarray(error_signal, dtype=np.float32)))

    def reply_fsa(self, num_states: int, num_edges: int, edges: np.ndarray, weights: np.ndarray) -> None:
        """The answer to an FSA export request."""
        edges = np.asarray(edges, dtype=np.uint32).reshape(3, num_edges)
        weights = np.asarray(weights, dtype=np.float32).reshape(num_edges)
        if self.protocol == PROTOCOL_V2:
            packed = np.empty((4, num_edges), dtype=np.uint32)
            packed[:3] = edges
            packed[3] = weights.view(np.uint32)
            framing.write_frame(self.write_fd, w.MSG_FSA_RESULT, "", packed, value=float(num_states),
                                seq=self._request_seq, timeout=self._timeout)
        else:
            self.send_v1(("ok", int(num_states), int(num_edges), edges.reshape(-1), weights))

    def reply_exception(self, kind: str, text: str) -> None:
        """A command failed; ``text`` carries the traceback. The link stays usable."""
        self._shared_answer = None
        if self.protocol == PROTOCOL_V2:
            payload = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
            framing.write_frame(self.write_fd, w.MSG_ERROR, kind, payload, seq=self._request_seq,
                                timeout=self._timeout)
        else:
            self.send_v1(("exception", error_text(kind, text)))

    def close(self) -> None:
        """Closes both pipe ends (idempotent)."""
        self._shared_answer = None
        super().close()
