"""``sprint-control-emulator`` / ``python -m sprint_control.emulator``: a stand-in for RASR's nn-trainer."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Optional

from .args import ArgumentError, parse_args

log = logging.getLogger("sprint_control.emulator")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        return f"[emulator] {level}{record.getMessage()}"


def setup_logging(level: str = "info") -> None:
    logger = logging.getLogger("sprint_control.emulator")
    for h in list(logger.handlers):
        if getattr(h, "_emulator", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._emulator = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(getattr(logging, level.upper()))


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the emulator on RASR-style arguments; returns the exit status. A critical error ends the
    process (status 1) right away, as in RASR: this is a program entry point, not a library call."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        from .args import OPTIONS

        print("usage: sprint-control-emulator --*.key=value ...  (RASR-style options)\n")
        for o in OPTIONS:
            kind = f"one of {' | '.join(o.choices)}" if o.kind == "choice" else o.kind
            print(f"  --*.{o.name}  [{kind}, default {o.default!r}]\n      {o.help}")
        return 0
    setup_logging("info")
    from .automaton import exporter_key_unread

    try:
        cfg = parse_args(argv)
    except (ArgumentError, OSError) as exc:
        sys.stderr.write(f"[emulator] critical error: {exc}\n")
        return 1
    setup_logging("error" if cfg["quiet"] else cfg["log-level"])
    for key in cfg.unknown_keys():
        if exporter_key_unread(key):  # RASR would build another automaton with it: say so loudly
            log.warning("ignoring option --%s: a RASR key of the automaton export the emulator does not read", key)
        else:
            log.info("ignoring unknown option --%s", key)
    for arg in cfg.positional:
        log.info("ignoring argument %r", arg)

    from .host import Host, die

    try:
        host = Host(cfg, on_fatal=die)
    except (ValueError, OSError, KeyError) as exc:
        sys.stderr.write(f"[emulator] critical error: {exc}\n")
        return 1
    try:
        return host.run()
    except Exception:
        # A fault of the emulator itself: report it like RASR's critical errors and end the process even
        # if the module left non-daemon threads running.
        sys.stderr.write(traceback.format_exc())
        die("internal error of the emulator")


if __name__ == "__main__":
    sys.exit(main())
