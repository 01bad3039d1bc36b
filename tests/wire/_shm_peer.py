"""A child process for shared-memory tests: serves loss requests like our Sprint side.

Run as ``python tests/wire/_shm_peer.py <read_fd> <write_fd>``. Error signal = 2 * posteriors - 1,
loss = sum of the posteriors (float64), so the parent can check every element.
"""

import sys

import numpy as np

from sprint_control.wire.protocol import ChildLink, CommandServer


def loss(reply, name, seg_len, post):
    reply.loss(float(post.sum(dtype=np.float64)), 2 * post - 1)


def main() -> int:
    link = ChildLink(int(sys.argv[1]), int(sys.argv[2]))
    CommandServer(link, {"get_loss_and_error_signal": loss}, name="shm-peer").serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
