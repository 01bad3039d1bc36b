"""Shared fixtures: every test of a compiled module runs on the module and on its pure-Python twin."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the helpers in support.py, for every folder below
    sys.path.insert(0, HERE)

from support import leak_check, twins  # noqa: E402


@pytest.fixture(params=twins("wire._framing", "wire._framing_py"))
def framing_impl(request):
    """The framing core: the compiled ``_framing`` and the pure-Python ``_framing_py``."""
    return request.param


@pytest.fixture(params=twins("fsa._fsa", "fsa._fsa_py"))
def fsa_impl(request):
    """The full-sum kernel: compiled ``_fsa`` and the numpy twin ``_fsa_py``."""
    return request.param


@pytest.fixture
def no_leaks():
    """Fails the test when it leaves fds open or child processes unreaped (tests/reliability adds threads)."""
    with leak_check(threads=False):
        yield
