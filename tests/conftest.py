"""Shared fixtures: every test of a compiled module runs on the module and on its pure-Python twin."""

from __future__ import annotations

import importlib

import pytest

from sprint_control import _impl


def twins(compiled: str, twin: str) -> list:
    """pytest params for a compiled module and its twin. The compiled one must be built unless
    SPRINT_CONTROL_PURE_PYTHON is set: a missing build fails loudly instead of testing one side."""
    mods = [pytest.param(importlib.import_module(f"sprint_control.{twin}"), id="python")]
    if not _impl.pure_python_forced():
        mods.append(pytest.param(importlib.import_module(f"sprint_control.{compiled}"), id="cython"))
    return mods


@pytest.fixture(params=twins("_framing", "_framing_py"))
def framing_impl(request):
    """The framing core: the compiled ``_framing`` and the pure-Python ``_framing_py``."""
    return request.param
