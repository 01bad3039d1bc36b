"""A peer process for framing tests: reads frames from one fd and echoes them back on another.

Run as ``python tests/wire/_pipe_peer.py <impl> <read_fd> <write_fd>``; ``impl`` is ``_framing`` or
``_framing_py``. It echoes each frame (name, array, value, seq, flags) until EOF, then exits 0.
"""

import importlib
import sys


def main() -> int:
    impl = importlib.import_module(f"sprint_control.wire.{sys.argv[1]}")
    rfd, wfd = int(sys.argv[2]), int(sys.argv[3])
    while True:
        try:
            header, arr = impl.read_frame(rfd)
        except EOFError:
            return 0
        impl.write_frame(wfd, header.msg_type, header.name, arr, header.value, header.seq, header.flags)


if __name__ == "__main__":
    sys.exit(main())
