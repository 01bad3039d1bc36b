"""The ``sprint-control`` console command (also ``python -m sprint_control``).

Subcommands:

- ``demo``: trains a tiny acoustic model with the criterion computed in a pool of Sprint children
  (the bundled emulator unless ``--sprint-exec``), see ``sprint_control.tools.demo``.
- ``bench``: throughput of the link, see ``sprint_control.tools.bench``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from typing import Optional

from . import __version__
from .tools._cli import OneLineParser

logger = logging.getLogger("sprint_control.cli")


def _bench(rest: list[str]) -> int:
    try:
        from .tools import bench_cli
    except ImportError as exc:
        if getattr(exc, "name", None) not in ("sprint_control.tools.bench_cli", "sprint_control.tools.bench", None):
            raise
        print("sprint-control bench: the benchmark module sprint_control.tools.bench is not available"
              f" in this installation ({exc})", file=sys.stderr)
        return 2
    rc = bench_cli.main(rest)
    return int(rc or 0)


def build_parser() -> argparse.ArgumentParser:
    from .tools import demo

    parser = OneLineParser(
        prog="sprint-control",
        description="A fast, safe link between a Python training process and RASR (Sprint).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v: info, -vv: debug, incl. the children's output)")
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench}")
    demo.build_parser(sub.add_parser("demo", help="train a tiny model with the loss computed inside Sprint"))
    sub.add_parser("bench", help="measure the link's throughput (options: sprint-control bench --help)",
                   add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``sprint-control``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # everything after "bench" belongs to the benchmark's own parser
    if "bench" in argv:
        i = argv.index("bench")
        head, rest = argv[:i], argv[i + 1 :]
        if all(a.startswith("-") for a in head):
            args = parser.parse_args(head)
            _setup_logging(args.verbose)
            return _bench(rest)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return 2
    problem = demo_args_problem(args)
    if problem:
        print(f"sprint-control demo: error: {problem}", file=sys.stderr)
        return 2
    from .tools import demo

    try:
        return demo.run_from_args(args)
    except demo.DemoInputError as exc:  # a user's corpus, lexicon or config the emulator cannot use
        print(f"sprint-control demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def demo_args_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the demo's options and what was expected, or None; checked before any
    child is started, so a typo costs no start-up and prints no traceback."""
    for option in ("instances", "segments", "epochs", "batch_size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            return f"--{option.replace('_', '-')} must be at least 1, got {value}"
    for option in ("corpus", "lexicon", "config"):
        path = getattr(args, option, None)
        if path is not None and not os.path.isfile(path):
            return f"--{option} {path}: no such file"
    if args.num_labels is not None and args.num_labels < 1:
        return f"--num-labels must be at least 1, got {args.num_labels}"
    if args.sprint_exec is not None:
        # a bare name is looked up on PATH, as the parent does when it spawns the children
        exe = args.sprint_exec if os.sep in args.sprint_exec else shutil.which(args.sprint_exec) or args.sprint_exec
        if not os.path.isfile(exe):
            return f"--sprint-exec {args.sprint_exec}: no such file; expected the path of RASR's nn-trainer"
        if not os.access(exe, os.X_OK):
            return f"--sprint-exec {args.sprint_exec}: not executable; expected the path of RASR's nn-trainer"
    try:
        shlex.split(args.sprint_args)
    except ValueError as exc:
        return f"--sprint-args {args.sprint_args!r}: {exc}; expected arguments split like a shell command line"
    return None


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
