"""A parent whose signal handler calls its pool while the same thread is inside a batch (the tests
run it and read its output).

    python reentry_parent.py MODE

``compute`` / ``compute_segment``: a periodic timer (SIGALRM every 5 ms) calls the pool from its
handler during the main thread's batches (20 at least, until three inner calls landed inside
one); each inner call must be refused at once with a clear error (it used to re-enter the pool's
lock and restart the child the outer call was using, or hang), and every outer batch must equal
the answer computed before the timer ran.
``close``: the batch's segment hangs in the child (``FAULTY_HANG``); a one-shot timer's handler
closes the pool in the middle of it; the batch must end at once with the error that says so, and
no fd may be closed under it (the fds are closed by the thread that used them, after its read).
"""

import os
import signal
import sys
import time

import numpy as np
from rel_helpers import EMULATOR_ARGS, FAULTY_MODULE, HERE, pythonpath

from sprint_control.errors import SprintControlError
from sprint_control.parent import SprintPool, emulator_command


def main():
    mode = sys.argv[1]
    env = {**os.environ, "PYTHONPATH": pythonpath(), "FAULTY_HANG": "synthetic/rec0002/seg"}
    rng = np.random.default_rng(0)
    labels = 11
    post = rng.standard_normal((30, 2, labels)).astype(np.float32)
    post -= np.log(np.exp(post).sum(-1, keepdims=True))
    lengths = np.array([30, 25])
    tags = ["synthetic/rec0000/seg", "synthetic/rec0001/seg"]
    with SprintPool(1, emulator_command(), EMULATOR_ARGS, module_name=FAULTY_MODULE, module_path=HERE,
                    env=env) as pool:
        reference = pool.compute(post, lengths, tags).loss.copy()
        inner = []

        def handler(signum, frame):
            try:
                if mode == "compute":
                    pool.compute(post, lengths, tags)
                elif mode == "compute_segment":
                    pool.compute_segment(tags[0], post[:30, 0])
                elif mode == "close":
                    pool.close()
                inner.append("no error")
            except SprintControlError as exc:
                inner.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

        signal.signal(signal.SIGALRM, handler)
        outer = []
        if mode == "close":
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            try:
                pool.compute(post[:, :1], lengths[:1], ["synthetic/rec0002/seg"])  # hangs in the child
                outer.append("no error")
            except SprintControlError as exc:
                outer.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        else:
            signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        try:
            # at least 20 batches, and on until three inner calls landed inside one (a fast machine runs
            # 20 small batches within one period of the timer), 10 s at most
            deadline = time.monotonic() + 10.0
            while mode != "close" and (len(outer) < 20 or (sum(i != "no error" for i in inner) < 3
                                                             and time.monotonic() < deadline)):
                try:
                    loss = pool.compute(post, lengths, tags).loss
                    outer.append("right" if np.array_equal(loss, reference) else f"wrong {loss} != {reference}")
                except SprintControlError as exc:
                    outer.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        restarts = sum(inst.restarts for inst in pool.instances)
    for line in inner:
        print("inner", line)
    for line in outer:
        print("outer", line)
    print("restarts", restarts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
