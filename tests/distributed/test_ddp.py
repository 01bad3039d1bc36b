"""The torch.distributed recipe of docs/distributed.md: two ranks (gloo, CPU, each its own process and
its own SprintPool on the emulator) train a few steps with sprint_loss; gradients are all-reduced,
nothing collides between the ranks, and one rank's child failure surfaces on that rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from support import extra_reason

pytest.importorskip("torch", reason=extra_reason("torch"))
dist = pytest.importorskip("torch.distributed", reason=extra_reason("torch.distributed"))
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(tmp_path, mode: str):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "ddp_rank.py"), str(r), str(WORLD), str(port),
                               str(tmp_path), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(WORLD)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, err))
    reports = []
    for r in range(WORLD):
        with open(tmp_path / f"rank{r}.json") as f:
            reports.append(json.load(f))
    return outs, reports


def test_two_ranks_train_with_all_reduced_gradients_and_no_collisions(tmp_path):
    outs, reports = _run_ranks(tmp_path, "train")
    for rc, err in outs:
        assert rc == 0, err
    r0, r1 = reports
    # DDP's all-reduced gradient is the average of the ranks' own gradients (gathered by hand)
    for rep in reports:
        assert len(rep["grad_diff"]) == 3 and max(rep["grad_diff"]) < 1e-5, rep["grad_diff"]
    assert r0["losses"] != r1["losses"]  # the ranks saw different shards
    assert r0["params"] == r1["params"]  # and stayed in step
    # each rank its own child and its own shared region (anonymous: no name to collide on)
    assert r0["child_pid"] != r1["child_pid"] and r0["pid"] != r1["pid"]
    assert r0["uses_shared_memory"] and r1["uses_shared_memory"]


def test_one_rank_s_child_failure_surfaces_on_that_rank(tmp_path):
    outs, reports = _run_ranks(tmp_path, "fail")
    assert all(rc != 0 for rc, _ in outs)
    own, other = reports[1]["error"], reports[0]["error"]
    assert own["type"] == "SprintChildError", own
    assert own["message"].startswith(f"Sprint child (pid {reports[1]['child_pid']}) was killed by SIGKILL while")
    assert other == {"type": "RuntimeError", "message": "rank 0: the Sprint loss failed on rank(s) [1] at step 1;"
                                                        " all ranks stop together"}
    assert len(reports[0]["losses"]) == len(reports[1]["losses"]) == 1  # both trained step 0, then stopped
