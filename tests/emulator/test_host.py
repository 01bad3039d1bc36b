"""The emulator as a child process driving the scripted fake module: RASR's calls, arguments, order,
and critical errors (exit status 1)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.emulator.criteria import compute_criterion

SYN = ["--*.corpus.synthetic=3", "--*.corpus.max-frames=40", "--*.corpus.seed=5"]
CORPUS = synthetic_corpus(3, seed=5, max_frames=40)
INIT_KEYS = ["callback", "config", "name", "reference", "sprint_unit", "version_number"]


def ok(run):
    assert run.returncode == 0, run.stderr
    return run


def test_control_loop(run_emulator):
    seg = CORPUS.segments[1].name
    run = ok(run_emulator(*SYN, "--*.foo=1", "--*.foo=2", config=f"seg:{seg}"))
    assert run.names() == ["init", "run_control_loop", "control_loop_results", "exit"]
    init = run.of("init")[0]
    assert init["keys"] == INIT_KEYS
    assert init["name"] == "Sprint.PythonControl"
    assert init["sprint_unit"] == "NnTrainer.pythonControl"
    assert init["reference"]["type"] == "PyCapsule" and "Sprint.PythonControl.Internal" in init["reference"]["repr"]
    assert init["version_number"] == 5
    assert init["config"].startswith("record:")
    assert run.of("run_control_loop")[0]["same_callback"] is True
    res = run.of("control_loop_results")[0]
    assert res["version_number"] == 5 and res["init_criterion"] is None
    assert res["errors"] == {
        "unknown": "ValueError",
        "bytes_orth": "TypeError",
        "unknown_seg": "KeyError",
        "no_cmd": "TypeError",
    }
    assert res["orth"] == CORPUS.segments[1].orthography
    n, e, edges, weights = res["fsa"]
    assert edges["dtype"] == "uint32" and edges["shape"] == [3 * e]
    assert weights["dtype"] == "float32" and weights["shape"] == [e]
    # an unknown option is kept, ignored and reported once
    assert run.stderr.count("ignoring unknown option --*.foo") == 1


def test_old_rasr_without_version_number(run_emulator):
    run = ok(run_emulator(*SYN, "--*.version-number=none"))
    init = run.of("init")[0]
    assert init["keys"] == ["config", "name", "reference", "sprint_unit"]
    assert run.of("run_control_loop")[0]["callback"]["type"] == "Callback"


def test_version_number_configurable(run_emulator):
    run = ok(run_emulator(*SYN, "--*.version-number=4"))
    assert run.of("init")[0]["version_number"] == 4
    assert run.of("control_loop_results")[0]["version_number"] == 4


@pytest.mark.parametrize(
    "config,message",
    [
        ("init:none", "init() returned None"),
        ("init:raise", "RuntimeError: init failed on purpose"),
        ("loop:raise", "RuntimeError: control loop failed on purpose"),
    ],
)
def test_module_failures_are_critical(run_emulator, config, message):
    run = run_emulator(*SYN, config=config)
    assert run.returncode == 1
    assert message in run.stderr
    assert "critical error" in run.stderr


def test_import_errors(run_emulator):
    run = run_emulator(*SYN, module="no_such_module_here")
    assert run.returncode == 1
    assert "ModuleNotFoundError" in run.stderr and "cannot import module 'no_such_module_here'" in run.stderr
    run = run_emulator(*SYN, "--*.pymod-name=")
    assert run.returncode == 1 and "need Python module name" in run.stderr


def test_bad_argument_is_critical(run_emulator):
    run = run_emulator("--*.python-segment-order=perhaps")
    assert run.returncode == 1 and "expected a boolean" in run.stderr


def test_iterate_corpus_with_segment_order(run_emulator):
    run = ok(
        run_emulator(
            *SYN, "--*.python-control-loop-type=iterate-corpus", "--*.python-segment-order=true", config="order:reverse"
        )
    )
    names = run.names()
    assert names[:2] == ["init", "getSegmentList"]
    assert names[-1] == "exit"
    gsl = run.of("getSegmentList")[0]
    assert gsl["corpusName"] == "synthetic"
    assert gsl["segmentList"]["items"] == CORPUS.names
    assert gsl["segmentsInfo"]["len"] == 3
    assert gsl["extra"] == ["segmentsInfo"]
    assert gsl["config"].startswith("record:")  # defaults to pymod-config
    # init_processing exactly once, before the first process_segment
    assert names.count("init_processing") == 1
    assert names.index("init_processing") < names.index("process_segment")
    ip = run.of("init_processing")[0]
    assert ip["input_dim"] == 40 and ip["output_dim"] == -1
    segs = run.of("process_segment")
    assert [s["name"] for s in segs] == CORPUS.names[::-1]
    for ev, seg in zip(segs, CORPUS.segments[::-1]):
        assert ev["orthography"] == {"type": "bytes", "value": seg.orthography}
        assert ev["speaker_name"] == seg.speaker
        f = ev["features"]
        assert f["dtype"] == "float32" and f["shape"] == [40, seg.num_frames] and f["f_contiguous"]
        assert ev["alignment"] is None and ev["soft_alignment"] is None
    crits = run.of("criterion")
    for ev, seg in zip(crits, CORPUS.segments[::-1]):
        T = seg.num_frames
        rng = np.random.default_rng(T)  # what the fake module sends
        a = rng.standard_normal((T, 11))
        lp = (a - np.log(np.exp(a).sum(1, keepdims=True))).astype(np.float32)
        want, _ = compute_criterion("ctc", lp, orthography=seg.orthography)
        assert ev["loss"] == pytest.approx(want, rel=1e-5)
        es = ev["error_signal"]
        assert es["dtype"] == "float32" and es["shape"] == [11, T] and es["f_contiguous"]


def test_iterate_corpus_in_corpus_order_without_segment_order(run_emulator):
    run = ok(run_emulator(*SYN, "--*.python-control-loop-type=iterate-corpus", "--*.extract-alignments=true"))
    assert "getSegmentList" not in run.names()
    assert [s["name"] for s in run.of("process_segment")] == CORPUS.names
    assert run.of("init_processing")[0]["output_dim"] == 31
    al = run.of("process_segment")[0]["alignment"]
    assert al["dtype"] == "uint32" and al["shape"] == [CORPUS.segments[0].num_frames]


def test_segment_order_separate_config_and_bytes_names(run_emulator):
    run = ok(
        run_emulator(
            *SYN,
            "--*.python-control-loop-type=iterate-corpus",
            "--*.python-segment-order=true",
            "--*.python-segment-order-config=order:bytes",
            config="order:bytes",
        )
    )
    assert run.of("getSegmentList")[0]["config"] == "order:bytes"
    assert [s["name"] for s in run.of("process_segment")] == CORPUS.names[:2]


def test_unknown_segment_is_skipped_with_an_error_line(run_emulator):
    run = ok(
        run_emulator(
            *SYN, "--*.python-control-loop-type=iterate-corpus", "--*.python-segment-order=true", config="order:unknown"
        )
    )
    assert [s["name"] for s in run.of("process_segment")] == CORPUS.names[:1]
    assert "'not/a/segment'" in run.stderr and "error:" in run.stderr


def test_cross_entropy_error_signal_is_fatal_inside_the_callback(run_emulator):
    run = run_emulator(
        *SYN,
        "--*.python-control-loop-type=iterate-corpus",
        "--*.training-criterion=cross-entropy",
        config="labels:31,criterion_out:error-signal",
    )
    assert run.returncode == 1
    assert "cross-entropy" in run.stderr and "critical error" in run.stderr
    assert "exit" not in run.names()


def test_cross_entropy_before_softmax_works(run_emulator):
    run = ok(
        run_emulator(
            *SYN,
            "--*.python-control-loop-type=iterate-corpus",
            "--*.training-criterion=cross-entropy",
            config="labels:31,criterion_out:error-signal-before-softmax",
        )
    )
    assert len(run.of("criterion")) == 3 and all(c["loss"] > 0 for c in run.of("criterion"))


def _flow_b_expected_losses(space="log"):
    """What flow B must report: the fake layer is a fixed linear map + log-softmax."""
    L, D = 11, 40
    W = np.random.default_rng(0).standard_normal((L, D)) * 0.1
    out = []
    for seg in CORPUS:
        a = W @ seg.features.T
        logp = (a - np.log(np.exp(a).sum(0, keepdims=True))).astype(np.float32)
        lp = logp.T if space == "log" else np.log(np.exp(logp).astype(np.float32)).T
        out.append(compute_criterion("ctc", lp, orthography=seg.orthography))
    return out


def test_segmentwise_training(run_emulator):
    run = ok(
        run_emulator(
            *SYN,
            "--*.action=supervised-segmentwise-training",
            "--*.python-control-enabled=true",
            "--*.python-segment-order=true",
        )
    )
    names = run.names()
    assert names[0] == "init" and run.of("init")[0]["sprint_unit"] == "SegmentwiseNnTrainer"
    setup = [
        "layer_init",
        "setInputDimension",
        "setOutputDimension",
        "initializeNetworkParameters",
        "isTrainable",
        "getNumberOfFreeParameters",
    ]
    assert [n for n in names if n in setup] == setup
    assert run.of("setInputDimension")[0] == {**run.of("setInputDimension")[0], "stream": 0, "size": 40}
    assert run.of("setOutputDimension")[0]["size"] == 11
    per_segment = [n for n in names if n in ("init_segment", "forward", "notify_segment_loss", "backpropagate")]
    assert per_segment == ["init_segment", "forward", "notify_segment_loss", "backpropagate"] * 3
    assert names[-2:] == ["finalize", "exit"]
    assert [e["segment_name"] for e in run.of("init_segment")] == CORPUS.names
    fwd = run.of("forward")[0]["input"]
    assert fwd["type"] == "list" and fwd["items"][0]["shape"] == [40, CORPUS.segments[0].num_frames]
    assert fwd["items"][0]["f_contiguous"] and fwd["items"][0]["dtype"] == "float32"
    expected = _flow_b_expected_losses()
    for ev, bp, (loss, err), seg in zip(run.of("notify_segment_loss"), run.of("backpropagate"), expected, CORPUS):
        assert ev["segment_name"] == seg.name
        assert ev["loss"] == pytest.approx(loss, rel=1e-5)
        es = bp["errorSignalIn"]
        assert es["dtype"] == "float32" and es["shape"] == [11, seg.num_frames] and es["f_contiguous"]
        assert bp["sum"] == pytest.approx(float(err.sum()), abs=1e-3)


def test_segmentwise_training_probabilities_and_no_python_control(run_emulator):
    run = ok(
        run_emulator(
            *SYN, "--*.action=supervised-segmentwise-training", "--*.input-in-log-space=false", config="space:prob"
        )
    )
    names = run.names()
    for n in ("init", "init_segment", "notify_segment_loss", "exit"):
        assert n not in names
    assert names.count("backpropagate") == 3 and names[-1] == "finalize"
    assert "trained on 3 segments" in run.stderr


@pytest.mark.parametrize(
    "layer,message",
    [
        ("bad_trainable", "isTrainable() must return a bool"),
        ("bad_forward", "forward() must return a float32"),
        ("bad_backprop", "backpropagate() must return a tuple"),
        ("raise_forward", "ValueError: forward failed on purpose"),
    ],
)
def test_segmentwise_training_refuses_bad_layers(run_emulator, layer, message):
    run = run_emulator(*SYN, "--*.action=supervised-segmentwise-training", config=f"layer:{layer}")
    assert run.returncode == 1
    assert message in run.stderr
    assert "finalize" not in run.names()


def test_segmentwise_discarded_segment_gets_no_loss(run_emulator, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("s/1\t30\tab\ns/short\t2\tabcd\ns/3\t25\tc\n")
    run = ok(
        run_emulator(
            f"--*.corpus.file={corpus}", "--*.action=supervised-segmentwise-training", "--*.python-control-enabled=true"
        )
    )
    assert [e["segment_name"] for e in run.of("init_segment")] == ["s/1", "s/short", "s/3"]
    assert [e["segment_name"] for e in run.of("notify_segment_loss")] == ["s/1", "s/3"]
    assert len(run.of("backpropagate")) == 2
    assert "discarded 1" in run.stderr


def test_segmentwise_cross_entropy_needs_probabilities(run_emulator):
    run = run_emulator(*SYN, "--*.action=supervised-segmentwise-training", "--*.training-criterion=cross-entropy")
    assert run.returncode == 1 and "input-in-log-space=false" in run.stderr


def test_quiet(run_emulator):
    run = ok(run_emulator(*SYN, "--*.quiet=true", "--*.foo=1"))
    assert "[emulator]" not in run.stderr


def test_console_script_and_help():
    exe = shutil.which("sprint-control-emulator")
    assert exe, "the sprint-control-emulator console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--*.training-criterion" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "sprint_control.emulator", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--*.corpus.synthetic" in proc.stdout


def test_segment_order_from_another_module(run_emulator, tmp_path):
    rec = tmp_path / "order.jsonl"
    run = ok(
        run_emulator(
            *SYN,
            "--*.python-control-loop-type=iterate-corpus",
            "--*.python-segment-order=true",
            "--*.python-segment-order-pymod-name=fake_order",
            f"--*.python-segment-order-config=record:{rec}",
        )
    )
    assert "getSegmentList" not in run.names()  # the main module's one is not used
    assert [s["name"] for s in run.of("process_segment")] == CORPUS.names[::2]
    assert [e["event"] for e in map(__import__("json").loads, rec.read_text().splitlines())] == [
        "fake_order.getSegmentList"
    ]


@pytest.mark.parametrize(
    "order,message",
    [("ints", "segment names must be str, got int"), ("raise", "RuntimeError: segment list failed on purpose")],
)
def test_bad_segment_lists_are_critical(run_emulator, order, message):
    run = run_emulator(
        *SYN, "--*.python-control-loop-type=iterate-corpus", "--*.python-segment-order=true", config=f"order:{order}"
    )
    assert run.returncode == 1 and message in run.stderr
    assert [s["name"] for s in run.of("process_segment")] == CORPUS.names[:1]
    assert "exit" not in run.names()


def test_iterate_corpus_without_features(run_emulator):
    run = run_emulator(*SYN, "--*.python-control-loop-type=iterate-corpus", "--*.extract-features=false")
    # the fake module needs features to build its posteriors: it fails, which is critical
    assert run.returncode == 1
    assert run.of("init_processing")[0]["input_dim"] == -1
    assert run.of("process_segment")[0]["features"] is None


def test_segmentwise_bench_with_many_labels(run_emulator):
    run = ok(
        run_emulator(
            *SYN,
            "--*.action=supervised-segmentwise-training",
            "--*.training-criterion=bench",
            "--*.corpus.num-labels=500",
        )
    )
    assert run.of("setOutputDimension")[0]["size"] == 500
    assert [b["errorSignalIn"]["shape"][0] for b in run.of("backpropagate")] == [500] * 3
