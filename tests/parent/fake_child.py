"""A stand-in for Sprint + the control module, for the parent-side tests.

Started by ``SprintSubprocessInstance`` like RASR would be (``--*.pymod-config=c2p_fd:..,p2c_fd:..``),
it answers over ``protocol.Link`` with a known criterion:

    loss = sum(exp(x)) - T,     error_signal = 2 * x + 1 + frame_index

and automata whose size follows from the segment name: ``num_states = len(name) % 4 + 2``, a chain
0 -> 1 -> ... with one self loop per state (emission = state index, weight = 0.5 * state).

Behaviour switches (Sprint-style args): ``--fake.protocols=1,2``, ``--fake.crash-on=SEG`` (exits
with status 3 after printing to stderr), ``--fake.segv-on=SEG`` (kills itself with SIGSEGV),
``--fake.error-on=SEG`` (answers with an exception), ``--fake.sleep-on=SEG`` (sleeps 30 s),
``--fake.skip-on=SEG`` (loss inf, zero error signal), ``--fake.echo=true`` (answers the posteriors
themselves, loss 0: transport only), ``--fake.argv-file=PATH`` (writes its argv
and open fds there), ``--fake.ignore-exit=true`` (keeps running after exit until killed).
"""

import json
import math
import os
import signal
import sys
import time

import numpy as np

from sprint_control.wire.protocol import Link


def criterion(x):
    """The fake criterion (also used by the tests to compute the expected values)."""
    x = np.asarray(x, dtype=np.float32)
    loss = float(np.exp(x.astype(np.float64)).sum() - x.shape[0])
    err = (2 * x + 1 + np.arange(x.shape[0], dtype=np.float32)[:, None]).astype(np.float32)
    return loss, err


def automaton(name):
    """The fake automaton of a segment: (num_states, num_edges, edges (3*E,), weights (E,))."""
    n = len(name) % 4 + 2
    froms, tos, emis, wts = [], [], [], []
    for s in range(n):
        froms.append(s), tos.append(s), emis.append(s), wts.append(0.5 * s)
        if s + 1 < n:
            froms.append(s), tos.append(s + 1), emis.append(s + 1), wts.append(0.25)
    edges = np.array([froms, tos, emis], dtype=np.uint32)
    return n, edges.shape[1], edges.reshape(-1), np.array(wts, dtype=np.float32)


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def parse_args(argv):
    opts = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            opts[k] = v
    config = dict(kv.split(":", 1) for kv in opts["*.pymod-config"].split(","))
    return opts, config


def main():
    opts, config = parse_args(sys.argv[1:])
    if "fake.argv-file" in opts:
        with open(opts["fake.argv-file"], "w") as f:
            listed = [int(x) for x in os.listdir("/proc/self/fd")]
            json.dump({"argv": sys.argv, "fds": sorted(fd for fd in listed if _is_open(fd) and fd != f.fileno())}, f)
    protocols = [int(p) for p in opts.get("fake.protocols", "1,2").split(",")]
    link = Link(int(config["p2c_fd"]), int(config["c2p_fd"]))
    print("fake child started", file=sys.stderr, flush=True)
    while True:
        try:
            cmd = link.recv_command()
        except EOFError:
            return 0
        name = cmd[0]
        if name == "init":
            link.reply_init("FakeSprint", {"protocols": protocols})
        elif name == "use_protocol":
            link.accept_protocol(cmd[1], cmd[2])
        elif name == "get_loss_and_error_signal":
            seg, seg_len, x = cmd[1], cmd[2], cmd[3]
            assert seg_len == x.shape[0]
            if seg == opts.get("fake.crash-on"):
                print(f"fatal: cannot handle segment {seg}", file=sys.stderr, flush=True)
                os._exit(3)
            if seg == opts.get("fake.segv-on"):
                os.kill(os.getpid(), signal.SIGSEGV)
            if seg == opts.get("fake.sleep-on"):
                time.sleep(30)
            if seg == opts.get("fake.error-on"):
                link.reply_exception("ValueError", f"Traceback ...\nValueError: bad segment {seg}")
                continue
            if seg == opts.get("fake.skip-on"):
                link.reply_loss(seg, math.inf, np.zeros_like(x), skipped=True)
                continue
            if opts.get("fake.echo") == "true":  # no computation: for measuring the transport
                link.reply_loss(seg, 0.0, x)
                continue
            loss, err = criterion(x)
            link.reply_loss(seg, loss, err)
        elif name == "export_allophone_state_fsa_by_segment_name":
            link.reply_fsa(*automaton(cmd[1]))
        elif name == "exit":
            if opts.get("fake.ignore-exit") == "true":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(60)
            return 0
        else:
            link.reply_exception("KeyError", f"unknown command {name!r}")


if __name__ == "__main__":
    sys.exit(main())
