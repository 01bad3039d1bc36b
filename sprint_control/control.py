"""The Sprint side of the link: the Python module RASR loads with ``--*.pymod-name=``.

RASR (Sprint) imports this module (or the package ``sprint_control``, which re-exports the same
names) for three of its Python hooks and calls into it from its own C++ thread, holding the GIL
only for the duration of each call:

* PythonControl: ``init(...)`` returns the one :class:`PythonControl` of the process; RASR then
  either hands control to Python with ``run_control_loop(callback)`` or iterates its corpus and
  calls ``init_processing`` / ``process_segment`` (flow A), or, inside its own trainer,
  ``init_segment`` / ``notify_segment_loss`` (flow B).
* PythonSegmentOrder: ``getSegmentList(...)`` yields the names of the segments the parent asks for.
* PythonLayer: :class:`SprintNnPythonLayer` hands the parent's posteriors to RASR's network
  (``forward``) and takes RASR's error signal (``backpropagate``).

The parent process (the trainer) talks to the module over two pipes whose fds come in the config
string (``c2p_fd``/``p2c_fd``), with protocol v1 (RETURNN's pickles) or v2 (binary frames), see
:mod:`sprint_control.wire.protocol`. When RASR drives the corpus, the module reads the parent's commands
in a daemon thread of its own (the *control thread*); a single condition variable guards the state
that thread shares with RASR's thread.

Config keys (``key:value`` pairs joined by ``,``; the last occurrence of a key wins):

``c2p_fd``, ``p2c_fd``
    the child-to-parent (write) and parent-to-child (read) pipe ends; required.
``minPythonControlVersion``
    the lowest RASR PythonControl version (``version_number`` of ``init``) accepted.
``verbose``
    log one line per segment step. ``quiet``: log nothing but errors.
``posteriorsInLogSpace`` (default true)
    the parent's posteriors are log-probabilities (RETURNN always sends those).
``sprintInputInLogSpace`` (default true)
    RASR was told that its input is in log space (``--*.input-in-log-space=true``), so log
    posteriors are handed to it as they are and the ``"error-signal"`` is asked for; otherwise the
    module exponentiates them and asks for ``"error-signal-before-softmax"``.
``max_payload``
    the largest matrix (bytes) a message may carry; the parent passes the same number and refuses
    larger segments itself (default ``wire.constants.DEFAULT_MAX_PAYLOAD``).
``EnableAutoNumpySharedMemPickling``
    RETURNN's old shared-memory switch; accepted and ignored.

Other keys are kept in :attr:`PythonControl.config` for whoever wants them.

The work is done by the collaborators in :mod:`sprint_control.sprint`; this module is the facade
RASR sees, with the seed's names.
"""

from __future__ import annotations

import fcntl
import os
import threading
import traceback
from collections.abc import Iterator
from typing import Any, Callable, Optional

import numpy as np

from .errors import SprintControlError
from .sprint import rasr
from .sprint.commands import CommandHandlers
from .sprint.config import as_str, parse_config, to_bool, to_int, version_refusal
from .sprint.guard import guard_parent
from .sprint.log import log as _log
from .sprint.log import log_state as _log_state
from .sprint.log import print
from .sprint.loop import ControlLoop
from .sprint.segments import SegmentHandoff
from .wire.protocol import INIT_VERSION, MAX_PAYLOAD_OPTION, ChildLink, CommandServer

__all__ = [
    "print",
    "init",
    "getSegmentList",
    "get_segment_list",
    "SprintNnPythonLayer",
    "PythonControl",
    "parse_config",
    "guard_parent",
]

#: How long ``exit()`` gives the control thread to deliver the last answers (seconds).
EXIT_DRAIN_TIMEOUT = 10.0


def _check_pipe_end(key: str, fd: int, way: str) -> None:
    """Refuses a ``c2p_fd``/``p2c_fd`` that is no open fd of this process or is open the wrong way
    (a loop on it would end at its first write with nothing the parent could read)."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (OSError, OverflowError, ValueError):  # a number no C int holds, a negative one
        raise SprintControlError(
            f"{key} {fd} is not an open file descriptor in this process: the parent must leave its pipe"
            " ends open across exec (pass_fds) and name them in --*.pymod-config"
        ) from None
    wanted = (os.O_WRONLY, os.O_RDWR) if way == "writing" else (os.O_RDONLY, os.O_RDWR)
    if flags & os.O_ACCMODE not in wanted:
        raise SprintControlError(
            f"{key} {fd} is not open for {way}: --*.pymod-config must name the parent's pipe ends as this side"
            " sees them (c2p_fd the end it writes, p2c_fd the end it reads)"
        )


# ---------------------------------------------------------------------------------------------
# PythonControl interface


def init(name, reference, config, sprint_unit=None, version_number=None, callback=None, **kwargs):
    """Entry point of RASR's PythonControl; also used by ``getSegmentList`` and the PythonLayer.

    Every caller in the process gets the same :class:`PythonControl` (created on the first call,
    which opens the pipes named by ``c2p_fd``/``p2c_fd`` in ``config``).

    :param str name: who calls, e.g. ``"Sprint.PythonControl"`` for RASR itself.
    :param reference: an object that identifies the calling instance (RASR passes a PyCapsule).
    :param str config: the config string of ``--*.pymod-config`` (see the module docstring).
    :param str|None sprint_unit: which part of RASR uses PythonControl, e.g. ``"NnTrainer.pythonControl"``,
        ``"FeedForwardTrainer"``, ``"SegmentwiseNnTrainer"``.
    :param int|None version_number: RASR's PythonControl version; old builds pass none. RASR is refused
        when it is older than ``minPythonControlVersion``.
    :param callback: RASR's ``callback(cmd, **kwargs)`` (newer builds only), used for the criterion
        and for automaton export.
    :param kwargs: anything else a caller passes along.
    :return: the process's :class:`PythonControl` (never None, RASR requires an object).
    """
    cfg = parse_config(config)
    if "quiet" in cfg:
        _log_state.quiet = to_bool(cfg["quiet"], "quiet")
    if "verbose" in cfg:
        _log_state.verbose = to_bool(cfg["verbose"], "verbose")
    _log(
        f"init: name={name!r}, sprint_unit={sprint_unit!r}, version_number={version_number!r},"
        f" callback={'yes' if callback is not None else 'no'}, config={cfg!r}"
    )
    for key in ("c2p_fd", "p2c_fd"):
        if key not in cfg:
            raise SprintControlError(
                f"the config string lacks {key!r}: the parent passes c2p_fd:<N>,p2c_fd:<M> in --*.pymod-config"
                f" (got {config!r})"
            )
    return PythonControl.create(
        c2p_fd=to_int(cfg["c2p_fd"], "c2p_fd"),
        p2c_fd=to_int(cfg["p2c_fd"], "p2c_fd"),
        name=name,
        reference=reference,
        config=cfg,
        sprint_unit=sprint_unit,
        version_number=version_number,
        callback=callback,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# PythonSegmentOrder interface


# noinspection PyPep8Naming
def getSegmentList(corpusName, segmentList, config, **kwargs):
    """Entry point of RASR's PythonSegmentOrder: yields the segments RASR is to process, in order.

    The order is the parent's: each name is that of a loss request the control thread received.
    RASR's own list (``segmentList``, and ``segmentsInfo`` where given) is not needed. The control
    loop is started in a thread of its own unless it already runs. The list ends when the parent
    sends ``exit`` or closes the pipe.
    """
    del segmentList  # RASR's own order is replaced by the parent's
    corpus = as_str(corpusName, "corpusName")
    _log(f"getSegmentList: corpus={corpus!r}")
    control = init(name="sprint_control.PythonSegmentOrder", reference=corpus, config=config)
    control.check_control_loop_running()
    yield from control.segment_list_iterator()
    failure = control.server.failure
    if failure:  # the control thread ended on pipes it could not use: RASR must fail, not finish
        raise SprintControlError(f"the control loop ended: {failure}")


get_segment_list = getSegmentList


# ---------------------------------------------------------------------------------------------
# PythonLayer interface


class SprintNnPythonLayer:
    """The PythonLayer RASR puts into its own network (flow B).

    Its output is the parent's posteriors of the current segment; the error signal RASR
    backpropagates into it is what goes back to the parent. It has no parameters and passes no
    gradient on to its input.
    """

    def __init__(self, config, **kwargs):
        _log(f"SprintNnPythonLayer: config={config!r}")
        self.control: PythonControl = init(name="sprint_control.SprintNnPythonLayer", reference=self, config=config)
        self.input_sizes: dict[int, int] = {}
        self.output_size: Optional[int] = None

    def finalize(self):
        """RASR is done with the layer."""
        _log("SprintNnPythonLayer.finalize", verbose=True)

    # noinspection PyPep8Naming
    def setInputDimension(self, stream, size):
        """RASR tells the width of input stream ``stream`` (int) as ``size`` (int)."""
        self.input_sizes[int(stream)] = int(size)

    # noinspection PyPep8Naming
    def setOutputDimension(self, size):
        """RASR tells the width of the layer's output (the number of labels) as ``size``."""
        self.output_size = int(size)

    # noinspection PyPep8Naming
    def initializeNetworkParameters(self):
        """RASR asks to initialise parameters; the layer has none."""

    # noinspection PyPep8Naming
    def loadNetworkParameters(self, filename):
        """RASR asks to load parameters from ``filename``; the layer has none, nothing is read."""

    # noinspection PyPep8Naming
    def saveNetworkParameters(self, filename):
        """RASR asks to save parameters to ``filename``; the layer has none, nothing is written."""

    # noinspection PyPep8Naming
    def isTrainable(self):
        """Whether RASR should backpropagate into the layer: always, that is how the error signal arrives."""
        return True

    # noinspection PyPep8Naming
    def getNumberOfFreeParameters(self):
        """The layer's parameter count: 0."""
        return 0

    # noinspection PyShadowingBuiltins
    def forward(self, input):
        """Returns the current segment's posteriors as a (label, time) matrix.

        :param input: RASR's input matrices, one (input_size, time) array per stream; only their
            time length is used, to check it against the parent's segment.
        :return: the transpose of the (time, label) buffer the parent's posteriors were read into:
            a view (F-contiguous float32, RASR's one-memcpy path), no copy. When
            ``sprintInputInLogSpace`` is false the log posteriors are exponentiated first (a copy).
        """
        seg_len = None
        if input is not None and len(input) > 0:
            first = input[0]
            if getattr(first, "ndim", 0) != 2:
                message = f"forward expects (input_size, time) matrices, got {getattr(first, 'shape', first)!r:.100}"
                self.control.segments.fail_active(message)
                raise TypeError(message)
            seg_len = int(first.shape[1])
            self._last_input_sizes = [int(x.shape[0]) for x in input]
        return self.control._layer_forward(seg_len, self.output_size)

    # noinspection PyPep8Naming
    def backpropagate(self, errorSignalIn):
        """Takes RASR's error signal for the layer's output and passes it on to the parent.

        :param numpy.ndarray errorSignalIn: (label, time) matrix; kept as it comes (its transpose is
            what is sent), no copy.
        :return: a tuple with one zero (input_size, time) matrix per input stream.
        """
        if getattr(errorSignalIn, "ndim", 0) != 2:
            message = (
                "backpropagate expects a (label, time) matrix, got"
                f" {getattr(errorSignalIn, 'shape', errorSignalIn)!r:.100}"
            )
            self.control.segments.fail_active(message)  # the parent learns why, instead of a skipped segment
            raise TypeError(message)
        seg_len = int(errorSignalIn.shape[1])
        self.control._layer_backpropagate(seg_len, errorSignalIn)
        sizes = [self.input_sizes[s] for s in sorted(self.input_sizes)] or getattr(self, "_last_input_sizes", [0])
        return tuple(np.zeros((seg_len, size), dtype=np.float32).T for size in sizes)

    # modern aliases
    set_input_dimension = setInputDimension
    set_output_dimension = setOutputDimension
    is_trainable = isTrainable


class PythonControl:
    """The Sprint side of one parent/child link; one instance per process.

    It serves all of RASR's hooks at once: PythonControl (RASR's control loop, iterate-corpus, the
    segment-wise trainers), the segment order that ``getSegmentList`` provides, and the PythonLayer.
    The work is done by its collaborators: ``segments`` (the hand-off between the control thread
    and RASR's thread), ``server`` (the parent's commands over ``link``, handled by
    ``sprint.commands``), ``loop`` (the control loop) and ``sprint.rasr`` (RASR's callback).

    :param int c2p_fd: the child-to-parent pipe end (we write)
    :param int p2c_fd: the parent-to-child pipe end (we read)
    :param kwargs: what ``init`` passes on (name, reference, config, sprint_unit, version_number, callback)
    """

    #: The version of the ``init`` handshake (v1's third item); RETURNN's parent checks it is 1.
    Version = INIT_VERSION
    #: The one instance of the process, or None before the first ``init``.
    instance: Optional[PythonControl] = None

    @classmethod
    def create(cls, **kwargs) -> PythonControl:
        """Returns the process's instance, creating it on the first call; later calls only register
        another caller (and its callback or version) with it.

        :param kwargs: passed to :class:`PythonControl`
        """
        if cls.instance is not None:
            cls.instance._register_caller(**{k: v for k, v in kwargs.items() if k not in ("c2p_fd", "p2c_fd")},
                                          fds=(kwargs.get("c2p_fd"), kwargs.get("p2c_fd")))
            return cls.instance
        return cls(**kwargs)

    def __init__(self, c2p_fd, p2c_fd, **kwargs):
        if self.__class__.instance is not None:
            raise SprintControlError("PythonControl exists once per process; use PythonControl.create()")
        self.c2p_fd = int(c2p_fd)
        self.p2c_fd = int(p2c_fd)
        for key, fd, way in (("c2p_fd", self.c2p_fd, "writing"), ("p2c_fd", self.p2c_fd, "reading")):
            _check_pipe_end(key, fd, way)
        self.config: dict[str, str] = {}
        self.callers: list[str] = []
        self.references: list[Any] = []
        self.sprint_unit: Optional[str] = None
        self.sprint_callback: Optional[Callable] = None
        self.sprint_version_number: Optional[int] = None
        self.posteriors_in_log_space = True
        self.sprint_knows_log_space = True
        self.input_dim: Optional[int] = None
        self.output_dim: Optional[int] = None
        self.segments = SegmentHandoff()
        self.link = ChildLink(self.p2c_fd, self.c2p_fd)
        self._write_lock = threading.Lock()
        self.loop = ControlLoop(self.segments, self.own_threaded_callback, self.handle_next,
                                lambda exc, text: self.server.send_error(exc, text),
                                lambda: self.server.failure)
        # the criterion is looked up on each call, so that a subclass's or a test's stand-in is used
        self.handlers = CommandHandlers(self.segments, self.loop, lambda *a: self._criterion_via_sprint_callback(*a),
                                        lambda: self.sprint_callback, lambda: {
                                            "sprint_version_number": self.sprint_version_number,
                                            "sprint_unit": self.sprint_unit})
        self.server = CommandServer(self.link, self.handlers.table(), name="sprint_control",
                                    capabilities=self.handlers.capabilities, write_lock=self._write_lock, log=_log)
        guard_parent()
        self.__class__.instance = self
        _log(f"PythonControl: c2p_fd={self.c2p_fd}, p2c_fd={self.p2c_fd}")
        self._register_caller(**kwargs)

    @property
    def cond(self) -> threading.Condition:
        """The condition that guards the segments and the loop's state."""
        return self.segments.cond

    @property
    def callback(self) -> Optional[Callable]:
        """The callback of the running control loop: RASR's, or ``own_threaded_callback``."""
        return self.loop.callback

    @property
    def loss_and_error_signal_via_sprint_callback(self) -> bool:
        """Flow A: RASR's ``process_segment`` computes each segment's criterion with its callback."""
        return self.segments.via_sprint_callback

    # -- registration ---------------------------------------------------------------------------

    def _register_caller(self, name=None, reference=None, config=None, sprint_unit=None, version_number=None,
                         callback=None, fds=None, **kwargs):
        if fds is not None and fds[0] is not None and (int(fds[0]), int(fds[1])) != (self.c2p_fd, self.p2c_fd):
            _log(
                f"init from {name!r} names the pipes c2p_fd={fds[0]}, p2c_fd={fds[1]}, but this process"
                f" already uses c2p_fd={self.c2p_fd}, p2c_fd={self.p2c_fd}; keeping the first",
                error=True,
            )
        if name is not None:
            self.callers.append(str(name))
        if reference is not None:
            self.references.append(reference)
        if config:
            self._apply_config(dict(config))
        if sprint_unit is not None:
            self.sprint_unit = sprint_unit
        if callback is not None:
            self.sprint_callback = callback
        if name == "Sprint.PythonControl" or version_number is not None:
            self.sprint_version_number = version_number
            self._check_version(version_number)

    def _apply_config(self, cfg: dict[str, str]) -> None:
        self.config.update(cfg)
        if "posteriorsInLogSpace" in cfg:
            self.posteriors_in_log_space = to_bool(cfg["posteriorsInLogSpace"], "posteriorsInLogSpace")
        if "sprintInputInLogSpace" in cfg:
            self.sprint_knows_log_space = to_bool(cfg["sprintInputInLogSpace"], "sprintInputInLogSpace")
        if MAX_PAYLOAD_OPTION in cfg:
            limit = to_int(cfg[MAX_PAYLOAD_OPTION], MAX_PAYLOAD_OPTION)
            if limit <= 0:
                raise SprintControlError(f"config key {MAX_PAYLOAD_OPTION!r} must be a positive number of bytes,"
                                         f" got {limit}")
            self.link.max_payload = limit
        if "EnableAutoNumpySharedMemPickling" in cfg:
            _log("EnableAutoNumpySharedMemPickling is accepted and ignored (protocol v2 replaces it)", verbose=True)

    def _check_version(self, version_number) -> None:
        message = version_refusal(self.config, version_number)
        if message is None:
            return
        _log(message, error=True)
        # Tell the parent before RASR gives up: its first read (the answer to "init") gets this.
        with self.cond:
            can_tell = not self.loop.started
        if can_tell:
            try:
                with self._write_lock:
                    self.link.reply_exception("SprintControlError", message)
            except OSError:
                pass
        raise SprintControlError(message)

    # -- flow A: RASR iterates the corpus and computes the criterion through its callback ----------

    def init_processing(self, input_dim=None, output_dim=None, **kwargs):
        """RASR starts iterating the corpus (``--*.python-control-loop-type=iterate-corpus``).

        From now on the criterion is computed with RASR's callback in ``process_segment``.
        ``input_dim``/``output_dim`` are the feature/alignment widths (-1 or None: not extracted).
        """
        _log(f"init_processing: input_dim={input_dim!r}, output_dim={output_dim!r}")
        if self.sprint_callback is None:
            raise SprintControlError(
                "iterate-corpus needs RASR's callback, but init() got none: this RASR build is too old"
            )
        self.input_dim, self.output_dim = input_dim, output_dim
        self.segments.via_sprint_callback = True

    def process_segment(self, name, orthography, features=None, alignment=None, soft_alignment=None, **kwargs):
        """RASR processes one segment: the criterion of the parent's posteriors is computed with
        RASR's ``calculate_criterion`` and handed to the control thread, which answers the parent.

        :param str name: the segment name (bytes are decoded as UTF-8)
        :param str|bytes|None orthography: its orthography (RASR passes bytes; decoded as UTF-8)
        :param features: RASR's features (dim, time), unused
        :param alignment: RASR's alignment (time,) (when it extracts alignments), passed on to the criterion
            as a float32 vector instead of the orthography (RASR accepts only one of the two)
        :param soft_alignment: unused
        """
        name = as_str(name, "segment name")
        orthography = as_str(orthography, "orthography")
        with self.cond:
            seg = self.segments.active
            if seg is None or seg.name != name:
                raise self.segments.wrong_segment("process_segment", name)
            if seg.processed or seg.done:
                _log(f"process_segment: segment {name!r} was processed already; ignored", error=True)
                return
            seg.processed = True
            posteriors = seg.posteriors
        _log(f"process_segment: {name!r}, {seg.seg_len} frames", verbose=True)
        try:
            if alignment is not None:
                alignment = np.asarray(alignment)
                if alignment.ndim != 1 or alignment.shape[0] != seg.seg_len:
                    raise ValueError(
                        f"alignment of shape {alignment.shape} does not fit segment {name!r} of {seg.seg_len} frames"
                    )
            result = self._criterion_via_sprint_callback(self.sprint_callback, name, orthography, posteriors, alignment)
        except Exception as exc:  # the parent gets the traceback; RASR carries on with the next segment
            text = traceback.format_exc()
            with self.cond:
                self.segments.fail(seg, text, f"process_segment: the criterion of {name!r} failed: {exc!r}\n{text}")
            return
        self.segments.complete(seg, *result)

    def _criterion_via_sprint_callback(self, callback, seg_name: str, orthography: Optional[str],
                                       posteriors: np.ndarray, alignment=None) -> tuple[float, np.ndarray, bool]:
        """RASR's ``calculate_criterion`` on (time, label) posteriors: (loss, error signal, skipped)."""
        return rasr.calculate_criterion(callback, seg_name, orthography, posteriors, alignment,
                                        posteriors_in_log_space=self.posteriors_in_log_space,
                                        sprint_knows_log_space=self.sprint_knows_log_space)

    # -- the pipe and the control loop ---------------------------------------------------------------

    def close(self):
        """Closes both pipe ends (idempotent)."""
        with self._write_lock:
            self.link.close()

    def handle_next(self) -> bool:
        """Reads one command of the parent, handles it and sends the answer.

        A failure while handling a command goes back to the parent as an error message with the
        traceback, and the loop goes on. Returns False when the loop should end: the parent sent
        ``exit`` (the pipes are then closed) or closed its end.
        """
        return self.server.handle_next()

    def run_control_loop(self, callback, **kwargs):
        """Serves the parent's commands until it sends ``exit`` or closes the pipe.

        RASR calls it with its own callback (``--*.python-control-loop-type=python-control-loop``);
        ``run_threaded_control_loop`` calls it in a thread with ``own_threaded_callback``.
        """
        if callback != self.own_threaded_callback and self.sprint_callback is None:
            self.sprint_callback = callback
        self.loop.run(callback)

    def exit(self, **kwargs):
        """RASR is finishing. A segment it never completed is answered as skipped, and the control
        thread gets a short while to send the last answers."""
        _log(f"exit {kwargs!r}" if kwargs else "exit")
        self.segments.finish(self.loop.thread, EXIT_DRAIN_TIMEOUT)

    def check_control_loop_running(self):
        """Starts the threaded control loop unless a control loop already runs."""
        self.loop.ensure_running()

    def run_threaded_control_loop(self):
        """Starts the control loop in a daemon thread (for when RASR drives the corpus) and returns
        once it runs. A failure in that thread reaches the parent as an error message and ends
        RASR's segment list."""
        self.loop.run_threaded()

    def own_threaded_callback(self, cmd, *args, **kwargs):
        """The callback of the threaded control loop, in place of RASR's: ``cmd`` names an
        ``own_tcb_<cmd>`` method, which gets the other arguments."""
        func = getattr(self, f"own_tcb_{cmd}", None)
        if func is None:
            raise ValueError(f"own_threaded_callback: unknown command {cmd!r}")
        return func(*args, **kwargs)

    def own_tcb_version(self):
        """The version string the threaded control loop reports (like RASR's ``callback("version")``).

        :rtype: str
        """
        return "<version>sprint_control.own_threaded_callback</version>"

    def own_tcb_get_loss_and_error_signal(self, seg_name, seg_len, posteriors):
        """Hands a segment to RASR's thread and waits until RASR produced its loss and error signal
        (or moved on without them).

        :param str seg_name: the segment name
        :param int seg_len: its length in frames
        :param numpy.ndarray posteriors: (time, label) float32
        :return: (loss, error_signal (time, label))
        """
        with self.segments.exchange(as_str(seg_name, "segment name"), int(seg_len), posteriors) as result:
            return result[0], result[1]

    # -- flow B: RASR's own trainer with the PythonLayer -----------------------------------------------

    def init_segment(self, segment_name=None, **kwargs):
        """RASR's segment-wise trainer starts a segment (flow B)."""
        segment_name = as_str(segment_name, "segment name")
        _log(f"init_segment: {segment_name!r}", verbose=True)
        with self.cond:
            seg = self.segments.active
            if seg is None:
                raise SprintControlError(f"init_segment({segment_name!r}) but the parent sent no segment")
            if segment_name is not None and segment_name != seg.name:
                raise self.segments.wrong_segment("init_segment", segment_name)
            seg.segment_notified = True
            self.cond.notify_all()

    def notify_segment_loss(self, segment_name=None, loss=None, **kwargs):
        """RASR's segment-wise trainer reports the loss of the current segment (flow B)."""
        segment_name = as_str(segment_name, "segment name")
        _log(f"notify_segment_loss: {segment_name!r} {loss!r}", verbose=True)
        self.set_current_seg_loss(seg_name=segment_name, loss=loss)

    def get_current_seg_posteriors(self, seg_len):
        """The current segment's posteriors, (time, label), as the parent sent them (no copy).

        :param int seg_len: the length RASR expects, checked against the segment
        """
        with self.cond:
            seg = self.segments.current(seg_len, "forward")
            seg.asked_for_posteriors = True
            self.cond.notify_all()
            return seg.posteriors

    def set_current_seg_error_signal(self, seg_len, error_signal):
        """Stores RASR's error signal, (time, label), for the current segment (kept as it comes).

        :param int seg_len: the length RASR used, checked against the segment
        """
        self.segments.set_error_signal(seg_len, error_signal)

    def set_current_seg_loss(self, seg_name, loss):
        """Stores the loss of the current segment.

        :param str|None seg_name: checked against the current segment when given
        :param float loss: the loss
        """
        self.segments.set_loss(as_str(seg_name, "segment name"), loss)

    def _layer_forward(self, seg_len: Optional[int], output_size: Optional[int]) -> np.ndarray:
        posteriors = self.get_current_seg_posteriors(seg_len)
        if output_size is not None and posteriors.shape[1] != output_size:
            message = (
                f"the PythonLayer has {output_size} outputs, the parent's posteriors {posteriors.shape[1]} labels"
            )
            self.segments.fail_active(message)
            raise SprintControlError(message)
        if self.posteriors_in_log_space and not self.sprint_knows_log_space:
            return np.exp(posteriors).T
        return posteriors.T

    def _layer_backpropagate(self, seg_len: int, error_signal_in: np.ndarray) -> None:
        self.set_current_seg_error_signal(seg_len=seg_len, error_signal=error_signal_in.T)

    # -- the segment order ------------------------------------------------------------------------------

    def segment_list_iterator(self) -> Iterator[str]:
        """Yields the names of the parent's segments as its loss requests arrive.

        When RASR asks for the next name, the previous segment is complete: if RASR left it without
        an error signal it is answered as skipped. Ends when the control loop ends (parent ``exit``,
        parent gone, or a failure of the control thread).

        :rtype: Iterator[str]
        """
        with self.cond:
            if not self.loop.started:
                raise SprintControlError("segment_list_iterator needs a running control loop")
        yield from self.segments.segment_names()


def _forget_instance() -> None:
    """Drops the process's instance (tests create several in one process)."""
    PythonControl.instance = None
