"""An interrupt (SIGINT) in the middle of an exchange leaves the link saying so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("timeout", ["none", "30"])
def test_an_interrupted_exchange_stays_pending_and_blocks_the_next_request(protocol, timeout):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_interrupted_exchange.py"), timeout, str(protocol)],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0] == "interrupted"
    assert lines[1] == "pending get_loss_and_error_signal a"  # the answer to 'a' is still in the pipe
    assert lines[2].startswith("refused: a get_loss_and_error_signal request ('a') is still pending on this link")
