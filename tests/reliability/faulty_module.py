"""A Sprint-side module for the reliability tests: ``sprint_control.control`` with faults injected
into RASR's ``calculate_criterion``, chosen by environment variables of the child:

- ``FAULTY_IMPORT_ERROR``: the import itself fails (ImportError with that text).
- ``FAULTY_HANG=SEG``: the criterion of segment SEG sleeps forever in Python (GIL released).
- ``FAULTY_STUCK_NOGIL=SEG``: it sleeps in a C call that releases the GIL (RASR busy in C++).
- ``FAULTY_STUCK_GIL=SEG``: it sleeps in a C call that holds the GIL (RASR in C++ inside the callback).
- ``FAULTY_RAISE=SEG``: the criterion raises RuntimeError.
- ``FAULTY_ERROR_SIGNAL=SEG:KIND``: RASR returns a bad error signal, KIND one of ``transposed``,
  ``short``, ``complex``, ``text``, ``scalar``.
- ``FAULTY_MARK=PATH``: the pid is written to PATH once the fault is reached (for the tests to wait on).

Everything else is the real module, loaded by the real emulator.
"""

import ctypes
import os
import time

import numpy as np

if os.environ.get("FAULTY_IMPORT_ERROR"):
    raise ImportError(os.environ["FAULTY_IMPORT_ERROR"])

from sprint_control import control as _control  # noqa: E402
from sprint_control.control import (  # noqa: E402,F401
    PythonControl,
    SprintNnPythonLayer,
    get_segment_list,
    getSegmentList,
    init,
    parse_config,
    print,
)

_original = _control.PythonControl._criterion_via_sprint_callback


def _mark() -> None:
    path = os.environ.get("FAULTY_MARK")
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def _faulty_criterion(self, callback, seg_name, orthography, posteriors, alignment=None):
    env = os.environ
    if seg_name == env.get("FAULTY_HANG"):
        _mark()
        while True:
            time.sleep(3600)
    if seg_name == env.get("FAULTY_STUCK_NOGIL"):
        _mark()
        ctypes.CDLL(None).sleep(3600)
    if seg_name == env.get("FAULTY_STUCK_GIL"):
        _mark()
        ctypes.PyDLL(None).sleep(3600)
    if seg_name == env.get("FAULTY_RAISE"):
        raise RuntimeError(f"the criterion of {seg_name} failed on purpose")
    bad = env.get("FAULTY_ERROR_SIGNAL", "")
    if bad.rpartition(":")[0] == seg_name:
        kind = bad.rpartition(":")[2]

        def corrupt(cmd, *args, **kwargs):
            loss, err = callback(cmd, *args, **kwargs)
            if cmd != "calculate_criterion" or err is None:
                return loss, err
            return loss, {
                "transposed": lambda e: np.ascontiguousarray(e.T),
                "short": lambda e: e[:, :-1],
                "complex": lambda e: e.astype(np.complex64),
                "text": lambda e: np.full(e.shape, "x"),
                "scalar": lambda e: 0.5,
            }[kind](err)

        return _original(self, corrupt, seg_name, orthography, posteriors, alignment)
    return _original(self, callback, seg_name, orthography, posteriors, alignment)


_control.PythonControl._criterion_via_sprint_callback = _faulty_criterion
