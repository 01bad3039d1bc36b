"""Run by test_link_interrupts.py: a SIGINT lands while the parent waits for an answer.

Prints one line per step, for the test to check: the interrupt, the link's pending request after
it, and what a next request meets.
"""

import os
import signal
import sys
import threading
import time

import numpy as np

from sprint_control.errors import ProtocolError
from sprint_control.wire.protocol import ChildLink, CommandServer, ParentLink


def slow(reply, name, seg_len, post):
    time.sleep(1.0)  # the parent is blocked in its read meanwhile
    reply.loss(1.0, post)


def main() -> int:
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    server = CommandServer(ChildLink(p2c_r, c2p_w), {"get_loss_and_error_signal": slow})
    threading.Thread(target=server.serve, daemon=True).start()
    parent = ParentLink(c2p_r, p2c_w, timeout=None if sys.argv[1] == "none" else 30.0)
    parent.handshake("p", protocol=int(sys.argv[2]))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    post = np.ones((3, 4), np.float32)
    parent.send_loss_request("a", post)
    try:
        parent.recv_loss_result(post.shape)
        print("answered", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    pending = parent.pending
    print(f"pending {pending.command if pending else None} {pending.seg_name if pending else None}", flush=True)
    try:
        parent.send_loss_request("b", post)
        print("sent", flush=True)
    except ProtocolError as exc:
        print(f"refused: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
