"""A stand-in for Sprint + the control module, for the parent-side tests.

Started by ``SprintSubprocessInstance`` like RASR would be (``--*.pymod-config=c2p_fd:..,p2c_fd:..``),
it answers through ``CommandServer`` with a known criterion:

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

from sprint_control.wire.protocol import ChildLink, CommandServer


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


def handlers(opts):
    """The fake's commands, for ``CommandServer``."""

    def loss(reply, seg, seg_len, x):
        assert seg_len == x.shape[0]
        if seg == opts.get("fake.crash-on"):
            print(f"fatal: cannot handle segment {seg}", file=sys.stderr, flush=True)
            os._exit(3)
        if seg == opts.get("fake.segv-on"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if seg == opts.get("fake.sleep-on"):
            time.sleep(30)
        if seg == opts.get("fake.error-on"):
            raise ValueError(f"bad segment {seg}")
        if seg == opts.get("fake.skip-on"):
            reply.loss(math.inf, np.zeros_like(x), skipped=True)
        elif opts.get("fake.echo") == "true":  # no computation: for measuring the transport
            reply.loss(0.0, x)
        else:
            reply.loss(*criterion(x))

    def fsa(reply, seg):
        reply.fsa(*automaton(seg))

    return {"get_loss_and_error_signal": loss, "export_allophone_state_fsa_by_segment_name": fsa}


def main():
    opts, config = parse_args(sys.argv[1:])
    if "fake.argv-file" in opts:
        with open(opts["fake.argv-file"], "w") as f:
            listed = [int(x) for x in os.listdir("/proc/self/fd")]
            json.dump({"argv": sys.argv, "fds": sorted(fd for fd in listed if _is_open(fd) and fd != f.fileno())}, f)
    protocols = [int(p) for p in opts.get("fake.protocols", "1,2").split(",")]
    link = ChildLink(int(config["p2c_fd"]), int(config["c2p_fd"]))
    print("fake child started", file=sys.stderr, flush=True)
    server = CommandServer(link, handlers(opts), name="FakeSprint", protocols=protocols)
    if server.serve() == "exit" and opts.get("fake.ignore-exit") == "true":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
