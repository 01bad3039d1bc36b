"""Run by test_interrupts.py: a pool of emulator children (criterion "bench", whose answer the
emulator's own function gives in-process) interrupted in the middle of ``compute``.

``interrupted_pool.py trials INSTANCES TIME LABELS HOW N [within]``: N times, interrupt a loop of
computes after a random delay (``within``: inside the first compute, and on until one interrupt
has cut an exchange), then check that the next compute is right. HOW: ``interrupt_main``
(``_thread.interrupt_main``), ``sigint`` (SIGINT to the main thread), ``raising`` (a signal handler
that raises an ordinary exception), ``segment`` (SIGINT during ``compute_segment``). Prints
``ok <restarts>``.

``interrupted_pool.py stopped INSTANCES TIME LABELS``: prints the children's pids, waits for a line
on stdin (the test stops the children), then blocks in ``compute`` without a timeout until the test
sends SIGINT.
"""

from __future__ import annotations

import _thread
import os
import random
import signal
import sys
import threading
import time

import numpy as np
from rel_helpers import pythonpath

from sprint_control.emulator.criteria import compute_criterion
from sprint_control.parent import SprintPool

BATCH = 3


class Boom(Exception):
    pass


def make_pool(instances: int, labels: int) -> SprintPool:
    args = ["--*.corpus.synthetic=4", "--*.training-criterion=bench", f"--*.corpus.num-labels={labels}",
            "--*.log-level=warning"]
    # a long exit_timeout: a child in the middle of an exchange must be killed at once, not asked to exit
    return SprintPool(instances, sprint_args=args, env={**os.environ, "PYTHONPATH": pythonpath()}, exit_timeout=60)


def make_batch(frames: int, labels: int, seed: int):
    x = np.random.default_rng(seed).standard_normal((frames, BATCH, labels)).astype(np.float32)
    lengths = [frames - 7 * b for b in range(BATCH)]
    tags = [f"synthetic/rec{b:04d}/seg" for b in range(BATCH)]
    return x, lengths, tags


def check(pool: SprintPool, x, lengths, tags) -> None:
    result = pool.compute(x, lengths, tags)
    for b, t in enumerate(lengths):
        loss, err = compute_criterion("bench", x[:t, b])
        assert abs(result.loss[b] - loss) <= 1e-4 * max(1.0, abs(loss)), (b, result.loss[b], loss)
        np.testing.assert_allclose(result.error_signal[:t, b], err, rtol=1e-5, atol=1e-6)
        assert not result.error_signal[t:, b].any()


def arm(how: str, delay: float) -> threading.Timer:
    main = threading.main_thread().ident
    if how == "interrupt_main":
        fire = _thread.interrupt_main
    elif how == "raising":
        fire = lambda: signal.pthread_kill(main, signal.SIGUSR1)  # noqa: E731
    else:
        fire = lambda: signal.pthread_kill(main, signal.SIGINT)  # noqa: E731
    return threading.Timer(delay, fire)


def trials(instances: int, frames: int, labels: int, how: str, count: int, within: bool) -> None:
    def raise_boom(signum, frame):
        raise Boom()

    signal.signal(signal.SIGUSR1, raise_boom)
    rng = random.Random(1)
    with make_pool(instances, labels) as pool:
        x, lengths, tags = make_batch(frames, labels, 0)
        check(pool, x, lengths, tags)
        started = time.monotonic()
        pool.compute(x, lengths, tags)
        one = time.monotonic() - started  # one compute, without the check
        n = 0
        # ``within`` goes on (up to 4 * count tries) until an interrupt has cut an exchange
        while n < count or (within and n < 4 * count and not sum(inst.restarts for inst in pool.instances)):
            n += 1
            # ``within``: inside the first compute (its transfers), else anywhere in the loop of computes
            timer = arm(how, rng.uniform(0.1 * one, 0.5 * one) if within else rng.uniform(0, 2 * one))
            try:
                timer.start()  # inside the try: the interrupt may come before start() returns
                while True:
                    if how == "segment":
                        pool.compute_segment(tags[0], x[: lengths[0], 0])
                    else:
                        pool.compute(x, lengths, tags)
            except (KeyboardInterrupt, Boom):
                pass
            timer.join()
            x, lengths, tags = make_batch(frames, labels, n)
            check(pool, x, lengths, tags)
        print("ok", sum(inst.restarts for inst in pool.instances), flush=True)


def stopped(instances: int, frames: int, labels: int) -> None:
    pool = make_pool(instances, labels)
    print("pids", *[inst.child_pid for inst in pool.instances], flush=True)
    sys.stdin.readline()
    x, lengths, tags = make_batch(frames, labels, 0)
    print("computing", flush=True)
    pool.compute(x, lengths, tags)  # the children are stopped: only SIGINT ends this


if __name__ == "__main__":
    mode, instances, frames, labels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if mode == "trials":
        trials(instances, frames, labels, sys.argv[5], int(sys.argv[6]), sys.argv[7:] == ["within"])
    else:
        stopped(instances, frames, labels)
