"""The error a user sees when the child dies leads with the cause: the child's Python exception or
RASR's own critical/error line, in RASR's XML log form or its plain form; not the last output line."""

from __future__ import annotations

import os
import sys

import pytest

from sprint_control import SprintChildError
from sprint_control.parent import SprintSubprocessInstance

pytestmark = pytest.mark.usefixtures("no_leaks")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dying_child.py")
CE = "Generic CrossEntropyCriterion::getErrorSignal not implemented yet."

CASES = {
    "xml": f"<critical-error> {CE}",
    "xml-one-line": f"<critical-error> {CE}",
    "plain": f"critical error: {CE}",
    "error": "error: the corpus file cannot be read",
    "traceback": "ValueError: the layer has 11 outputs, the posteriors 5 labels",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_message_leads_with_the_childs_cause(kind):
    with pytest.raises(SprintChildError) as info:
        SprintSubprocessInstance([sys.executable, SCRIPT, kind], start_timeout=30)
    first = str(info.value).splitlines()[0]
    assert first.startswith(CASES[kind]), first
    assert "exited with status 1 during the start-up handshake" in first
    assert info.value.returncode == 1 and "exiting..." in info.value.stderr_tail


def test_without_a_cause_the_last_line_is_shown():
    with pytest.raises(SprintChildError) as info:
        SprintSubprocessInstance([sys.executable, SCRIPT, "nothing"], start_timeout=30)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Sprint child (pid") and first.endswith("the child said: exiting..."), first
