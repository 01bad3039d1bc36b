"""Fixtures of the parent-side tests: the fake Sprint child."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

FAKE_CHILD = [sys.executable, os.path.join(HERE, "fake_child.py")]


@pytest.fixture
def fake_exec():
    """Command list that starts the fake Sprint child."""
    return list(FAKE_CHILD)
