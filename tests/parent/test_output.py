"""The drain of a child's output: "\\r" ends a line too, and a line is kept up to MAX_LINE bytes, so a
progress bar or a flood without line ends costs bounded memory and never becomes a 50 MB line of an
error message."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from sprint_control import SprintChildError
from sprint_control.parent import SprintSubprocessInstance
from sprint_control.parent.output import MAX_LINE, OutputDrain

pytestmark = pytest.mark.usefixtures("no_leaks")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dying_child.py")


def _drain(chunks, max_lines=200):
    r, w = os.pipe()
    drain = OutputDrain(r, "test", max_lines, echo=False)
    drain.start()

    def write():
        with os.fdopen(w, "wb") as f:
            for c in chunks:
                f.write(c)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    drain.join(30)
    assert not drain.thread.is_alive()
    return list(drain.lines)


def test_carriage_return_and_newline_end_lines():
    assert _drain([b"a\rb\r\nc\n", b"d", b"e\r", b"\nf"]) == ["a", "b", "c", "de", "f"]


def test_a_line_without_end_is_kept_up_to_the_limit():
    big = 20 << 20
    lines = _drain([b"start\n"] + [b"y" * (1 << 20)] * (big >> 20) + [b"\rlast"])
    assert lines[0] == "start" and lines[2] == "last"
    assert lines[1] == "y" * MAX_LINE + f" ... [{big - MAX_LINE} more bytes of this line not kept]"


@pytest.mark.parametrize("kind", ["progress", "flood"])
def test_a_child_flooding_its_output_gives_a_short_error(kind):
    with pytest.raises(SprintChildError) as info:
        SprintSubprocessInstance([sys.executable, SCRIPT, kind], start_timeout=60)
    first = str(info.value).splitlines()[0]
    assert len(first) < MAX_LINE + 500 and first.endswith("exiting..."), first[:300]
    assert len(info.value.stderr_tail) < 200 * (MAX_LINE + 100)
