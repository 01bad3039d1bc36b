"""A bad command line ends ``sprint-control demo`` and ``bench`` with one line on stderr (what was wrong,
what was expected) and status 2: no traceback, no child started, nothing measured first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sprint_control import cli
from sprint_control.tools import bench, bench_cli

pytestmark = pytest.mark.usefixtures("no_leaks")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fails the test if the tools get as far as starting children or measuring."""
    from sprint_control.tools import demo

    def refuse(*args, **kwargs):
        raise AssertionError("the command ran although its options were wrong")

    monkeypatch.setattr(demo, "run_demo", refuse)
    monkeypatch.setattr(bench, "measure_sizes", refuse)


def _status(call) -> int:
    try:
        return call()
    except SystemExit as exc:
        return exc.code


#: (command, argv, words the one line must hold); bench runs with --no-rss so nothing else starts
BAD_COMMAND_LINES = [
    ("demo", ["--instances", "0"], ["--instances", "at least 1", "got 0"]),
    ("demo", ["--segments", "-3"], ["--segments", "at least 1"]),
    ("demo", ["--sprint-exec", "/nonexistent/nn-trainer"], ["/nonexistent/nn-trainer", "no such file", "nn-trainer"]),
    ("demo", ["--sprint-args", "'x"], ["--sprint-args", "No closing quotation", "split like a shell"]),
    ("bench", ["--repeats", "0"], ["--repeats", "at least 1", "got 0"]),
    ("bench", ["--sizes", "0,0"], ["--sizes", "TIME,LABELS", "at least 1", "'0,0'"]),
    ("bench", ["--sizes", "10,5", "3,0"], ["--sizes", "'3,0'"]),
    ("bench", ["--budget", "0"], ["--budget", "above 0"]),
    ("bench", ["--json", "/nonexistent/x.json"], ["--json", "/nonexistent", "does not exist"]),
]


@pytest.mark.parametrize("command,argv,words", BAD_COMMAND_LINES,
                         ids=[f"{c}-{'-'.join(a)}" for c, a, _ in BAD_COMMAND_LINES])
def test_option_errors_are_one_line_and_come_before_the_run(command, argv, words, capsys, nothing_runs):
    """(bench: the --json target is checked before the run, so its results cannot be lost at the end.)"""
    if command == "demo":
        status = _status(lambda: cli.main(["demo", *argv]))
    else:
        status = _status(lambda: bench_cli.main(["--no-rss", *argv]))
    assert status == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"sprint-control {command}: error: ")
    for word in words:
        assert word in line


def test_demo_refuses_a_sprint_exec_that_is_not_executable(tmp_path, capsys, nothing_runs):
    exe = tmp_path / "nn-trainer"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o644)
    if os.access(exe, os.X_OK):  # root may execute anything
        pytest.skip("this user can execute any file")
    assert _status(lambda: cli.main(["demo", "--sprint-exec", str(exe)])) == 2
    assert "not executable" in _one_line(capsys.readouterr().err)


def test_bench_refuses_a_json_target_that_is_a_directory(tmp_path, capsys, nothing_runs):
    assert _status(lambda: bench_cli.main(["--json", str(tmp_path)])) == 2
    assert "is a directory" in _one_line(capsys.readouterr().err)


def test_measure_sizes_refuses_zero_repeats():
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        bench.measure_sizes([(1, 1)], ["v2"], repeats=0, child="pipe")


@pytest.mark.parametrize("argv", [
    ["demo", "--instances", "0"],
    ["demo", "--sprint-args", "'x"],
    ["bench", "--repeats", "0"],
    ["bench", "--json", "/nonexistent/x.json", "--no-rss", "--sizes", "1,1"],
])
def test_the_console_command_prints_one_line_and_exits_2(argv):
    proc = subprocess.run([sys.executable, "-m", "sprint_control", *argv], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert _one_line(proc.stderr).startswith(f"sprint-control {argv[0]}: error: ")
    assert proc.stdout == ""
