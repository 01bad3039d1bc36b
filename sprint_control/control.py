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
:mod:`sprint_control.protocol`. When RASR drives the corpus, the module reads the parent's commands
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
``EnableAutoNumpySharedMemPickling``
    RETURNN's old shared-memory switch; accepted and ignored.

Other keys are kept in :attr:`PythonControl.config` for whoever wants them.
"""

from __future__ import annotations

import builtins
import logging
import numbers
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any, Callable, Optional

import numpy as np

from .errors import ProtocolError, SprintControlError
from .wire import protocol

__all__ = [
    "print",
    "init",
    "getSegmentList",
    "get_segment_list",
    "SprintNnPythonLayer",
    "PythonControl",
    "parse_config",
]

logger = logging.getLogger("sprint_control.control")

#: How long any wait on the shared state sleeps at most before it looks again (seconds).
WAIT_STEP = 1.0
#: How long ``exit()`` gives the control thread to deliver the last answers (seconds).
EXIT_DRAIN_TIMEOUT = 10.0
#: How often the watchdog looks whether the parent process still exists (seconds).
PARENT_CHECK_STEP = 0.2
#: How long a process whose parent is gone may take to finish by itself before the watchdog ends it.
PARENT_GONE_GRACE = 0.8
#: Set by our parent (``sprint_control.parent``) in the child's environment: its pid, and "1" when
#: the kernel may kill this process together with it.
PARENT_PID_ENV = "SPRINT_CONTROL_PARENT_PID"
PDEATHSIG_ENV = "SPRINT_CONTROL_PDEATHSIG"

_builtin_print = builtins.print


class _LogState:
    verbose = False
    quiet = False


_log_state = _LogState()


# noinspection PyShadowingBuiltins
def print(*args, error: bool = False, **kwargs) -> None:  # noqa: A001 - the seed API's name
    """The module's own ``print``: every log line of the module goes through it.

    ``quiet`` in the config silences it, except for lines marked ``error=True`` (which go to
    stderr by default). Output is flushed at once, since RASR interleaves it with its own log.
    """
    if _log_state.quiet and not error:
        return
    if error:
        kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("flush", True)
    _builtin_print(*args, **kwargs)


def _log(message: str, *, error: bool = False, verbose: bool = False) -> None:
    """One log line, prefixed with the pid so that lines of several children can be told apart."""
    if verbose and not _log_state.verbose:
        return
    print(f"sprint_control[pid {os.getpid()}] {message}", error=error)
    if error:
        logger.debug("%s", message)


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", "", "none"}


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SprintControlError(f"config key {key!r} must be a boolean (true/false/1/0), got {value!r}")


def _to_int(value: Any, key: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SprintControlError(f"config key {key!r} must be an integer, got {value!r}") from None


def parse_config(config: Optional[str]) -> dict[str, str]:
    """Parses RASR's config string ``key:value,key:value`` (split on the first ``:``).

    Empty items are ignored; a key given twice keeps its last value, like RASR's own options.
    """
    result: dict[str, str] = {}
    if not config:
        return result
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    for item in str(config).split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep:
            raise SprintControlError(
                f"config item {item!r} has no ':'; the config string must be key:value pairs joined by ','"
            )
        result[key.strip()] = value
    return result


def _as_str(value: Any, what: str) -> Optional[str]:
    """RASR builds pass names and orthographies as str or as bytes; both mean UTF-8 text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# The parent guard: a Sprint process whose trainer died must not live on


class _GuardState:
    started = False
    pdeathsig = False


_guard_state = _GuardState()


def _process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a dead parent its own parent did not reap yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _set_parent_death_signal() -> bool:
    """Linux: asks the kernel to SIGKILL this process when the thread that spawned it ends. This
    also works while RASR holds the GIL inside a long C++ call, where no Python thread can run."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        _log(f"cannot set the parent-death signal ({exc!r}); the watchdog thread alone watches the parent")
        return False
    return True


def _parent_gone(parent: int, grace: float) -> None:
    """The parent process is gone: give RASR ``grace`` seconds to finish by itself (EOF on the pipe
    ends the segment list), then end the process."""
    try:
        # stdout/stderr usually went to the dead parent: writing there fails (EPIPE), which must not
        # stop us
        _log(f"the parent process (pid {parent}) is gone; ending this process in {grace:.1f} s unless it ends"
             " itself", error=True)
        time.sleep(grace)
        _log("ending this process: its parent is gone", error=True)
    except BaseException:
        pass
    finally:
        os._exit(1)


def _watch_parent(parent: int, ppid: int, step: float, grace: float) -> None:
    while True:
        # getppid changes when the direct parent exits (the kernel hands us to a reaper); when a
        # wrapper sits between the trainer and RASR, the trainer itself is looked at.
        if os.getppid() != ppid or (parent != ppid and not _process_alive(parent)):
            _parent_gone(parent, grace)
            return
        time.sleep(step)


def guard_parent(step: float = PARENT_CHECK_STEP, grace: float = PARENT_GONE_GRACE) -> bool:
    """Makes this (Sprint) process end when the parent process that named itself in
    ``SPRINT_CONTROL_PARENT_PID`` dies, even while RASR is stuck and never reads the pipe's EOF.

    Two guards, both off the hot path: a daemon thread that looks every ``step`` seconds whether the
    parent still exists (it needs the GIL for a moment, so it cannot act while RASR holds the GIL in a
    C++ call), and on Linux, when the parent allows it (``SPRINT_CONTROL_PDEATHSIG=1``: it spawned us
    from a thread that lives as long as it does), ``PR_SET_PDEATHSIG`` with SIGKILL. Runs once per
    process; returns whether a guard was started. Without the variable (e.g. RETURNN's parent) only
    the EOF on the pipe ends the process.
    """
    if _guard_state.started:
        return True
    text = os.environ.get(PARENT_PID_ENV, "")
    try:
        parent = int(text)
    except ValueError:
        if text:
            _log(f"{PARENT_PID_ENV}={text!r} is not a pid; the parent is not watched", error=True)
        return False
    _guard_state.started = True
    ppid = os.getppid()
    if ppid == parent and os.environ.get(PDEATHSIG_ENV) == "1":
        _guard_state.pdeathsig = _set_parent_death_signal()
        ppid = os.getppid()  # the parent may have died before the signal was set: look again
    if ppid != parent and (_guard_state.pdeathsig or not _process_alive(parent)):
        _parent_gone(parent, 0.0)  # gone before we looked (with the signal set, ppid moved: it died)
    thread = threading.Thread(target=_watch_parent, args=(parent, ppid, step, grace),
                              name="sprint_control.parent_watchdog", daemon=True)
    thread.start()
    signal_state = "on" if _guard_state.pdeathsig else "off"
    _log(f"watching the parent process (pid {parent}); parent-death signal: {signal_state}", verbose=True)
    return True


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
        _log_state.quiet = _to_bool(cfg["quiet"], "quiet")
    if "verbose" in cfg:
        _log_state.verbose = _to_bool(cfg["verbose"], "verbose")
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
        c2p_fd=_to_int(cfg["c2p_fd"], "c2p_fd"),
        p2c_fd=_to_int(cfg["p2c_fd"], "p2c_fd"),
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
    corpus = _as_str(corpusName, "corpusName")
    _log(f"getSegmentList: corpus={corpus!r}")
    control = init(name="sprint_control.PythonSegmentOrder", reference=corpus, config=config)
    control.check_control_loop_running()
    yield from control.segment_list_iterator()


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
                self.control._fail_active(message)
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
            self.control._fail_active(message)  # the parent learns why, instead of a skipped segment
            raise TypeError(message)
        seg_len = int(errorSignalIn.shape[1])
        self.control._layer_backpropagate(seg_len, errorSignalIn, self.output_size)
        sizes = [self.input_sizes[s] for s in sorted(self.input_sizes)] or getattr(self, "_last_input_sizes", [0])
        return tuple(np.zeros((seg_len, size), dtype=np.float32).T for size in sizes)

    # modern aliases
    set_input_dimension = setInputDimension
    set_output_dimension = setOutputDimension
    is_trainable = isTrainable


# ---------------------------------------------------------------------------------------------
# The shared state of one segment


class _Segment:
    """One loss request of the parent, from its arrival to the answer.

    Everything here is guarded by ``PythonControl.cond``.
    """

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


def _check_error_signal_dtype(error_signal: np.ndarray, source: str) -> None:
    """RASR's error signal must be real numbers; float32 is used as it is, other real types are
    converted. A complex, bool, object or text array would be mangled by a silent conversion."""
    if error_signal.dtype.kind not in "fiu":
        raise TypeError(f"{source} gave an error signal of dtype {error_signal.dtype}; expected float32 (label, time)")


def _skipped_result(seg_len: int, num_labels: int) -> tuple[float, np.ndarray]:
    return float("inf"), np.zeros((seg_len, num_labels), dtype=np.float32)


class _StopControlLoop(Exception):
    """Raised inside the control loop to end it (parent exit)."""


class PythonControl:
    """The Sprint side of one parent/child link; one instance per process.

    It serves all of RASR's hooks at once: PythonControl (RASR's control loop, iterate-corpus, the
    segment-wise trainers), the segment order that ``getSegmentList`` provides, and the PythonLayer.

    :param int c2p_fd: the child-to-parent pipe end (we write)
    :param int p2c_fd: the parent-to-child pipe end (we read)
    :param kwargs: what ``init`` passes on (name, reference, config, sprint_unit, version_number, callback)
    """

    #: The version of the ``init`` handshake (v1's third item); RETURNN's parent checks it is 1.
    Version = 1
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
        for key, fd in (("c2p_fd", self.c2p_fd), ("p2c_fd", self.p2c_fd)):
            try:
                os.fstat(fd)
            except OSError:
                raise SprintControlError(
                    f"{key} {fd} is not an open file descriptor in this process: the parent must leave its pipe"
                    " ends open across exec (pass_fds) and name them in --*.pymod-config"
                ) from None
        self.cond = threading.Condition()
        self.link = protocol.Link(self.p2c_fd, self.c2p_fd)
        self.config: dict[str, str] = {}
        self.callers: list[str] = []
        self.references: list[Any] = []
        self.sprint_unit: Optional[str] = None
        self.sprint_callback: Optional[Callable] = None
        self.sprint_version_number: Optional[int] = None
        #: the callback of the running control loop: RASR's, or ``own_threaded_callback``
        self.callback: Optional[Callable] = None
        self.loss_and_error_signal_via_sprint_callback = False
        self.posteriors_in_log_space = True
        self.sprint_knows_log_space = True
        self.input_dim: Optional[int] = None
        self.output_dim: Optional[int] = None
        # shared state, guarded by self.cond
        self.control_loop_started = False
        self.control_loop_exited = False
        self.control_loop_error: Optional[str] = None
        self.control_thread: Optional[threading.Thread] = None
        self.sprint_finished = False
        self._seq = 0
        self._pending: Optional[_Segment] = None  # received, not yet handed to RASR
        self._active: Optional[_Segment] = None  # handed to RASR, RASR works on it
        self._write_lock = threading.Lock()
        guard_parent()
        self.__class__.instance = self
        _log(f"PythonControl: c2p_fd={self.c2p_fd}, p2c_fd={self.p2c_fd}")
        self._register_caller(**kwargs)

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
            self.posteriors_in_log_space = _to_bool(cfg["posteriorsInLogSpace"], "posteriorsInLogSpace")
        if "sprintInputInLogSpace" in cfg:
            self.sprint_knows_log_space = _to_bool(cfg["sprintInputInLogSpace"], "sprintInputInLogSpace")
        if "EnableAutoNumpySharedMemPickling" in cfg:
            _log("EnableAutoNumpySharedMemPickling is accepted and ignored (protocol v2 replaces it)", verbose=True)

    @property
    def min_version_number(self) -> Optional[int]:
        value = self.config.get("minPythonControlVersion")
        return None if value in (None, "") else _to_int(value, "minPythonControlVersion")

    def _check_version(self, version_number) -> None:
        needed = self.min_version_number
        if needed is None:
            return
        have = 0 if version_number is None else int(version_number)
        if have >= needed:
            return
        message = (
            f"this RASR's PythonControl has version {version_number!r}, but version >= {needed} is needed"
            f" (minPythonControlVersion:{needed}); use a newer RASR build"
        )
        _log(message, error=True)
        # Tell the parent before RASR gives up: its first read (the answer to "init") gets this.
        with self.cond:
            can_tell = not self.control_loop_started
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
        self.loss_and_error_signal_via_sprint_callback = True

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
        name = _as_str(name, "segment name")
        orthography = _as_str(orthography, "orthography")
        with self.cond:
            seg = self._active
            if seg is None or seg.name != name:
                expected = seg.name if seg is not None else None
                message = (
                    f"process_segment got segment {name!r}, but the parent's current segment is {expected!r}:"
                    " RASR must take its segment order from this module (--*.python-segment-order=true)"
                )
                if seg is not None and not seg.done:
                    seg.error_text = message
                    self.cond.notify_all()
                raise SprintControlError(message)
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
            loss, error_signal, skipped = self._criterion_via_sprint_callback(
                self.sprint_callback, name, orthography, posteriors, alignment
            )
        except Exception as exc:
            text = traceback.format_exc()
            _log(f"process_segment: the criterion of {name!r} failed: {exc!r}\n{text}", error=True)
            with self.cond:
                if not seg.done:
                    seg.error_text = text
                self.cond.notify_all()
            return  # the parent gets the traceback; RASR carries on with the next segment
        with self.cond:
            if not seg.done:
                seg.loss, seg.error_signal, seg.skipped = loss, error_signal, skipped
            self.cond.notify_all()

    def _criterion_via_sprint_callback(self, callback, seg_name: str, orthography: Optional[str],
                                       posteriors: np.ndarray, alignment=None) -> tuple[float, np.ndarray, bool]:
        """Runs RASR's ``calculate_criterion`` on (time, label) posteriors.

        Returns (loss, error signal (time, label), skipped). Arguments are checked first, since RASR
        treats some wrong types as fatal errors rather than Python exceptions.
        """
        if callback is None:
            raise SprintControlError("no RASR callback to compute the criterion with")
        if self.posteriors_in_log_space and not self.sprint_knows_log_space:
            values = np.exp(posteriors)
            output_error_type = "error-signal-before-softmax"
        elif self.posteriors_in_log_space:
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
            loss_inf, zeros = _skipped_result(seg_len, num_labels)
            return loss_inf, zeros, True
        error_signal = np.asarray(error_signal)
        _check_error_signal_dtype(error_signal, "calculate_criterion")
        if error_signal.shape != (num_labels, seg_len):
            raise ValueError(
                f"calculate_criterion returned an error signal of shape {error_signal.shape},"
                f" expected (label, time) = {(num_labels, seg_len)}"
            )
        error_signal = error_signal.T  # (time, label); a C-contiguous view when RASR's array is F-contiguous
        if error_signal.dtype != np.float32:
            error_signal = error_signal.astype(np.float32)
        return float(loss), error_signal, False

    # -- the pipe ---------------------------------------------------------------------------------

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
        try:
            message = self.link.recv_command()
        except EOFError:
            _log("the parent closed the pipe; ending the segment list")
            return False
        except ProtocolError as exc:
            text = traceback.format_exc()
            _log(f"undecodable message from the parent: {exc}", error=True)
            self._send_exception(exc, text)
            # v1 messages are length-delimited, so the next one can be read; a bad v2 frame header
            # leaves the stream out of step.
            return self.link.protocol == protocol.PROTOCOL_V1
        except OSError as exc:
            _log(f"reading from the parent failed: {exc!r}; ending the control loop", error=True)
            return False
        try:
            self._handle_command(message)
        except _StopControlLoop:
            return False
        except (BrokenPipeError, ConnectionError) as exc:
            _log(f"the parent is gone ({exc!r}); ending the control loop")
            return False
        except Exception as exc:
            text = traceback.format_exc()
            _log(f"command {message[0]!r} failed: {exc!r}\n{text}", error=True)
            return self._send_exception(exc, text)
        return True

    def _send_exception(self, exc: BaseException, text: str) -> bool:
        try:
            with self._write_lock:
                self.link.reply_exception(type(exc).__name__, text)
        except OSError as exc2:
            _log(f"could not send the error to the parent: {exc2!r}", error=True)
            return False
        return True

    def _handle_command(self, message: tuple) -> None:
        cmd, args = message[0], message[1:]
        if cmd == "init":
            if len(args) < 2 or args[1] != protocol.INIT_VERSION:
                raise ProtocolError(f"init expects (name, {protocol.INIT_VERSION}), got {args!r:.200}")
            capabilities = {
                "protocols": list(protocol.SUPPORTED_PROTOCOLS),
                "pid": os.getpid(),
                "sprint_version_number": self.sprint_version_number,
                "sprint_unit": self.sprint_unit,
            }
            with self._write_lock:
                self.link.reply_init("sprint_control", capabilities)
        elif cmd == "use_protocol":
            version = args[0] if args else None
            options = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
            if version not in protocol.SUPPORTED_PROTOCOLS:
                raise ProtocolError(
                    f"protocol {version!r} is not supported; this side speaks {protocol.SUPPORTED_PROTOCOLS}"
                )
            with self._write_lock:
                self.link.accept_protocol(version, options)
            _log(f"using protocol {version}", verbose=True)
        elif cmd == "get_loss_and_error_signal":
            self._handle_loss_request(*args)
        elif cmd == "export_allophone_state_fsa_by_segment_name":
            if len(args) != 1:
                raise ProtocolError(
                    f"export_allophone_state_fsa_by_segment_name expects (segment_name,), got {args!r:.200}"
                )
            seg_name = _as_str(args[0], "segment name")
            num_states, num_edges, edges, weights = self._export_fsa(seg_name)
            with self._write_lock:
                self.link.reply_fsa(num_states, num_edges, edges, weights)
        elif cmd == "exit":
            _log("the parent sent exit; closing the pipes")
            self.close()
            raise _StopControlLoop()
        else:
            raise ProtocolError(
                f"unknown command {cmd!r}; known: init, use_protocol, get_loss_and_error_signal,"
                " export_allophone_state_fsa_by_segment_name, exit"
            )

    def _handle_loss_request(self, seg_name, seg_len, posteriors) -> None:
        seg_name = _as_str(seg_name, "segment name")
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
        if self.callback == self.own_threaded_callback:
            seg = self._post_segment(seg_name, seg_len, posteriors)
            try:
                self._wait_for_result(seg)
                with self.cond:
                    if seg.error_text is not None:
                        raise SprintControlError(f"segment {seg_name!r} failed in RASR:\n{seg.error_text}")
                    loss, error_signal, skipped = seg.loss, seg.error_signal, seg.skipped
                with self._write_lock:
                    self.link.reply_loss(seg_name, loss, error_signal, skipped=skipped)
            finally:
                with self.cond:
                    seg.answered = True
                    seg.posteriors = None
                    self.cond.notify_all()
        else:
            # RASR runs the control loop itself: compute the criterion right here via its callback.
            orthography = self._orthography_of(seg_name)
            loss, error_signal, skipped = self._criterion_via_sprint_callback(
                self.callback, seg_name, orthography, posteriors
            )
            with self._write_lock:
                self.link.reply_loss(seg_name, loss, error_signal, skipped=skipped)

    def _orthography_of(self, seg_name: str) -> Optional[str]:
        try:
            orthography = self.callback("get_orthography_by_segment_name", segment_name=seg_name)
        except Exception as exc:  # the criterion may not need one; it says so itself if it does
            _log(f"no orthography for {seg_name!r} from RASR ({exc!r}); the criterion gets none", verbose=True)
            return None
        return _as_str(orthography, "orthography")

    def _export_fsa(self, seg_name: str):
        callback = self.sprint_callback
        if callback is None and self.callback is not None and self.callback != self.own_threaded_callback:
            callback = self.callback
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

    # -- the control loop ---------------------------------------------------------------------------

    def run_control_loop(self, callback, **kwargs):
        """Serves the parent's commands until it sends ``exit`` or closes the pipe.

        RASR calls it with its own callback (``--*.python-control-loop-type=python-control-loop``);
        ``run_threaded_control_loop`` calls it in a thread with ``own_threaded_callback``.
        """
        with self.cond:
            if self.control_loop_started:
                already = True
            else:
                already = False
                self.control_loop_started = True
                self.callback = callback
                self.cond.notify_all()
        if already:
            # e.g. the segment order started the threaded loop first: serve through it until it ends.
            _log("run_control_loop: the control loop already runs in its own thread; waiting for it to end")
            if self.sprint_callback is None and callback != self.own_threaded_callback:
                self.sprint_callback = callback
            with self.cond:
                while not self.control_loop_exited:
                    self.cond.wait(WAIT_STEP)
            return
        if callback != self.own_threaded_callback and self.sprint_callback is None:
            self.sprint_callback = callback
        try:
            version = callback("version")
        except Exception as exc:
            version = f"<unknown: {exc!r}>"
        _log(f"control loop running (callback version: {version!r})")
        try:
            while self.handle_next():
                pass
        except BaseException as exc:
            text = traceback.format_exc()
            with self.cond:
                self.control_loop_error = text
            _log(f"the control loop died: {exc!r}\n{text}", error=True)
            self._send_exception(exc, text)
            raise
        finally:
            with self.cond:
                self.control_loop_exited = True
                pending = self._pending
                self._pending = None
                self.cond.notify_all()
            if pending is not None:
                _log(f"segment {pending.name!r} was never handed to RASR: the control loop ended", verbose=True)
            _log("control loop ended")

    def exit(self, **kwargs):
        """RASR is finishing. A segment it never completed is answered as skipped, and the control
        thread gets a short while to send the last answers."""
        _log(f"exit {kwargs!r}" if kwargs else "exit")
        with self.cond:
            self.sprint_finished = True
            active = self._active
            if active is not None and not active.done:
                self._skip(active, "RASR finished")
            self.cond.notify_all()
            # Let the control thread answer before the process goes away.
            waited = 0.0
            while (
                active is not None
                and not active.answered
                and not self.control_loop_exited
                and self.control_thread is not None
                and self.control_thread is not threading.current_thread()
                and waited < EXIT_DRAIN_TIMEOUT
            ):
                self.cond.wait(WAIT_STEP)
                waited += WAIT_STEP

    def check_control_loop_running(self):
        """Starts the threaded control loop unless a control loop already runs."""
        with self.cond:
            if self.control_loop_started:
                return
        self.run_threaded_control_loop()

    def run_threaded_control_loop(self):
        """Starts the control loop in a daemon thread (for when RASR drives the corpus) and returns
        once it runs. A failure in that thread reaches the parent as an error message and ends
        RASR's segment list."""

        def control_loop():
            try:
                self.run_control_loop(self.own_threaded_callback)
            except BaseException:  # already logged and sent by run_control_loop
                pass

        thread = threading.Thread(target=control_loop, name="sprint_control.control_loop", daemon=True)
        with self.cond:
            if self.control_loop_started:
                return
            self.control_thread = thread
        thread.start()
        with self.cond:
            while not self.control_loop_started:
                if not thread.is_alive():
                    raise SprintControlError(
                        f"the control thread ended before it started: {self.control_loop_error or 'no details'}"
                    )
                self.cond.wait(WAIT_STEP)

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
        seg = self._post_segment(_as_str(seg_name, "segment name"), int(seg_len), posteriors)
        try:
            self._wait_for_result(seg)
            with self.cond:
                if seg.error_text is not None:
                    raise SprintControlError(f"segment {seg.name!r} failed in RASR:\n{seg.error_text}")
                return seg.loss, seg.error_signal
        finally:
            with self.cond:
                seg.answered = True
                self.cond.notify_all()

    def _post_segment(self, seg_name: str, seg_len: int, posteriors: np.ndarray) -> _Segment:
        with self.cond:
            if self.sprint_finished:
                raise SprintControlError(
                    f"RASR has finished its segment list; segment {seg_name!r} cannot be processed any more"
                )
            self._seq += 1
            seg = _Segment(self._seq, seg_name, seg_len, posteriors)
            self._pending = seg
            self.cond.notify_all()
        return seg

    def _wait_for_result(self, seg: _Segment) -> None:
        with self.cond:
            while not seg.done:
                if self.sprint_finished and not seg.yielded:
                    seg.error_text = f"RASR finished before it took segment {seg.name!r}"
                    break
                self.cond.wait(WAIT_STEP)

    # -- flow B: RASR's own trainer with the PythonLayer -----------------------------------------------

    def init_segment(self, segment_name=None, **kwargs):
        """RASR's segment-wise trainer starts a segment (flow B)."""
        segment_name = _as_str(segment_name, "segment name")
        _log(f"init_segment: {segment_name!r}", verbose=True)
        with self.cond:
            seg = self._active
            if seg is None:
                raise SprintControlError(f"init_segment({segment_name!r}) but the parent sent no segment")
            if segment_name is not None and segment_name != seg.name:
                message = (
                    f"init_segment got segment {segment_name!r}, but the parent's current segment is {seg.name!r}:"
                    " RASR must take its segment order from this module (--*.python-segment-order=true)"
                )
                self._fail(seg, message)
                raise SprintControlError(message)
            seg.segment_notified = True
            self.cond.notify_all()

    def notify_segment_loss(self, segment_name=None, loss=None, **kwargs):
        """RASR's segment-wise trainer reports the loss of the current segment (flow B)."""
        segment_name = _as_str(segment_name, "segment name")
        _log(f"notify_segment_loss: {segment_name!r} {loss!r}", verbose=True)
        self.set_current_seg_loss(seg_name=segment_name, loss=loss)

    def get_current_seg_posteriors(self, seg_len):
        """The current segment's posteriors, (time, label), as the parent sent them (no copy).

        :param int seg_len: the length RASR expects, checked against the segment
        """
        with self.cond:
            seg = self._current_for(seg_len, "forward")
            seg.asked_for_posteriors = True
            self.cond.notify_all()
            return seg.posteriors

    def set_current_seg_error_signal(self, seg_len, error_signal):
        """Stores RASR's error signal, (time, label), for the current segment (kept as it comes).

        :param int seg_len: the length RASR used, checked against the segment
        """
        with self.cond:
            seg = self._current_for(seg_len, "backpropagate")
            if getattr(error_signal, "ndim", 0) != 2 or error_signal.shape != seg.posteriors.shape:
                message = (
                    f"error signal of shape {getattr(error_signal, 'shape', None)} does not match"
                    f" the posteriors' shape {seg.posteriors.shape} of segment {seg.name!r}"
                )
                self._fail(seg, message)
                raise ValueError(message)
            try:
                _check_error_signal_dtype(error_signal, "backpropagate")
            except TypeError as exc:
                self._fail(seg, f"{exc} (segment {seg.name!r})")
                raise
            if error_signal.dtype != np.float32:
                error_signal = error_signal.astype(np.float32)
            seg.backpropagated = True
            if not seg.done:
                seg.error_signal = error_signal
            self.cond.notify_all()

    def set_current_seg_loss(self, seg_name, loss):
        """Stores the loss of the current segment.

        :param str|None seg_name: checked against the current segment when given
        :param float loss: the loss
        """
        seg_name = _as_str(seg_name, "segment name")
        with self.cond:
            seg = self._active
            if seg is None:
                raise SprintControlError(f"a loss for {seg_name!r} arrived, but the parent sent no segment")
            if seg_name and seg_name != seg.name:
                message = f"a loss for segment {seg_name!r} arrived, but the current segment is {seg.name!r}"
                self._fail(seg, message)
                raise SprintControlError(message)
            if not seg.done:
                seg.loss = float(loss)
            self.cond.notify_all()

    def _current_for(self, seg_len, what: str) -> _Segment:
        seg = self._active
        if seg is None or seg.posteriors is None:
            raise SprintControlError(f"{what}: there is no current segment from the parent")
        if seg_len is not None and int(seg_len) != seg.seg_len:
            message = f"{what}: RASR's segment has {seg_len} frames, the parent's {seg.name!r} has {seg.seg_len}"
            self._fail(seg, message)
            raise SprintControlError(message)
        return seg

    def _fail_active(self, message: str) -> None:
        """RASR broke the contract in a call about the current segment: the parent gets ``message``."""
        with self.cond:
            if self._active is not None:
                self._fail(self._active, f"{message} (segment {self._active.name!r})")

    def _fail(self, seg: _Segment, message: str) -> None:
        """Marks a segment as failed (cond held): the parent gets ``message`` instead of a result."""
        if not seg.done:
            seg.error_text = message
        _log(message, error=True)
        self.cond.notify_all()

    def _layer_forward(self, seg_len: Optional[int], output_size: Optional[int]) -> np.ndarray:
        posteriors = self.get_current_seg_posteriors(seg_len)
        if output_size is not None and posteriors.shape[1] != output_size:
            message = (
                f"the PythonLayer has {output_size} outputs, the parent's posteriors {posteriors.shape[1]} labels"
            )
            with self.cond:
                if self._active is not None:
                    self._fail(self._active, message)
            raise SprintControlError(message)
        if self.posteriors_in_log_space and not self.sprint_knows_log_space:
            return np.exp(posteriors).T
        return posteriors.T

    def _layer_backpropagate(self, seg_len: int, error_signal_in: np.ndarray, output_size: Optional[int]) -> None:
        self.set_current_seg_error_signal(seg_len=seg_len, error_signal=error_signal_in.T)

    # -- the segment order ------------------------------------------------------------------------------

    def _skip(self, seg: _Segment, why: str) -> None:
        """Answers a segment RASR left without a result with loss inf and a zero error signal (cond held)."""
        missing = []
        if seg.yielded:
            if self.loss_and_error_signal_via_sprint_callback:
                if not seg.processed:
                    missing.append("process_segment (RASR never processed it)")
            else:
                if not seg.segment_notified:
                    missing.append("init_segment (is PythonControl used in RASR's trainer?)")
                if not seg.asked_for_posteriors:
                    missing.append("forward (is the PythonLayer used in RASR's network?)")
                if not seg.backpropagated:
                    missing.append("backpropagate (no error signal)")
                if seg.loss is None:
                    missing.append("notify_segment_loss (no loss)")
        else:
            missing.append("RASR never took the segment")
        if seg.error_signal is None:
            seg.loss, seg.error_signal = _skipped_result(seg.seg_len, seg.posteriors.shape[1])
            seg.skipped = True
            _log(f"segment {seg.name!r} skipped ({why}); never happened: {', '.join(missing) or '-'};"
                 " answering loss inf and a zero error signal")
        else:
            seg.loss = float("inf")
            _log(f"segment {seg.name!r}: no loss reported ({why}); never happened: {', '.join(missing)};"
                 " answering loss inf")
        self.cond.notify_all()

    def segment_list_iterator(self) -> Iterator[str]:
        """Yields the names of the parent's segments as its loss requests arrive.

        When RASR asks for the next name, the previous segment is complete: if RASR left it without
        an error signal it is answered as skipped. Ends when the control loop ends (parent ``exit``,
        parent gone, or a failure of the control thread).

        :rtype: Iterator[str]
        """
        with self.cond:
            if not self.control_loop_started:
                raise SprintControlError("segment_list_iterator needs a running control loop")
        while True:
            with self.cond:
                while True:
                    if self._pending is not None:
                        seg = self._pending
                        self._pending = None
                        seg.yielded = True
                        self._active = seg
                        self.cond.notify_all()
                        break
                    if self.control_loop_exited:
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
                        self._skip(seg, "RASR moved on")


def _forget_instance() -> None:
    """Drops the process's instance (tests create several in one process)."""
    PythonControl.instance = None
