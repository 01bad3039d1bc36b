"""What the RETURNN tests share: the emulator's corpus, RETURNN-style ``sprint_opts``, a batch in
RETURNN's layout, the expected results computed in-process, and a runner for scripts in a fresh
interpreter (optionally with the TensorFlow stand-in, so ``returnn.tf.sprint`` imports)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.parent import emulator_command

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STUB_TF = os.path.join(HERE, "stub_tf")

NUM_SEGMENTS = 6
SEED = 3
CRITERION = "ctc"
CORPUS = synthetic_corpus(NUM_SEGMENTS, seed=SEED, max_frames=40)
EMULATOR_ARGS = (f"--*.corpus.synthetic={NUM_SEGMENTS} --*.corpus.seed={SEED} --*.corpus.max-frames=40"
                 f" --*.training-criterion={CRITERION} --*.log-level=warning")


def sprint_opts(num_instances: int = 2, extra: str = "") -> dict:
    """``sprint_opts`` as a RETURNN config gives them (the emulator as Sprint)."""
    return {"sprintExecPath": emulator_command(), "sprintConfigStr": f"{EMULATOR_ARGS} {extra}".strip(),
            "numInstances": num_instances}


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(time, batch, label) float32 log-posteriors, (batch,) lengths and the tags, with padding."""
    rng = np.random.default_rng(seed)
    lengths = np.array([s.num_frames for s in CORPUS.segments], dtype=np.int32)
    a = rng.standard_normal((int(lengths.max()) + 2, len(lengths), criteria.num_labels(CRITERION))) * 2.0
    a -= a.max(axis=-1, keepdims=True)
    log_post = (a - np.log(np.exp(a).sum(axis=-1, keepdims=True))).astype(np.float32)
    return log_post, lengths, [s.name for s in CORPUS.segments]


def check_batch_result(log_post: np.ndarray, lengths: np.ndarray, loss: np.ndarray, err: np.ndarray) -> None:
    """Compares a batch's loss and error signal with the emulator's criterion computed here."""
    assert loss.shape == (len(lengths),) and err.shape == log_post.shape
    for b, seg in enumerate(CORPUS.segments):
        t = int(lengths[b])
        exp_loss, exp_err = criteria.compute_criterion(CRITERION, log_post[:t, b], orthography=seg.orthography)
        np.testing.assert_allclose(loss[b], exp_loss, rtol=1e-5)
        np.testing.assert_allclose(err[:t, b], exp_err, atol=1e-5)
        assert not err[t:, b].any()


def check_automata(edges: np.ndarray, weights: np.ndarray, start_end: np.ndarray) -> None:
    """Compares a batch automaton with the emulator's automata merged here."""
    offset = pos = 0
    for b, seg in enumerate(CORPUS.segments):
        ref = criteria.automaton(CRITERION, seg.orthography)
        sl = slice(pos, pos + ref.num_edges)
        np.testing.assert_array_equal(edges[0, sl], ref.edges_from + offset)
        np.testing.assert_array_equal(edges[1, sl], ref.edges_to + offset)
        np.testing.assert_array_equal(edges[2, sl], ref.edges_label)
        assert (edges[3, sl] == b).all()
        np.testing.assert_array_equal(weights[sl], ref.weights)
        assert tuple(start_end[:, b]) == (offset, offset + ref.num_states - 1)
        offset += ref.num_states
        pos += ref.num_edges
    assert edges.shape[1] == pos


def run_script(code: str, stub_tf: bool = False, timeout: float = 180) -> dict:
    """Runs ``code`` in a fresh interpreter (this tree first on the path); it prints one JSON line last."""
    paths = ([STUB_TF] if stub_tf else []) + [REPO, HERE, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tensorflow_available() -> bool:
    """Whether the real TensorFlow is installed (found, not imported: importing it is slow)."""
    return importlib.util.find_spec("tensorflow") is not None
