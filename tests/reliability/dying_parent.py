"""A training process that the reliability tests kill with SIGKILL (they play its parent).

    python dying_parent.py PROTOCOL MODE SPAWN_THREAD PID_FILE

It starts a pool of two emulator children with the faulty module, computes one batch, then, for
MODE ``stuck-gil`` / ``stuck-nogil``, sends each child a segment whose criterion gets stuck in a C
call (holding / releasing the GIL) and waits until both are stuck; for ``idle`` the children just
wait for the next command (``idle-shm``: the same, the batch having gone through a shared memory
region). Then it writes the children's pids to PID_FILE and sleeps until killed.
SPAWN_THREAD ``main`` starts the children from the main thread, ``worker`` from another thread
(then the kernel's parent-death signal is not asked for, and only the module's watchdog is left).
"""

import os
import sys
import threading
import time

import numpy as np
from rel_helpers import EMULATOR_ARGS, FAULTY_MODULE, HERE, pythonpath

from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.parent import SprintPool, emulator_command


def main():
    protocol, mode, spawn_thread, pid_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    corpus = synthetic_corpus(8, seed=3, max_frames=30)
    stuck = corpus.segments[0].name
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    marks = [f"{pid_file}.mark{i}" for i in range(2)]
    if mode == "stuck-gil":
        env["FAULTY_STUCK_GIL"] = stuck
    elif mode == "stuck-nogil":
        env["FAULTY_STUCK_NOGIL"] = stuck
    pools = []

    shm = dict(shm=True, shm_inline_below=0) if mode == "idle-shm" else {}

    def start():
        pools.append(SprintPool(2, emulator_command(), EMULATOR_ARGS, module_name=FAULTY_MODULE, module_path=HERE,
                                protocol=protocol, env=env, **shm))

    if spawn_thread == "main":
        start()
    else:
        t = threading.Thread(target=start)
        t.start()
        t.join()
    pool = pools[0]
    seg = corpus.segments[1]
    x = pool.empty((seg.num_frames, 2, 11))
    x[...] = np.log(np.float32(1 / 11))
    pool.compute(x, [seg.num_frames] * 2, [seg.name] * 2)  # both children work
    if shm and not pool.uses_shared_memory:
        sys.exit("the children did not map the shared region")
    if mode not in ("idle", "idle-shm"):
        for inst, mark in zip(pool.instances, marks):
            inst._child_mark = mark
            # each child gets its own mark file, named in its environment at restart
        for i, inst in enumerate(pool.instances):
            inst.env = {**env, "FAULTY_MARK": marks[i]}
        if spawn_thread == "main":
            for inst in pool.instances:
                inst.init()
        else:
            ts = [threading.Thread(target=inst.init) for inst in pool.instances]
            [t.start() for t in ts]
            [t.join() for t in ts]
        x0 = np.log(np.full((corpus.segments[0].num_frames, 11), 1 / 11, np.float32))
        for inst in pool.instances:
            inst.get_loss_and_error_signal__send(stuck, x0.shape[0], x0)
        deadline = time.monotonic() + 60
        while not all(os.path.exists(m) and os.path.getsize(m) for m in marks):
            if time.monotonic() > deadline:
                sys.exit("the children never got stuck")
            time.sleep(0.01)
    with open(pid_file + ".tmp", "w") as f:
        f.write(" ".join(str(inst.child_pid) for inst in pool.instances))
    os.rename(pid_file + ".tmp", pid_file)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
