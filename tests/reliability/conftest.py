"""Fixtures of the reliability tests: a leak check (fds, children, threads) and the emulator with the
fault-injecting Sprint-side module of this folder (helpers in rel_helpers.py)."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from rel_helpers import EMULATOR_ARGS, FAULTY_MODULE, pythonpath  # noqa: E402
from support import leak_check  # noqa: E402

from sprint_control.parent import emulator_command  # noqa: E402


@pytest.fixture
def no_leaks():
    """Fails a test that leaves fds open, children running or unreaped, or threads behind."""
    with leak_check(threads=True):
        yield


@pytest.fixture
def emulator():
    """Keyword arguments of a SprintSubprocessInstance/SprintPool child: the emulator with the faulty module."""

    def make(*extra_args, env=None, **kwargs):
        return dict(sprintExecPath=emulator_command(), sprintConfigStr=list(EMULATOR_ARGS) + list(extra_args),
                    module_name=FAULTY_MODULE, module_path=HERE,
                    env={**os.environ, "PYTHONPATH": pythonpath(), **(env or {})}, **kwargs)

    return make

