"""RETURNN's own TF training with ``loss="sprint"`` on two Sprint instances (the emulator), the config
starting with ``sprint_control.returnn.install()``. Needs TensorFlow; skipped without it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy
import pytest
from returnn_helpers import REPO, tensorflow_available
from support import extra_reason

pytest.importorskip("returnn", reason=extra_reason("returnn"))
if not tensorflow_available():
    pytest.skip(extra_reason("tensorflow"), allow_module_level=True)

NUM_SEQS, SEQ_LEN, LABELS = 8, 20, 11  # the emulator's CTC: 10 symbols + blank

CONFIG = """#!rnn.py
import sprint_control.returnn
sprint_control.returnn.install()
from sprint_control.parent import emulator_command

use_tensorflow = True
task = "train"
train = {{"class": "DummyDataset", "input_dim": 5, "output_dim": {labels}, "num_seqs": {num_seqs},
          "seq_len": {seq_len}}}
extern_data = {{"data": {{"dim": 5}}, "classes": {{"dim": {labels}, "sparse": True}}}}
sprint_opts = {{"sprintExecPath": emulator_command(), "numInstances": 2,
               "sprintConfigStr": "--*.corpus.file={corpus} --*.training-criterion=ctc --*.log-level=warning"}}
network = {{"output": {{"class": "softmax", "from": "data", "n_out": {labels}, "loss": "sprint",
                       "loss_opts": {{"sprint_opts": sprint_opts}}}}}}
num_epochs = 2
batch_size = 1000
learning_rate = 0.01
model = {model!r}
learning_rate_file = {lr_file!r}
log_verbosity = 3


def _report_pools():  # which pools computed RETURNN's loss, and on which protocol
    import json
    from sprint_control.returnn import ReturnnInstancePool
    pools = list(ReturnnInstancePool.global_instances.values())
    with open({report!r}, "w") as f:
        json.dump([{{"protocol": p.protocol, "segments": sum(i.segments_done for i in p.instances)}}
                   for p in pools], f)


import atexit
atexit.register(_report_pools)
"""


def test_returnn_trains_with_the_sprint_loss_through_the_installed_pool(tmp_path):
    corpus = tmp_path / "corpus.txt"  # DummyDataset's tags are seq-0, seq-1, ...
    corpus.write_text("".join(f"seq-{i}\t{SEQ_LEN}\t{'abcdefghij'[i % 10]}{'ab'[i % 2]} c\n" for i in range(NUM_SEQS)))
    lr_file = tmp_path / "lr.txt"
    config = tmp_path / "returnn.config"
    config.write_text(CONFIG.format(labels=LABELS, num_seqs=NUM_SEQS, seq_len=SEQ_LEN, corpus=corpus,
                                    model=str(tmp_path / "model"), lr_file=str(lr_file),
                                    report=str(tmp_path / "pools.json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "returnn", str(config)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # RETURNN writes the file as a Python expression and reads it back with eval, as here
    scores = eval(lr_file.read_text(), {"EpochData": dict, "nan": math.nan, "inf": math.inf, "np": numpy})
    for epoch in (1, 2):  # "train_score" or per loss "train_score_output", by RETURNN version
        train = {k: v for k, v in scores[epoch]["error"].items() if k.startswith("train_score")}
        assert train and all(math.isfinite(v) and v > 0 for v in train.values()), scores[epoch]
    # the loss came from this package's pool, on protocol 2, over every sequence of both epochs
    pools = json.loads((tmp_path / "pools.json").read_text())
    assert [p["protocol"] for p in pools] == [2]
    assert pools[0]["segments"] == 2 * NUM_SEQS
