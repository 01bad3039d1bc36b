"""The environment variables sprint_control reads, named once.

This module imports nothing, so ``setup.py`` can read it without importing the package.
"""

#: ``1`` forces the pure-Python twins: ``setup.py`` then builds no extension, and the package
#: imports its twins even where the compiled modules exist. Children inherit it.
PURE_PYTHON = "SPRINT_CONTROL_PURE_PYTHON"
#: The parent's pid, set in a Sprint child's environment: the child ends itself when it is gone.
PARENT_PID = "SPRINT_CONTROL_PARENT_PID"
#: Set by the parent when the child may ask the kernel for a signal at the parent's death.
PDEATHSIG = "SPRINT_CONTROL_PDEATHSIG"

# Read by the compiled core's C (csrc/frame_io.c), which has to spell them itself; listed here so the
# contract is complete in one place (tests/test_env.py holds the C to this list).
#: Microseconds a blocked pipe call spins before it sleeps in poll (default 200; 0: no spinning).
SPIN_US = "SPRINT_CONTROL_SPIN_US"
#: ``0``: spin without yielding the CPU between tries.
SPIN_YIELD = "SPRINT_CONTROL_SPIN_YIELD"
#: ``0``: no vmsplice of large payloads (every frame is copied by writev).
SPLICE = "SPRINT_CONTROL_SPLICE"
#: The variables csrc/ reads.
READ_BY_C = (SPIN_US, SPIN_YIELD, SPLICE)


def pure_python_forced(environ=None) -> bool:
    """Whether ``SPRINT_CONTROL_PURE_PYTHON`` asks for the twins (any value but empty and ``0``)."""
    if environ is None:
        import os

        environ = os.environ
    return environ.get(PURE_PYTHON, "") not in ("", "0")
