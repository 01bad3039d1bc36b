"""A child process for shared-memory tests: serves loss requests over a Link like our Sprint side.

Run as ``python tests/wire/_shm_peer.py <read_fd> <write_fd>``. Error signal = 2 * posteriors - 1,
loss = sum of the posteriors (float64), so the parent can check every element.
"""

import sys

import numpy as np

from sprint_control.wire.protocol import Link


def main() -> int:
    link = Link(int(sys.argv[1]), int(sys.argv[2]))
    while True:
        try:
            cmd = link.recv_command()
        except EOFError:
            return 0
        if cmd[0] == "init":
            link.reply_init("shm-peer", {"protocols": [1, 2]})
        elif cmd[0] == "use_protocol":
            link.accept_protocol(cmd[1], cmd[2])
        elif cmd[0] == "get_loss_and_error_signal":
            _, name, seg_len, post = cmd
            link.reply_loss(name, float(post.sum(dtype=np.float64)), 2 * post - 1)
        elif cmd[0] == "exit":
            return 0
        else:
            link.reply_exception("ValueError", f"unknown command {cmd[0]}")


if __name__ == "__main__":
    sys.exit(main())
