"""An unmodified RETURNN parent (``returnn.sprint.error_signals.SprintSubprocessInstance``) drives our
child module inside the RASR emulator over protocol v1 and gets the right loss and error signal.

RETURNN passes ``--*.pymod-name=returnn.sprint.control``; the RASR-style options in
``sprintConfigStr`` come last and win, so they point the emulator at ``sprint_control`` instead."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from control_fakes import random_log_posteriors
from support import extra_reason

from sprint_control.emulator import corpus as emu_corpus
from sprint_control.emulator import criteria

error_signals = pytest.importorskip("returnn.sprint.error_signals", reason=extra_reason("returnn.sprint.error_signals"))

REPO = Path(__file__).resolve().parents[2]
CORPUS = {"synthetic": 4, "seed": 9, "min-frames": 8, "max-frames": 30}


@pytest.fixture
def emulator_exec(tmp_path) -> str:
    """RETURNN execs sprintExecPath directly: a wrapper script that runs the emulator module."""
    wrapper = tmp_path / "nn-trainer"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sprint_control.emulator "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


FLOWS = {
    "A": "--*.action=python-control --*.python-control-loop-type=iterate-corpus",
    "B": "--*.action=supervised-segmentwise-training --*.input-in-log-space=true",
}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_returnn_parent_drives_our_child(emulator_exec, flow):
    config = " ".join([
        "--*.pymod-name=sprint_control", f"--*.pymod-path={REPO}",
        "--*.python-segment-order-pymod-name=sprint_control", f"--*.python-segment-order-pymod-path={REPO}",
        FLOWS[flow], "--*.training-criterion=ctc",
        *(f"--*.corpus.{k}={v}" for k, v in CORPUS.items()),
    ])
    inst = error_signals.SprintSubprocessInstance(sprintExecPath=emulator_exec, sprintConfigStr=config)
    try:
        corpus = emu_corpus.synthetic_corpus(CORPUS["synthetic"], seed=CORPUS["seed"],
                                             min_frames=CORPUS["min-frames"], max_frames=CORPUS["max-frames"])
        rng = np.random.default_rng(7)
        for seg in corpus.segments:
            post = random_log_posteriors(rng, seg.num_frames, criteria.num_labels("ctc"))
            inst.get_loss_and_error_signal__send(seg.name, seg.num_frames, post)
            name, loss, err = inst.get_loss_and_error_signal__read()
            exp_loss, exp_err = criteria.compute_criterion("ctc", post, orthography=seg.orthography)
            assert name == seg.name
            assert loss == pytest.approx(exp_loss, rel=1e-4)
            assert err.dtype == np.float32 and err.shape == post.shape
            np.testing.assert_allclose(err, exp_err, atol=1e-4)
        # RETURNN's own orderly shutdown: sends ("exit",) and asserts the child's exit status is 0
        inst._exit_child(should_interrupt=False)
        assert inst.child_pid is None
    finally:
        if inst.child_pid:
            try:
                os.kill(inst.child_pid, 9)
                os.waitpid(inst.child_pid, 0)
            except OSError:
                pass
            inst.child_pid = None
