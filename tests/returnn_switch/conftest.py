"""Fixtures of the RETURNN integration tests: the installed pool, undone after every test."""

from __future__ import annotations

import os
import sys

import pytest
from support import extra_reason

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture
def installed():
    """``sprint_control.returnn.install()`` for one test; ``uninstall()`` (which closes its pools) after."""
    pytest.importorskip("returnn.sprint.error_signals", reason=extra_reason("returnn.sprint.error_signals"))
    from sprint_control import returnn as bridge

    bridge.install()
    try:
        yield bridge
    finally:
        bridge.uninstall()
