"""What a forked copy of the parent may do with the parent's pools and instances: nothing.

A copy made by ``os.fork`` (a DataLoader worker, ``multiprocessing`` with the fork start method)
inherits the pool objects, the pipes to the parent's children and the shared region's pages, but
not the children (it cannot wait for them: ``poll()`` there reads "exited with status 0") nor the
threads that held locks at the fork (a lock held then stays held in the copy for ever). Every pool
and instance method therefore checks the owner's pid *before* it takes any lock, and refuses in a
copy; ``close()`` and the exit handlers return without touching anything. The module-level locks
are made anew in the copy (``os.register_at_fork``), so its exit handlers cannot block either.

The same goes for a call from a signal handler of a thread that is inside one of the pool's calls:
its lock is re-entrant (a close inside a call must not deadlock), so ``check_not_reentered`` refuses
such a call before it could restart the child the interrupted call is using.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

from ..errors import SprintControlError

__all__ = ["in_copy", "check_owner", "check_not_reentered"]


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


def check_not_reentered(calling_thread: Optional[int]) -> None:
    """Refuses a call from the thread that is inside one of the pool's calls (``calling_thread``)."""
    if calling_thread == threading.get_ident():
        raise SprintControlError(
            "this pool was re-entered: the calling thread is inside one of its calls (a call from a signal"
            " handler?); a pool serves one call at a time per thread: call it after the interrupted one returned")
