"""RETURNN's own PyTorch training loop (``backend = "torch"``) with RASR's criteria from
``sprint_control.returnn_torch``: a tiny model trained for 2 epochs on the emulator as Sprint. Each epoch's scores
equal the same losses computed here directly with ``sprint_control.torch`` on the logits RETURNN's steps saw, and
the run leaves no child behind."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys

import numpy
import pytest

pytest.importorskip("returnn", reason='needs the returnn extra: pip install "sprint_control[returnn]"')
torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')
# RETURNN's frontend imports dm-tree ("tree"), which RETURNN does not require
pytest.importorskip("tree", reason='needs the returnn-torch extra: pip install "sprint_control[returnn-torch]"')
from returnn_helpers import REPO  # noqa: E402

from sprint_control.emulator.builder import AllophoneStateFsaBuilder  # noqa: E402
from sprint_control.parent import SprintPool, emulator_command  # noqa: E402
from sprint_control.torch import automata_for_batch, fullsum_loss, sprint_loss  # noqa: E402

NUM_SEQS, FEATURES, LABELS = 6, 4, 11  # the emulator's CTC: 10 symbols + blank
LENGTHS = [14, 9, 12, 16, 10, 13]
HMM_ARGS = "--*.training-criterion=fsa --*.lexicon.states-per-symbol=1 --*.log-level=warning"

CONFIG = """#!rnn.py
import atexit
import pickle

import numpy
import torch

backend = "torch"
task = "train"
_rng = numpy.random.RandomState(1)
train = {{"class": "StaticDataset", "input_dim": {features},
          "data": [{{"data": _rng.randn(n, {features}).astype("float32")}} for n in {lengths!r}]}}
extern_data = {{"data": {{"dim": {features}}}}}
sprint_opts = {{"sprintExecPath": {exec_path!r}, "numInstances": 2, "minPythonControlVersion": 4,
               "sprintConfigStr": "--*.corpus.file={corpus} --*.training-criterion=ctc --*.log-level=warning"}}
# the full-sum over other automata (HMM, one state per symbol: 10 + silence = 11 labels too), from its own pool
fullsum_opts = {{"sprintExecPath": {exec_path!r}, "numInstances": 1,
                "sprintConfigStr": "--*.corpus.file={corpus} {hmm_args}"}}
num_epochs = 2
batch_size = 40
max_seqs = 3
optimizer = {{"class": "sgd"}}
learning_rate = 0.05
model = {model!r}
learning_rate_file = {lr_file!r}
log_verbosity = 3
torch_dataloader_opts = {{"num_workers": 0}}


def get_model(**_kwargs):
    torch.manual_seed(0)
    return torch.nn.Linear({features}, {labels})


_records = []


def train_step(*, model, extern_data, **_kwargs):
    import returnn.frontend as rf
    from returnn.tensor import Dim, Tensor
    from sprint_control import returnn_torch

    data = extern_data["data"]
    batch_dim, time_dim = data.dims[0], data.dims[1]
    label_dim = Dim({labels}, name="labels")
    logits = Tensor("logits", dims=[batch_dim, time_dim, label_dim], dtype="float32", feature_dim=label_dim,
                    raw_tensor=model(data.raw_tensor))
    tags = extern_data["seq_tag"]
    sprint = returnn_torch.sprint_loss(logits, sprint_opts=sprint_opts, seq_tags=tags)
    fullsum = returnn_torch.fullsum_loss(logits, sprint_opts=fullsum_opts, seq_tags=tags)
    rf.get_run_ctx().mark_as_loss(sprint, "sprint")
    rf.get_run_ctx().mark_as_loss(fullsum, "fullsum", scale=0.5)
    pools = [returnn_torch.get_global_pool(opts) for opts in (sprint_opts, fullsum_opts)]
    _records.append({{"epoch": int(rf.get_run_ctx().epoch),
                     "logits": logits.raw_tensor.detach().numpy().copy(),
                     "lengths": time_dim.dyn_size_ext.raw_tensor.numpy().copy(),
                     "tags": [str(t) for t in tags.raw_tensor.tolist()],
                     "pids": [i.child_pid for p in pools for i in p.instances]}})


@atexit.register
def _dump():
    with open({records!r}, "wb") as f:
        pickle.dump(_records, f)
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie or a vanished pid does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _epoch_scores(lr_file) -> dict:
    # RETURNN writes the file as a Python expression and reads it back with eval, as here
    return eval(lr_file.read_text(), {"EpochData": dict, "nan": math.nan, "inf": math.inf, "np": numpy})


def test_returnn_torch_engine_trains_with_sprint_and_fullsum_losses(tmp_path):
    corpus = tmp_path / "corpus.txt"  # StaticDataset's tags are seq-0, seq-1, ...
    corpus.write_text("".join(f"seq-{i}\t{n}\t{'abcdefghij'[i % 10]}{'ab'[i % 2]} c\n"
                              for i, n in enumerate(LENGTHS)))
    lr_file, records = tmp_path / "lr.txt", tmp_path / "records.pkl"
    config = tmp_path / "returnn.config"
    config.write_text(CONFIG.format(features=FEATURES, labels=LABELS, lengths=LENGTHS, corpus=corpus,
                                    exec_path=emulator_command(), hmm_args=HMM_ARGS, model=str(tmp_path / "model"),
                                    lr_file=str(lr_file), records=str(records)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "returnn", str(config)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    steps = pickle.loads(records.read_bytes())
    pids = {p for s in steps for p in s["pids"]}
    assert len(pids) == 3 and not any(_alive(p) for p in pids), pids  # one pool per sprint_opts: 2 + 1, all gone
    scores = _epoch_scores(lr_file)

    # the same losses, directly: RASR's criterion from a fresh pool of emulator children, the full-sum over
    # automata from the in-process builder (no child)
    args = [f"--*.corpus.file={corpus}", "--*.training-criterion=ctc", "--*.log-level=warning"]
    builder = AllophoneStateFsaBuilder(f"--*.corpus.file={corpus} {HMM_ARGS}")
    with SprintPool(1, emulator_command(), args, timeout=60) as pool:
        for epoch in (1, 2):
            epoch_steps = [s for s in steps if s["epoch"] == epoch]
            assert sorted(t for s in epoch_steps for t in s["tags"]) == sorted(f"seq-{i}" for i in range(NUM_SEQS))
            sums = {"sprint": 0.0, "fullsum": 0.0}
            for s in epoch_steps:
                logits = torch.from_numpy(s["logits"]).transpose(0, 1)  # (time, batch, label)
                lens = torch.from_numpy(s["lengths"])
                assert sorted(lens.tolist()) == sorted(LENGTHS[int(t[4:])] for t in s["tags"])
                sums["sprint"] += float(sprint_loss(logits, lens, s["tags"], pool).sum())
                automaton = automata_for_batch(s["tags"], builder)
                sums["fullsum"] += float(fullsum_loss(logits.log_softmax(-1), lens, automaton).sum())
            reported = scores[epoch]["error"]
            assert abs(sums["sprint"] - sums["fullsum"]) > 1e-3 * sums["sprint"]  # two different criteria
            for name, total in sums.items():
                # RETURNN's epoch score of a [batch] loss: its sum over the epoch / the number of sequences
                assert math.isfinite(total)
                key = next(k for k in (f"train_loss_{name}", f"train_score_{name}") if k in reported)  # by version
                assert reported[key] == pytest.approx(total / NUM_SEQS, rel=1e-5), (name, reported)
    # training moved the model: epoch 2 saw other logits than epoch 1
    first = {t: s["logits"][b] for s in steps if s["epoch"] == 1 for b, t in enumerate(s["tags"])}
    second = {t: s["logits"][b] for s in steps if s["epoch"] == 2 for b, t in enumerate(s["tags"])}
    assert not numpy.allclose(first["seq-0"], second["seq-0"])
    assert json.dumps(sorted(first)) == json.dumps(sorted(second))
