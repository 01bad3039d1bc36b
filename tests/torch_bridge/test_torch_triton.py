"""The Triton full-sum and Viterbi kernels, run by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``)
against the compiled CPU kernel on random automata: losses, gradients, best paths and the non-finite rule.
(On a GPU the same kernels are compiled; no GPU checks them here.)

Triton decides at import whether it interprets, so the cases (``triton_cases.py``) run in a subprocess
whose environment has ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')
pytest.importorskip("triton", reason='needs triton (the torch extra on Linux): pip install "sprint_control[torch]"')

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_triton_cases_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rs",
                          os.path.join(HERE, "triton_cases.py")],
                         env=env, capture_output=True, text=True, timeout=900, cwd=HERE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout and "skipped" not in run.stdout, run.stdout
