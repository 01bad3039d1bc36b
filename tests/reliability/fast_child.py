"""The smallest Sprint child that completes the start-up handshake (protocol v1, standard library
only, started with ``python -I -S``): for the tests that start and stop many children, where an
emulator's start-up (numpy, corpus) would dominate. It answers ``init``, then waits for ``exit`` or
EOF; any other command gets an exception answer."""

import os
import pickle
import struct
import sys


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    config = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--*.pymod-config="))
    cfg = dict(kv.split(":", 1) for kv in config.split(","))
    rfd, wfd = int(cfg["p2c_fd"]), int(cfg["c2p_fd"])
    while True:
        head = read_exact(rfd, 4)
        if head is None:
            return 0
        msg = pickle.loads(read_exact(rfd, struct.unpack("<i", head)[0]))
        if msg[0] == "init":
            answer = ("ok", "fast_child", 1, {"protocols": [1]})
        elif msg[0] == "exit":
            return 0
        else:
            answer = ("exception", f"fast_child: unknown command {msg[0]!r}")
        data = pickle.dumps(answer, protocol=4)
        os.write(wfd, struct.pack("<i", len(data)) + data)


if __name__ == "__main__":
    sys.exit(main())
