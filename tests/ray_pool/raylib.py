"""Helpers of the Ray pool tests: a batch of the emulator's synthetic corpus, the local pool's answer
to it (the reference), and process checks."""

from __future__ import annotations

import os
import socket
import time

import numpy as np

from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
N_SEGMENTS = 8
SEED = 5
CORPUS = synthetic_corpus(N_SEGMENTS, seed=SEED, min_frames=10, max_frames=40, max_symbols=3)
EMULATOR_ARGS = [
    f"--*.corpus.synthetic={N_SEGMENTS}",
    f"--*.corpus.seed={SEED}",
    "--*.corpus.min-frames=10",
    "--*.corpus.max-frames=40",
    "--*.corpus.max-symbols=3",
    "--*.training-criterion=ctc",
    "--*.log-level=warning",
]
def require_loopback_only() -> None:
    """Skips unless loopback is this network namespace's only interface.

    Ray's servers listen on every interface whatever node address they are given, so its tests run
    only where nothing but loopback can reach them: ``.ci/run`` runs the suite under ``unshare -n``;
    by hand: ``unshare -n sh -c 'ip link set lo up; python -m pytest tests/ray_pool'`` (as root).
    """
    import pytest

    others = sorted(name for _, name in socket.if_nameindex() if name != "lo")
    if others:
        pytest.skip(f"Ray would listen on {', '.join(others)} too: run in a namespace with loopback only"
                    " (unshare -n), as .ci/run does")


#: the label the test cluster's one node carries (node_label tests select on it)
NODE_LABEL = {"sprint-test": "yes"}
TAGS = [s.name for s in CORPUS.segments]
NUM_LABELS = criteria.num_labels("ctc")


def batch(segments=None, seed=0, empty=()):
    """Log-posteriors (time, batch, label), lengths and tags of some corpus segments; the indices in
    ``empty`` get length 0 (a padding-only sequence)."""
    idx = list(range(N_SEGMENTS)) if segments is None else list(segments)
    lengths = [0 if i in empty else CORPUS.segments[i].num_frames for i in idx]
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(NUM_LABELS), size=(max(lengths) + 3, len(idx)))
    return np.log(probs).astype(np.float32), lengths, [TAGS[i] for i in idx]


def faulty_env(**faults):
    """The children's environment: this one (so they import this checkout) plus the faults of
    ``dying_module`` (``RAY_FAULT_EXIT=segment`` etc.)."""
    env = dict(os.environ)
    env.update({f"RAY_FAULT_{k.upper()}": v for k, v in faults.items()})
    return env


def faulty_options(**faults):
    """SprintPool options that load ``dying_module`` with these faults."""
    return dict(module_name="dying_module", module_path=HERE, env=faulty_env(**faults))


def running(pid) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, within=15.0) -> set:
    """The pids still running after waiting up to ``within`` seconds for them to end."""
    deadline = time.monotonic() + within
    left = {p for p in pids if p}
    while left and time.monotonic() < deadline:
        left = {p for p in left if running(p)}
        time.sleep(0.05)
    return left
