"""A child's stdout/stderr: drained by a daemon thread into a bounded tail and a logger, and read
back for the line that says why a child died."""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import sys
import threading
from typing import Optional

child_logger = logging.getLogger("sprint_control.parent.child")


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)(: |$)")
# RASR's XML log: <critical-error component="...">text</critical-error> (also <error ...>), on one
# line or several
_XML_ERROR = re.compile(r"<(critical-error|error)\b[^>]*>(.*?)</\1>", re.DOTALL)
# plain forms: "critical error: ...", "error: ...", also after a "[component]" prefix
# a child's warning line: "[emulator] warning: ...", "warning: ...", RASR's "<warning ...>text</warning>"
_WARNING = re.compile(r"^(\[[^\]]*\]\s*)?warning\s*:\s*\S|^<warning\b", re.IGNORECASE)
_PLAIN_ERROR = re.compile(r"^(\[[^\]]*\]\s*)?(critical[ -]error|error)\s*:\s*\S", re.IGNORECASE)


def _rasr_error(tail: str, lines: list[str]) -> str:
    """RASR's last critical error (else its last error), as one line."""
    found: dict[bool, str] = {}
    for match in _XML_ERROR.finditer(tail):
        text = " ".join(match.group(2).split())
        if text:
            found[match.group(1) == "critical-error"] = f"<{match.group(1)}> {text}"
    for line in lines:
        plain = _PLAIN_ERROR.match(line)
        if plain:
            found.setdefault(plain.group(2).lower().startswith("critical"), line)
    return found.get(True) or found.get(False) or ""


def child_cause(tail: str) -> str:
    """Why a child ended, from its output: its last Python exception line and RASR's critical
    error (or error) line, joined by `` | `` when both are there; "" when neither is."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    exc_line = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), "")
    rasr = _rasr_error(tail, lines)
    if rasr == exc_line:
        rasr = ""
    return " | ".join(part for part in (exc_line, rasr) if part)


def last_words(tail: str) -> str:
    """The cause (``child_cause``) when the output names one, else the child's last output line."""
    cause = child_cause(tail)
    if cause:
        return cause
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


#: Bytes kept of one output line; the rest is counted, not kept (a progress bar that never ends its
#: line must neither grow memory nor become a 50 MB first line of an error message).
MAX_LINE = 4096
_LINE_END = re.compile(rb"[\r\n]")  # "\r" too: progress bars redraw their line with it


class OutputDrain:
    """Drains a child's stdout/stderr pipe in a daemon thread: bounded tail + logger (+ echo). Each
    chunk is split once, so the cost is linear in the output and memory bounded by the tail."""

    def __init__(self, fd: int, label: str, max_lines: int, echo: bool):
        self.fd = fd
        self.label = label
        self.echo = echo
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self.thread = threading.Thread(target=self._run, name=f"{label} output", daemon=True)
        self._pending = bytearray()  # the line being read, at most MAX_LINE bytes
        self._dropped = 0  # bytes of it beyond MAX_LINE

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except InterruptedError:  # pragma: no cover
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                if self.echo:
                    try:
                        sys.stderr.write(chunk.decode("utf-8", "replace"))
                        sys.stderr.flush()
                    except Exception:  # pragma: no cover - a closed stderr must not kill the drain
                        pass
                self.feed(chunk)
            self._end_line()
        finally:
            try:
                os.close(self.fd)
            except OSError:  # pragma: no cover
                pass

    def feed(self, chunk: bytes) -> None:
        """Takes one chunk of output: every line end in it completes a line."""
        first, *rest = _LINE_END.split(chunk)
        self._extend(first)
        for piece in rest:
            self._end_line()
            self._extend(piece)

    def _extend(self, piece: bytes) -> None:
        room = MAX_LINE - len(self._pending)
        if room > 0:
            self._pending += piece[:room]
        self._dropped += max(0, len(piece) - max(room, 0))

    def _end_line(self) -> None:
        if not self._pending:  # empty lines (and the gap of "\r\n") say nothing
            return
        line = self._pending.decode("utf-8", "replace")
        if self._dropped:
            line += f" ... [{self._dropped} more bytes of this line not kept]"
        self._pending = bytearray()
        self._dropped = 0
        self.lines.append(line)
        if _WARNING.match(line):  # a warning reaches the parent's log without echo_output
            child_logger.warning("%s: %s", self.label, line)
        else:
            child_logger.debug("%s: %s", self.label, line)

    def join(self, timeout: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)

    def tail(self) -> str:
        return "\n".join(self.lines)
