"""Fixtures of the emulator tests: the criteria on both kernels (``fsa_impl`` is in tests/conftest.py),
and a runner that starts the emulator as a child process (as a parent would) with the scripted fake
module of this folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def criteria_impl(fsa_impl, monkeypatch):
    """``sprint_control.emulator.criteria`` running on one of the two cores."""
    from sprint_control.emulator import criteria

    monkeypatch.setattr(criteria, "_fsa", fsa_impl)
    return criteria


class EmulatorRun:
    def __init__(self, proc: subprocess.CompletedProcess, record: Path):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.events = []
        if record.exists():
            self.events = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]

    def of(self, event: str) -> list:
        return [e for e in self.events if e["event"] == event]

    def names(self) -> list:
        return [e["event"] for e in self.events]


@pytest.fixture
def run_emulator(tmp_path):
    """Runs ``python -m sprint_control.emulator`` with the fake module; returns an EmulatorRun."""

    def run(*args: str, config: str = "", module: str = "fake_module", timeout: float = 60, env=None):
        record = tmp_path / f"record{len(list(tmp_path.iterdir()))}.jsonl"
        cfg = f"record:{record}" + (f",{config}" if config else "")
        cmd = [
            sys.executable,
            "-m",
            "sprint_control.emulator",
            f"--*.pymod-path={HERE}",
            f"--*.pymod-name={module}",
            f"--*.pymod-config={cfg}",
            *args,
        ]
        full_env = dict(os.environ, **(env or {}))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
        return EmulatorRun(proc, record)

    return run


@pytest.fixture(autouse=True)
def lexicon_cache_dir(tmp_path_factory, monkeypatch):
    """The compiled-lexicon cache of these tests (and of the children they start) in a temporary
    directory, never the user's."""
    path = tmp_path_factory.mktemp("lexicon-cache")
    monkeypatch.setenv("SPRINT_CONTROL_CACHE_DIR", str(path))
    return path
