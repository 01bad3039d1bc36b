"""Fixtures of the parent-side tests: the fake Sprint child and a leak check for fds and children."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from support import leak_check  # noqa: E402

FAKE_CHILD = [sys.executable, os.path.join(HERE, "fake_child.py")]


@pytest.fixture
def fake_exec():
    """Command list that starts the fake Sprint child."""
    return list(FAKE_CHILD)


@pytest.fixture
def no_leaks():
    """Fails the test when it leaves fds open or child processes unreaped."""
    with leak_check(threads=False):
        yield
