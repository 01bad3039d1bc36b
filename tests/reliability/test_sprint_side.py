"""Contract violations on the Sprint side: RASR hands the module an error signal of the wrong shape
or dtype, or works on another segment than the parent's. The module refuses each with a message
that reaches the parent (and raises in RASR's call), and keeps serving where RASR would carry on.

Through the real emulator (the faulty module corrupts what RASR's ``calculate_criterion`` returns)
and in-process with a scripted RASR of flow B (the PythonLayer's ``backpropagate``)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from rel_helpers import EMULATOR_ARGS, FAULTY_MODULE, HERE, pythonpath

from sprint_control import SprintChildError, SprintPool, SprintRemoteError, control
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.errors import SprintControlError
from sprint_control.parent import emulator_command
from sprint_control.wire import protocol

CORPUS = synthetic_corpus(8, seed=3, max_frames=30)
LABELS = criteria.num_labels("ctc")
SEG0 = CORPUS.segments[0]  # 30 frames


def _post(seg, seed=0):
    x = np.random.default_rng(seed).standard_normal((seg.num_frames, 1, LABELS)).astype(np.float32)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


BAD_ERROR_SIGNALS = {
    "transposed": r"calculate_criterion returned an error signal of shape \(30, 11\), expected \(label, time\) = "
                  r"\(11, 30\)",
    "short": r"error signal of shape \(11, 29\), expected \(label, time\) = \(11, 30\)",
    "scalar": r"error signal of shape \(\), expected \(label, time\)",
    "complex": "calculate_criterion gave an error signal of dtype complex64; expected float32",
    "text": "calculate_criterion gave an error signal of dtype <U1; expected float32",
}


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("kind", sorted(BAD_ERROR_SIGNALS))
@pytest.mark.parametrize("proto", [1, 2])
def test_bad_error_signal_from_rasrs_criterion(kind, proto):
    env = {**os.environ, "PYTHONPATH": pythonpath(), "FAULTY_ERROR_SIGNAL": f"{SEG0.name}:{kind}"}
    with SprintPool(1, emulator_command(), EMULATOR_ARGS, module_name=FAULTY_MODULE, module_path=HERE, env=env,
                    protocol=proto) as pool:
        with pytest.raises(SprintRemoteError, match=BAD_ERROR_SIGNALS[kind]) as info:
            pool.compute(_post(SEG0), [SEG0.num_frames], [SEG0.name])
        assert BAD_ERROR_SIGNALS[kind].split(" ")[0].strip("r\\") in str(info.value).splitlines()[0]
        # the same child goes on with the next segment
        seg = CORPUS.segments[1]
        x = _post(seg, 1)
        res = pool.compute(x, [seg.num_frames], [seg.name])
        loss, err = criteria.compute_criterion("ctc", x[:, 0], orthography=seg.orthography)
        assert res.loss[0] == pytest.approx(loss, rel=1e-4) and pool.instances[0].restarts == 0


@pytest.mark.usefixtures("no_leaks")
def test_rasr_iterating_its_own_order_is_refused_at_start():
    """iterate-corpus without the python segment order: RASR processes its own first segment before
    the parent sent any; the module refuses it, RASR ends, and the parent's error says what to set."""
    with pytest.raises(SprintChildError) as info:
        SprintPool(1, sprint_args=EMULATOR_ARGS + ["--*.python-control-loop-type=iterate-corpus"],
                   use_python_segment_order=False)
    first = str(info.value).splitlines()[0]
    assert "process_segment got segment 'synthetic/rec0000/seg'" in first
    assert "--*.python-segment-order=true" in first


# -- in-process: a scripted RASR in flow B ---------------------------------------------------------


@pytest.fixture
def link():
    """(config for the module, the parent's Link); the module lives in this process."""
    control._forget_instance()
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    parent = protocol.Link(c2p_r, p2c_w, timeout=20.0)
    yield f"c2p_fd:{c2p_w},p2c_fd:{p2c_r}", parent
    parent.close()
    inst = control.PythonControl.instance
    if inst is not None:
        inst.exit()
        inst.close()
    else:
        os.close(c2p_w)
        os.close(p2c_r)
    control._forget_instance()


def _flow_b(config, steps, errors):
    """RASR's segment-wise trainer; ``steps(name, T)`` -> (name for init_segment, name for the loss,
    errorSignalIn). A failing call is recorded and RASR goes on with the next segment."""
    ctl = control.init(name="Sprint.PythonControl", reference=None, config=config, sprint_unit="SegmentwiseNnTrainer",
                       version_number=5, callback=lambda *a, **k: None)
    layer = control.SprintNnPythonLayer(config=config)
    layer.setInputDimension(0, 2)
    layer.setInputDimension(1, 3)
    layer.setOutputDimension(LABELS)
    assert type(layer.isTrainable()) is bool and layer.isTrainable()
    assert layer.getNumberOfFreeParameters() == 0
    for name in control.getSegmentList("corpus", [], config):
        try:
            init_name, loss_name, err_in = steps(name)
            ctl.init_segment(segment_name=init_name)
            out = layer.forward([np.zeros((2, 4), np.float32, order="F"), np.zeros((3, 4), np.float32, order="F")])
            assert out.shape[0] == LABELS
            ctl.notify_segment_loss(segment_name=loss_name, loss=1.5)
            grads = layer.backpropagate(errorSignalIn=err_in)
            # RASR's contract: a tuple, one zero (input size, time) matrix per input stream
            assert isinstance(grads, tuple) and [g.shape for g in grads] == [(2, out.shape[1]), (3, out.shape[1])]
            assert all(g.dtype == np.float32 and not g.any() for g in grads)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            errors.append((name, exc))


def _good(t):
    return np.asfortranarray(np.full((LABELS, t), 0.25, np.float32))


CASES = {
    # name: (RASR's step for the bad segment, error in RASR, message at the parent)
    "error signal of the wrong shape": (lambda n: (n, n, _good(4)[:, :3]), SprintControlError,
                                        "backpropagate: RASR's segment has 3 frames, the parent's 'bad' has 4"),
    "error signal with labels and time swapped": (lambda n: (n, n, np.asfortranarray(np.zeros((4, 4), np.float32))),
                                                  ValueError, r"error signal of shape \(4, 4\) does not match"),
    "complex error signal": (lambda n: (n, n, _good(4).astype(np.complex64)), TypeError,
                             "backpropagate gave an error signal of dtype complex64; expected float32"),
    "1-D error signal": (lambda n: (n, n, np.zeros(4, np.float32)), TypeError,
                         r"backpropagate expects a \(label, time\) matrix"),
    "init_segment of another segment": (lambda n: ("other", n, _good(4)), SprintControlError,
                                        "init_segment got segment 'other', but the parent's current segment is 'bad'"),
    "loss of another segment": (lambda n: (n, "other", _good(4)), SprintControlError,
                                "a loss for segment 'other' arrived, but the current segment is 'bad'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("proto", [1, 2])
def test_flow_b_contract_violation(link, case, proto):
    config, parent = link
    step, rasr_error, message = CASES[case]
    errors: list = []
    rasr = threading.Thread(target=_flow_b, args=(
        config, lambda n: step(n) if n == "bad" else (n, n, _good(4)), errors), daemon=True)
    rasr.start()
    parent.handshake(protocol=proto)
    x = np.zeros((4, LABELS), np.float32)
    parent.send_loss_request("bad", x)
    with pytest.raises(SprintRemoteError, match=message):
        parent.recv_loss_result(x.shape)
    parent.send_loss_request("good", x)  # the link keeps working
    loss, err = parent.recv_loss_result(x.shape)
    assert loss == 1.5 and np.all(err == 0.25)
    parent.send_exit()
    rasr.join(10.0)
    assert not rasr.is_alive()
    assert len(errors) == 1 and errors[0][0] == "bad" and isinstance(errors[0][1], rasr_error), errors
