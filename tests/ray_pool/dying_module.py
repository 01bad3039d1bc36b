"""A Sprint-side module for the Ray pool tests: ``sprint_control.control`` with faults on a segment
named by the child's environment:

- ``RAY_FAULT_EXIT=SEG``: the Sprint child exits (status 7) while computing SEG.
- ``RAY_FAULT_KILL_ACTOR=SEG``: the child kills its parent, the Ray actor (SIGKILL), then waits to be
  ended with it: the actor dies in the middle of a batch.
- ``RAY_FAULT_STOP_ACTOR=SEG``: the child stops its parent (SIGSTOP) and sleeps: the actor neither
  answers nor dies, as when its node has gone.
- ``RAY_FAULT_NO_START=PATH``: while the file PATH exists, a child fails as RASR loads this module
  (a restart that cannot succeed).
"""

import os
import signal
import time

from sprint_control import control as _control
from sprint_control.control import *  # noqa: F403 - RASR calls the module's public names

if os.path.exists(os.environ.get("RAY_FAULT_NO_START") or "\0"):
    raise SystemExit("dying_module: this child must not start (RAY_FAULT_NO_START)")

_original = _control.PythonControl._criterion_via_sprint_callback


def _faulty_criterion(self, callback, seg_name, *args, **kwargs):
    env = os.environ
    if seg_name == env.get("RAY_FAULT_EXIT"):
        os._exit(7)
    if seg_name == env.get("RAY_FAULT_KILL_ACTOR"):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)
    if seg_name == env.get("RAY_FAULT_STOP_ACTOR"):
        os.kill(os.getppid(), signal.SIGSTOP)
        time.sleep(120)
    return _original(self, callback, seg_name, *args, **kwargs)


_control.PythonControl._criterion_via_sprint_callback = _faulty_criterion
