"""The environment variables the package reads are named once, in ``sprint_control/_env.py``."""

from __future__ import annotations

import glob
import os
import re

from sprint_control import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names_in(pattern: str, regex: str) -> set:
    found = set()
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
        with open(path, encoding="utf-8") as f:
            found |= set(re.findall(regex, f.read()))
    return found


def test_the_c_reads_exactly_the_variables_listed_for_it():
    read = _names_in("csrc/*.c", r'getenv\("(SPRINT_CONTROL_[A-Z_]+)"\)')
    assert read, "no getenv found in csrc/: the pattern is wrong"
    assert read == set(_env.READ_BY_C)


def test_every_listed_name_is_a_sprint_control_variable_and_unique():
    names = [v for k, v in vars(_env).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names)) >= 6
    for name in names:
        assert name.startswith("SPRINT_CONTROL_")


def test_the_pure_python_switch():
    assert not _env.pure_python_forced({})
    assert not _env.pure_python_forced({_env.PURE_PYTHON: "0"})
    assert not _env.pure_python_forced({_env.PURE_PYTHON: ""})
    assert _env.pure_python_forced({_env.PURE_PYTHON: "1"})
    assert _env.pure_python_forced({_env.PURE_PYTHON: "yes"})
