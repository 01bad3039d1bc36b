"""What the command-line tools share: a parser whose errors are one line.

A user who mistypes an option gets ``prog: error: <what was wrong>; <what was expected>`` on
stderr and exit status 2 (argparse's convention), never a traceback and never after a long run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Optional


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a bad command line in one line (its usage stays in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


def fail(prog: str, message: str) -> NoReturn:
    """Ends the command with ``prog: error: message`` and status 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(2)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def writable_file_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be written as a new or replaced file, or None: checked before a long run,
    so that its results are not lost at the end."""
    if os.path.isdir(path):
        return f"{path} is a directory: expected a file name"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"cannot write {path}: the directory {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write {path}: the directory {folder} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"cannot write {path}: the file is not writable"
    return None


def parse_torch_bench_args(prog: str, parser: argparse.ArgumentParser, argv: Optional[list] = None):
    """``(args, torch)`` of a ``bench --torch`` command line: ``--json`` checked writable and torch
    imported before anything is measured, each failure one line naming what to do."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if getattr(args, "json", None):
        problem = writable_file_problem(args.json)
        if problem:
            fail(prog, f"--json: {problem}")
    try:
        import torch
    except ImportError:
        fail(prog, 'needs PyTorch: pip install "sprint_control[torch]"')
    return args, torch
