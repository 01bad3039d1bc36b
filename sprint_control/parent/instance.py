"""``SprintSubprocessInstance``: one Sprint child process that computes one segment at a time, with
RETURNN's constructor and method names (life cycle and failure handling in ``session.ChildSession``)."""

from __future__ import annotations

import select
import threading
from typing import Optional, Union

import numpy as np

from ..errors import ProtocolError, SprintControlError
from ..wire.limits import V1_SLACK
from ..wire.protocol import PROTOCOL_V1, V1_MAX_MESSAGE, ParentLink
from .batch import check_finite, check_names, check_payload, check_real_dtype, sent_nbytes
from .session import ChildSession


class SprintSubprocessInstance(ChildSession):
    __doc__ = ChildSession.__doc__

    #: the thread that ``SprintInstancePool.get_free_instance`` handed this instance to, until the
    #: answer to its next request has been read
    _claimed_by: Optional[int] = None

    def claim(self) -> bool:
        """Reserves the instance for the calling thread until its next answer is read; False when
        another thread holds it (so threads sharing a pool never interleave their requests)."""
        me = threading.get_ident()
        if self._claimed_by not in (None, me):
            return False
        self._claimed_by = me
        return True

    def _before_request(self) -> ParentLink:
        if self.out_of_step:
            self.ensure_running()
        if self.is_calculating:
            raise SprintControlError("a request is still pending on this instance: read its answer first")
        return self._require_link()

    def _check_name(self, seg_name: Union[str, bytes]) -> str:
        if isinstance(seg_name, bytes):
            seg_name = seg_name.decode("utf-8")
        check_names((seg_name,))
        return seg_name

    def get_loss_and_error_signal__send(self, seg_name: Union[str, bytes], seg_len: int,
                                        log_posteriors: np.ndarray, out: Optional[np.ndarray] = None) -> None:
        """Sends one segment's log-posteriors, (time, label) float32 (a row-strided view is fine).

        ``out``: where ``__read`` will be asked to put the error signal; over shared memory the child
        then writes it there itself.
        """
        self._send(seg_name, seg_len, log_posteriors, out, round_trip=False)

    def release(self) -> None:
        """Ends the hand-over of ``claim`` (done by itself once an answer is read, or a request fails)."""
        self._claimed_by = None

    def _send(self, seg_name: Union[str, bytes], seg_len: int, log_posteriors: np.ndarray,
              out: Optional[np.ndarray], round_trip: bool, checked: bool = False) -> None:
        try:
            if checked:  # the caller checked it (a pool, its whole batch at once)
                self._write_checked(seg_name, log_posteriors, out, round_trip)  # type: ignore[arg-type]
            else:
                self._write_checked(*self._checked_request(seg_name, seg_len, log_posteriors), out, round_trip)
        except BaseException:
            self.release()  # no answer of this thread's is coming: other threads may take the instance
            raise

    def _checked_request(self, seg_name: Union[str, bytes], seg_len: int, log_posteriors: np.ndarray
                         ) -> tuple[str, np.ndarray]:
        """The one check of a request, before anything is written: the name, the posteriors (a real
        (time, label) matrix of ``seg_len`` > 0 frames, as float32), the payload limit (unless the
        shared region carries it) and, with ``reject_non_finite``, the values."""
        seg_name = self._check_name(seg_name)
        post = np.asarray(log_posteriors)
        if post.ndim != 2:
            raise ValueError(f"log_posteriors must be a (time, label) matrix, got shape {post.shape}")
        check_real_dtype(post)
        if int(seg_len) != post.shape[0]:
            raise ValueError(f"seg_len {seg_len} does not match the posteriors' {post.shape[0]} frames")
        if post.shape[0] == 0:
            raise ValueError(f"segment {seg_name!r} has no frames: Sprint computes no criterion on an empty"
                             " segment (a pool answers such sequences itself with loss 0)")
        if self.shared_region is None:
            check_payload(sent_nbytes(post.shape), self.max_payload, seg_name, post.shape)
        if post.dtype != np.float32:
            post = post.astype(np.float32)
        if self.reject_non_finite:
            check_finite(post, seg_name)
        return seg_name, post

    def _write_checked(self, seg_name: str, post: np.ndarray, out: Optional[np.ndarray], round_trip: bool) -> None:
        """``round_trip``: the answer is read right after (``get_loss_and_error_signal``), so the
        instance stays out of step until it is: nothing can interrupt it unnoticed in between."""
        link = self._before_request()
        if self.shared_region is not None and link.shm is None:  # the child took the pipe, not the region
            check_payload(post.nbytes, self.max_payload, seg_name, post.shape)
        if link.protocol == PROTOCOL_V1 and post.nbytes > V1_MAX_MESSAGE - V1_SLACK:
            # refuse before anything is written: the stream stays usable
            raise ProtocolError(f"posteriors of {post.nbytes} bytes do not fit a v1 message (2 GiB limit)")
        with self._exchange("while sending segment {!r}", "while sending {!r}", seg_name, sending=True,
                            stay_out_of_step=round_trip):
            link.send_loss_request(seg_name, post, out=out, checked=True)
        self.bytes_sent += post.nbytes

    def get_loss_and_error_signal__have_data(self) -> bool:
        """True when the answer to the pending request can be read without blocking."""
        if not self.is_calculating:
            raise SprintControlError("no request is pending on this instance")
        link = self._require_link()
        poller = select.poll()
        poller.register(link.read_fd, select.POLLIN | select.POLLHUP)
        return bool(poller.poll(0))

    def get_loss_and_error_signal__read(self, out: Optional[np.ndarray] = None
                                        ) -> tuple[str, float, np.ndarray]:
        """Reads the pending answer: ``(seg_name, loss, error_signal)``, error signal of the
        posteriors' shape. With ``out`` (a (time, label) float32 view with contiguous rows) it is
        read straight into ``out`` (v2) and ``out`` is returned."""
        return self._read(out, round_trip=False)

    def _read(self, out: Optional[np.ndarray], round_trip: bool) -> tuple[str, float, np.ndarray]:
        if self._out_of_step and not round_trip:
            self.ensure_running()
            raise SprintControlError("no request is pending on this instance: the last exchange was interrupted"
                                     " and the Sprint child restarted; send the segment again")
        if not self.is_calculating:
            raise SprintControlError("no request is pending on this instance")
        link = self._require_link()
        pending = link.pending
        assert pending is not None and pending.shape is not None
        seg_name, shape = pending.seg_name, pending.shape
        if out is not None:
            # a caller's mistake must not be taken for a broken stream: check before reading
            if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32:
                raise ValueError(f"out must be a float32 array of shape {shape}, got"
                                 f" {getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
            if not out.flags.writeable or (out.size and out.strides[1] != 4):
                raise ValueError("out must be writeable with contiguous rows (a (time, label) slice of a"
                                 " (time, batch, label) array is fine)")
        try:
            with self._exchange("while computing segment {!r}", "for segment {!r}", seg_name):
                loss, err = link.recv_loss_result(shape, out=out)
        finally:
            self.release()
        self.bytes_received += err.nbytes
        self.segments_done += 1
        return seg_name, float(loss), err

    def get_loss_and_error_signal(self, seg_name: Union[str, bytes], log_posteriors: np.ndarray,
                                  out: Optional[np.ndarray] = None) -> tuple[str, float, np.ndarray]:
        """``__send`` then ``__read`` in one call; an interrupt anywhere in between restarts the
        child before its next use."""
        post = np.asarray(log_posteriors)
        self._send(seg_name, post.shape[0], post, out, round_trip=True)
        return self._read(out, round_trip=True)

    def _round_trip_checked(self, seg_name: str, post: np.ndarray, out: Optional[np.ndarray]
                            ) -> tuple[str, float, np.ndarray]:
        """``get_loss_and_error_signal`` of a request its caller has checked as ``_checked_request``
        does (a pool checks its whole batch once): float32 (time, label) posteriors with contiguous rows."""
        self._send(seg_name, post.shape[0], post, out, round_trip=True, checked=True)
        return self._read(out, round_trip=True)

    def export_allophone_state_fsa(self, seg_name: Union[str, bytes]
                                   ) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Sprint's automaton of one segment: (num_states, num_edges, edges uint32 (3*E,), weights (E,))."""
        seg_name = self._check_name(seg_name)
        link = self._before_request()
        try:
            with self._exchange("while exporting the automaton of {!r}", "for the automaton of {!r}", seg_name):
                return link.request_fsa(seg_name)
        finally:
            self.release()  # its answer is read (or the exchange failed)

    def call(self, *message) -> tuple:
        """Any other command of the control module; returns what follows "ok"."""
        link = self._before_request()
        try:
            with self._exchange("during command {!r}", "for command {!r}", message[:1]):
                return link.call(*message)
        finally:
            self.release()

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<SprintSubprocessInstance pid={self.child_pid} protocol={self.protocol} {state}>"
