"""What a forked copy of the parent may do with the parent's pools and instances: nothing.

A copy made by ``os.fork`` (a DataLoader worker, ``multiprocessing`` with the fork start method)
inherits the pool objects, the pipes to the parent's children and the shared region's pages, but
not the children (it cannot wait for them: ``poll()`` there reads "exited with status 0") nor the
threads that held locks at the fork (a lock held then stays held in the copy for ever). Every pool
and instance method therefore checks the owner's pid *before* it takes any lock, and refuses in a
copy; ``close()`` and the exit handlers return without touching anything. The module-level locks
are made anew in the copy (``os.register_at_fork``), so its exit handlers cannot block either.
"""

from __future__ import annotations

import os

from ..errors import SprintControlError

__all__ = ["in_copy", "check_owner"]


def in_copy(owner_pid: int) -> bool:
    """True in a forked copy of the process that made the object (``owner_pid``)."""
    return os.getpid() != owner_pid


def check_owner(owner_pid: int, what: str) -> None:
    """Refuses to go on in a forked copy: the children, pipes and shared region are the parent's."""
    if os.getpid() != owner_pid:
        raise SprintControlError(
            f"this {what} belongs to another process (pid {owner_pid}; this is a forked copy, pid {os.getpid()}):"
            " its Sprint children, pipes and shared region are the parent's; create a new pool in this process"
        )
