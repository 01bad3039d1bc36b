"""Run by test_spawn_fds.py: with only a few free fds (RLIMIT_NOFILE lowered), starting a child
raises a SprintChildError and leaks no fd, attempt after attempt. Prints "ok" and the messages."""

import os
import resource
import sys

from sprint_control import SprintChildError
from sprint_control.parent import SprintSubprocessInstance


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # without the listing's own fd


def limit_with_free(free: int) -> int:
    """The fd limit that leaves exactly ``free`` fd numbers unused (the limit bounds the numbers)."""
    used = {int(fd) for fd in os.listdir("/proc/self/fd")}
    limit = 0
    while free or limit in used:
        if limit not in used:
            free -= 1
        limit += 1
    return limit


def main() -> None:
    command = [sys.executable, "-c", "pass"]  # a child that ends at once: the handshake fails too
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    messages = set()
    baseline = open_fds()
    for free in range(0, 9):
        for _ in range(3):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_with_free(free), hard))
            try:
                SprintSubprocessInstance(command, start_timeout=30)
            except SprintChildError as exc:
                first = str(exc).splitlines()[0]
                if "Errno 24" in first:
                    assert "cannot start Sprint" in first and "too many open files" in first, first
                    messages.add("too many open files")
                else:
                    messages.add("other")
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            now = open_fds()
            assert now == baseline, f"{now - baseline} fds leaked with {free} free"
    print("ok", *sorted(messages))


if __name__ == "__main__":
    main()
