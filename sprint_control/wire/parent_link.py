"""The parent's end of a link: the handshake and the requests, each matched to its answer.

The link owns the state of its one exchange (``ParentLink.pending``): it is set before the first
byte of a request is written and cleared only when the whole answer to that request has been read.
So a caller that was interrupted anywhere in between (an exception, a signal, a timeout) finds
``pending`` still set and knows the stream is out of step; and every answer is checked against the
request it claims to answer (v2: the segment name and sequence number, the shared-memory
descriptor), so an answer to an earlier request is a ProtocolError, never a wrong loss.
"""

from __future__ import annotations

import logging
import pickle
from typing import NamedTuple, NoReturn, Optional

import numpy as np

from ..errors import ProtocolError, SprintRemoteError
from . import constants as w
from . import framing, shm
from .limits import check_name, check_payload
from .link import PROTOCOL_V2, LinkBase, write_all
from .v1 import INIT_VERSION, encode_v1

__all__ = ["ParentLink", "PendingRequest", "SharedExchange"]

logger = logging.getLogger("sprint_control.protocol")


class SharedExchange(NamedTuple):
    """The shared-memory half of a pending loss request."""

    descriptor: shm.Descriptor
    target: np.ndarray  # where the child writes the error signal
    in_place: bool  # ``target`` is the caller's ``out`` itself


class PendingRequest(NamedTuple):
    """The request a ParentLink waits the answer of."""

    command: str  # "get_loss_and_error_signal", "export_allophone_state_fsa_by_segment_name", or a call's
    seg_name: str  # "" for calls
    seq: int  # the v2 frame's sequence number (0 on v1)
    shape: Optional[tuple[int, int]] = None  # the error signal expected (loss requests)
    shared: Optional[SharedExchange] = None


#: The ``seq`` of a request made up for an answer read without one (``protocol.Link`` only).
UNMATCHED = -1
_LOSS = "get_loss_and_error_signal"
_FSA = "export_allophone_state_fsa_by_segment_name"


class ParentLink(LinkBase):
    """The parent's end: ``handshake``, then loss requests (``send_loss_request`` +
    ``recv_loss_result``), ``request_fsa``, ``call`` and ``send_exit``. One exchange at a time."""

    def __init__(self, read_fd: int, write_fd: int, **kwargs):
        super().__init__(read_fd, write_fd, **kwargs)
        self._pending: Optional[PendingRequest] = None
        self._peer_generation = 0
        self._slots: dict[str, np.ndarray] = {}  # this link's scratch matrices in the region

    @property
    def pending(self) -> Optional[PendingRequest]:
        """The request whose answer has not been read in full yet; None when the link is idle."""
        return self._pending

    def _check_idle(self) -> None:
        if self._pending is not None:
            raise ProtocolError(
                f"a {self._pending.command} request ({self._pending.seg_name!r}) is still pending on this link:"
                " read its answer first"
            )

    def _check_name(self, seg_name) -> None:
        if self.protocol == PROTOCOL_V2:  # a v2 frame header bounds the name; v1 does not
            check_name(seg_name)

    def _begin(self, command: str, seg_name: str = "", shape=None, shared=None, seq: Optional[int] = None,
               idle: bool = False) -> int:
        """Records the request as pending; ``idle``: the caller has just checked that none is."""
        if not idle:
            self._check_idle()
        if seq is None:
            seq = self._next_seq() if self.protocol == PROTOCOL_V2 else 0
        self._pending = PendingRequest(command, seg_name, seq, shape, shared)
        return seq

    def _write_request(self, msg_type: int, name: str, array, seq: int, flags: int = 0) -> None:
        try:
            framing.write_frame(self.write_fd, msg_type, name, array, seq=seq, flags=flags, timeout=self._timeout)
        except (TypeError, ValueError):
            self._pending = None  # refused while encoding: nothing was written, the stream is in step
            raise

    def _write_request_v1(self, message: tuple) -> None:
        try:
            data = encode_v1(message, returnn_style=self.returnn_style)
        except (TypeError, ValueError, AttributeError, pickle.PicklingError):
            self._pending = None  # not encodable: nothing was written
            raise
        write_all(self.write_fd, data, self._timeout)

    def _expect(self, command: str) -> PendingRequest:
        pending = self._pending
        if pending is None or pending.command != command:
            what = "no request" if pending is None else f"a {pending.command} request"
            raise ProtocolError(f"an answer to {command} was to be read, but {what} is pending on this link")
        return pending

    def _check_answer(self, header, pending: PendingRequest) -> None:
        """A v2 answer must carry its request's sequence number (an ERROR frame may carry 0: the
        child could not tell which request failed) and a LOSS_RESULT its segment name."""
        if pending.seq == UNMATCHED:
            return
        if header.seq != pending.seq and not (header.msg_type == w.MSG_ERROR and header.seq == 0):
            raise ProtocolError(
                f"answer {w.MSG_NAMES.get(header.msg_type)} #{header.seq} does not belong to the pending"
                f" {pending.command} request #{pending.seq} ({pending.seg_name!r}): the stream is out of step"
            )
        if header.msg_type == w.MSG_LOSS_RESULT and header.name != pending.seg_name:
            raise ProtocolError(
                f"answer for segment {header.name!r} to the request for {pending.seg_name!r}: the stream is out of step"
            )

    def close(self) -> None:
        """Closes both pipe ends (idempotent) and lets go of the shared region's slots."""
        self._slots.clear()
        self._pending = None
        super().close()

    # -- the handshake ------------------------------------------------------------------------------

    def handshake(self, name: str = "SprintSubprocessInstance", protocol: int = PROTOCOL_V2,
                  options: Optional[dict] = None, shared: Optional[shm.SharedRegion] = None) -> int:
        """Sends v1 ``init``, checks the answer, switches to v2 when both ends can.

        Returns the protocol in use. ``protocol=1`` stays on v1 whatever the child offers. With
        ``shared`` (a region whose fd the child inherited), the matrices travel through it when the
        child can map it; ``self.shm`` tells whether it does.
        """
        self._begin("init", seq=0)
        self.send_v1(("init", name, INIT_VERSION))
        answer = self.recv_v1()
        self._pending = None
        if answer[0] == "exception":
            raise SprintRemoteError(f"the child refused init: {answer[1] if len(answer) > 1 else ''}")
        if answer[0] != "ok" or len(answer) < 3 or answer[2] != INIT_VERSION:
            raise ProtocolError(f"unexpected answer to init: {answer!r:.200}")
        caps = answer[3] if len(answer) > 3 and isinstance(answer[3], dict) else {}
        self.peer_capabilities = caps
        if protocol >= PROTOCOL_V2 and PROTOCOL_V2 in caps.get("protocols", ()):
            opts = dict(options or {})
            if shared is not None and caps.get("shm"):
                size, generation = shared.snapshot()
                opts["shm"] = {"fd": shared.fd, "size": size, "generation": generation}
            self._begin("use_protocol", seq=0)
            self.send_v1(("use_protocol", PROTOCOL_V2, opts))
            answer = self.recv_v1()
            self._pending = None
            if answer[0] != "ok" or len(answer) < 2 or answer[1] != PROTOCOL_V2:
                raise ProtocolError(f"the child did not accept protocol 2: {answer!r:.200}")
            self.protocol = PROTOCOL_V2
            accepted = answer[2] if len(answer) > 2 and isinstance(answer[2], dict) else {}
            if "shm" in opts and accepted.get("shm") is True:
                self.shm = shared
                self._peer_generation = opts["shm"]["generation"]
            elif "shm" in opts:
                logger.warning("the child cannot map the shared region (%s); using the pipe",
                               accepted.get("shm_error", "no reason given"))
        return self.protocol

    # -- loss requests ------------------------------------------------------------------------------

    def send_loss_request(self, seg_name: str, posteriors: np.ndarray, out: Optional[np.ndarray] = None, *,
                          checked: bool = False) -> None:
        """Asks for loss and error signal of one segment; posteriors (time, label) float32.

        On v2 a row-strided slice of a (time, batch, label) batch is written row by row, uncopied.
        With a shared region, only a descriptor is sent: posteriors that already lie in the region
        are not copied at all, others once into this link's slot; ``out`` (the destination that
        ``recv_loss_result`` will be given) lets the child write the error signal straight there.
        ``checked``: the caller has checked the name and the payload limit already (the parent's
        instance does, once per request), so they are not checked again here.
        """
        post = np.asarray(posteriors)
        if post.ndim != 2:
            raise ValueError(f"posteriors must be a (time, label) matrix, got shape {post.shape}")
        shape = (int(post.shape[0]), int(post.shape[1]))
        self._check_idle()
        if not checked:
            self._check_name(seg_name)
        if (self.shm is not None and post.nbytes >= self.shm.inline_below
                and self._send_shared_request(seg_name, post, out)):
            return
        if self.protocol != PROTOCOL_V2:
            post = np.ascontiguousarray(post, dtype=np.float32)
        if not checked:
            # what the child would refuse is refused here, before a byte is written: its limit is the
            # same option (max_payload) this link was given
            check_payload(post.nbytes, self.max_payload, f"posteriors of segment {seg_name!r}")
        seq = self._begin(_LOSS, seg_name, shape, idle=True)
        if self.protocol == PROTOCOL_V2:
            self._write_request(w.MSG_LOSS_REQUEST, seg_name, post, seq)
        else:
            self._write_request_v1((_LOSS, seg_name, shape[0], post))

    def recv_loss_result(self, shape: tuple[int, int], out: Optional[np.ndarray] = None
                         ) -> tuple[float, np.ndarray]:
        """Reads the answer to ``send_loss_request``: (loss, error signal of ``shape``).

        With ``out`` (a (time, label) view, e.g. into the batch output) the error signal lands there.
        A child-side exception raises SprintRemoteError; the link stays usable.
        """
        pending = self._expect(_LOSS)
        if tuple(shape) != pending.shape:
            raise ValueError(f"the pending request {pending.seg_name!r} has shape {pending.shape}, not {tuple(shape)}")
        if pending.shared is not None:
            result = self._recv_shared_result(pending, out)
        elif self.protocol == PROTOCOL_V2:
            result = self._recv_framed_result(pending, out)
        else:
            result = self._recv_v1_result(pending, out)
        self._pending = None
        return result

    def _recv_framed_result(self, pending: PendingRequest, out: Optional[np.ndarray]) -> tuple[float, np.ndarray]:
        # one call into the framing core: the header is checked there, name and error signal come with
        # one readv, into ``out`` only for a LOSS_RESULT of this request's sequence number and shape;
        # anything else lands in a fresh array and is judged below
        header, arr = framing.read_answer(self.read_fd, out, w.MSG_LOSS_RESULT, pending.seq,
                                          max_payload=self.max_payload, timeout=self.timeout)
        self._check_answer(header, pending)
        if header.msg_type != w.MSG_LOSS_RESULT:
            self._raise_unexpected(header, arr, "LOSS_RESULT")
        if tuple(header.shape) != pending.shape or header.dtype != np.float32:
            raise ProtocolError(
                f"error signal of shape {header.shape} and dtype {header.dtype} does not match"
                f" the posteriors' shape {pending.shape} (float32)"
            )
        return header.value, arr

    def _recv_v1_result(self, pending: PendingRequest, out: Optional[np.ndarray]) -> tuple[float, np.ndarray]:
        answer = self.recv_v1()
        if answer[0] == "ok" and len(answer) == 3:
            loss, err = answer[1], answer[2]
            if not isinstance(err, np.ndarray) or err.shape != pending.shape:
                got = getattr(err, "shape", type(err).__name__)
                raise ProtocolError(f"error signal of shape {got} does not match the posteriors' shape {pending.shape}")
            err = err.astype(np.float32, copy=False)
            if out is not None:
                out[...] = err
                err = out
            return float(loss), err
        self._raise_v1_failure(answer)

    def _slot(self, which: str, rows: int, cols: int) -> np.ndarray:
        """This link's scratch matrix in the region, grown to the largest segment seen."""
        slot = self._slots.get(which)
        if slot is None or slot.size < rows * cols:
            self._slots.pop(which, None)
            assert self.shm is not None  # only the shared-memory path has slots
            slot = self.shm.empty((max(rows * cols, 1),), np.float32)
            self._slots[which] = slot
        return slot[: rows * cols].reshape(rows, cols)

    def _send_shared_request(self, seg_name: str, post: np.ndarray, out: Optional[np.ndarray]) -> bool:
        region = self.shm
        assert region is not None  # only called with a shared region
        rows, cols = post.shape
        try:
            where_in = region.locate(post)
            if where_in is None:
                slot = self._slot("in", rows, cols)
                np.copyto(slot, post, casting="same_kind")
                where_in = region.locate(slot)
            where_out = region.locate(out) if out is not None and out.shape == (rows, cols) else None
            target = out if where_out is not None else None
            if where_out is None:
                # without a destination the answer gets a block of its own, handed to the caller as
                # it is (no copy out); with one outside the region, the reused slot is copied from
                target = region.empty((rows, cols)) if out is None else self._slot("out", rows, cols)
                where_out = region.locate(target)
            assert where_in is not None and where_out is not None and target is not None  # both blocks lie in it
        except MemoryError as exc:  # the region reached its cap: this segment takes the pipe
            logger.warning("shared region full (%s); sending %r through the pipe", exc, seg_name)
            return False
        # One consistent (size, generation), read after every block above was placed: other links
        # of the pool may grow the region at any moment, and the child must map at least as far as
        # the blocks reach before it reads the descriptor.
        size, generation = region.snapshot()
        if generation != self._peer_generation:
            self.call("shm_remap", size, generation)
            self._peer_generation = generation
        seq = self._next_seq()
        desc = shm.Descriptor(generation, where_in[0], where_in[1], where_out[0], where_out[1], rows, cols, seq)
        shared = SharedExchange(desc, target, out is not None and target is out)
        self._begin(_LOSS, seg_name, (rows, cols), shared, seq=seq, idle=True)  # idle: send_loss_request checked
        self._write_request(w.MSG_LOSS_REQUEST, seg_name, desc.to_array(), seq, flags=w.FLAG_SHM)
        return True

    def _recv_shared_result(self, pending: PendingRequest, out: Optional[np.ndarray]) -> tuple[float, np.ndarray]:
        assert pending.shared is not None
        desc, target, in_place = pending.shared
        header, arr = self._read_frame()
        self._check_answer(header, pending)
        if header.msg_type != w.MSG_LOSS_RESULT:
            self._raise_unexpected(header, arr, "LOSS_RESULT")
        if not header.flags & w.FLAG_SHM:
            raise ProtocolError("the child answered a shared-memory request through the pipe")
        echo = shm.Descriptor.from_array(arr)
        if echo != desc:
            raise ProtocolError(f"shared-memory answer {tuple(echo)} does not match the request {tuple(desc)}")
        if in_place or out is None:
            return header.value, target
        np.copyto(out, target)
        return header.value, out

    # -- other requests -----------------------------------------------------------------------------

    def request_fsa(self, seg_name: str) -> tuple[int, int, np.ndarray, np.ndarray]:
        """RASR's allophone-state automaton of a segment:
        (num_states, num_edges, edges uint32 (3*E,) from/to/emission rows, weights float32 (E,))."""
        self._check_name(seg_name)
        seq = self._begin(_FSA, seg_name)
        if self.protocol == PROTOCOL_V2:
            self._write_request(w.MSG_FSA_REQUEST, seg_name, None, seq)
            header, arr = self._read_frame()
            self._check_answer(header, self._expect(_FSA))
            if header.msg_type != w.MSG_FSA_RESULT:
                self._raise_unexpected(header, arr, "FSA_RESULT")
            if arr is None or arr.ndim != 2 or arr.shape[0] != 4 or arr.dtype != np.uint32:
                raise ProtocolError(f"FSA frame must carry a uint32 (4, E) array, got {header.shape}")
            self._pending = None
            edges = np.ascontiguousarray(arr[:3]).reshape(-1)
            weights = np.ascontiguousarray(arr[3]).view(np.float32)
            return int(header.value), arr.shape[1], edges, weights
        self._write_request_v1((_FSA, seg_name))
        answer = self.recv_v1()
        self._pending = None
        if answer[0] == "ok" and len(answer) == 5:
            num_states, num_edges, edges, weights = answer[1:]
            return int(num_states), int(num_edges), np.asarray(edges, np.uint32), np.asarray(weights, np.float32)
        self._raise_v1_failure(answer)

    def call(self, *message) -> tuple:
        """Any other command, answered with ("ok", ...); returns the results after "ok"."""
        seq = self._begin(str(message[0]) if message else "")
        if self.protocol == PROTOCOL_V2:
            try:
                self._send_control(tuple(message), seq)
            except (TypeError, ValueError, AttributeError, pickle.PicklingError):
                self._pending = None  # not encodable: nothing was written
                raise
            header, arr = self._read_frame()
            pending = self._pending
            assert pending is not None  # set by _begin above
            self._check_answer(header, pending)
            if header.msg_type != w.MSG_CONTROL:
                self._raise_unexpected(header, arr, "CONTROL")
            answer = self._control_of(arr)
        else:
            self._write_request_v1(tuple(message))
            answer = self.recv_v1()
        self._pending = None
        if answer[0] == "ok":
            return answer[1:]
        self._raise_v1_failure(answer)

    def send_exit(self) -> None:
        """Asks the child to close its pipes and finish (it answers nothing)."""
        if self.protocol == PROTOCOL_V2:
            framing.write_frame(self.write_fd, w.MSG_EXIT, "", None, seq=self._next_seq(), timeout=self._timeout)
        else:
            self.send_v1(("exit",))

    # -- failures ------------------------------------------------------------------------------------

    def _raise_unexpected(self, header: w.FrameHeader, arr: Optional[np.ndarray], expected: str) -> NoReturn:
        if header.msg_type == w.MSG_ERROR:
            self._pending = None  # the child answered, with its failure: the stream is in step
            text = bytes(arr).decode("utf-8", "replace") if arr is not None else ""
            # the headline says what went wrong, as on v1: the traceback's last line, not only its type
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            headline = lines[-1] if lines else header.name
            if header.name and header.name not in headline:
                headline = f"{header.name}: {headline}"
            raise SprintRemoteError(f"the child failed: {headline}", text)
        if header.msg_type == w.MSG_CONTROL:
            answer = self._control_of(arr)
            if answer[0] == "exception":
                self._pending = None
            self._raise_v1_failure(answer)
        raise ProtocolError(f"expected a {expected} frame, got {w.MSG_NAMES.get(header.msg_type)}")

    def _raise_v1_failure(self, answer: tuple) -> NoReturn:
        if answer[0] == "exception":
            self._pending = None
            text = str(answer[1]) if len(answer) > 1 else ""
            first = text.strip().splitlines()[-1] if text.strip() else "exception"
            raise SprintRemoteError(f"the child failed: {first}", text)
        raise ProtocolError(f"unexpected answer from the child: {answer!r:.200}")
