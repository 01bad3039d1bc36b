"""The seed API surface, config parsing, version check, logging, types and failure reporting."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
from control_fakes import FakeSprintCallback, drive_flow_a, random_log_posteriors, sprint_init

import sprint_control
from sprint_control import control
from sprint_control.errors import SprintControlError, SprintRemoteError

SEED_METHODS = {
    "SprintNnPythonLayer": [
        "finalize", "setInputDimension", "setOutputDimension", "initializeNetworkParameters",
        "loadNetworkParameters", "saveNetworkParameters", "isTrainable", "getNumberOfFreeParameters",
        "forward", "backpropagate",
    ],
    "PythonControl": [
        "create", "init_processing", "process_segment", "close", "handle_next", "run_control_loop", "exit",
        "check_control_loop_running", "run_threaded_control_loop", "own_threaded_callback", "own_tcb_version",
        "own_tcb_get_loss_and_error_signal", "init_segment", "notify_segment_loss", "get_current_seg_posteriors",
        "set_current_seg_error_signal", "set_current_seg_loss", "segment_list_iterator",
    ],
}

SEED_PARAMS = {
    "init": ["name", "reference", "config", "sprint_unit", "version_number", "callback"],
    "getSegmentList": ["corpusName", "segmentList", "config"],
    "SprintNnPythonLayer.setInputDimension": ["stream", "size"],
    "SprintNnPythonLayer.setOutputDimension": ["size"],
    "SprintNnPythonLayer.loadNetworkParameters": ["filename"],
    "SprintNnPythonLayer.saveNetworkParameters": ["filename"],
    "SprintNnPythonLayer.forward": ["input"],
    "SprintNnPythonLayer.backpropagate": ["errorSignalIn"],
    "PythonControl.__init__": ["c2p_fd", "p2c_fd"],
    "PythonControl.init_processing": ["input_dim", "output_dim"],
    "PythonControl.process_segment": ["name", "orthography", "features", "alignment", "soft_alignment"],
    "PythonControl.run_control_loop": ["callback"],
    "PythonControl.own_tcb_get_loss_and_error_signal": ["seg_name", "seg_len", "posteriors"],
    "PythonControl.init_segment": ["segment_name"],
    "PythonControl.notify_segment_loss": ["segment_name", "loss"],
    "PythonControl.get_current_seg_posteriors": ["seg_len"],
    "PythonControl.set_current_seg_error_signal": ["seg_len", "error_signal"],
    "PythonControl.set_current_seg_loss": ["seg_name", "loss"],
}

TAKES_EXTRA_KWARGS = {
    "init", "getSegmentList", "PythonControl.__init__", "PythonControl.init_processing",
    "PythonControl.process_segment", "PythonControl.run_control_loop", "PythonControl.init_segment",
    "PythonControl.notify_segment_loss",
}


def test_seed_api_exists_with_docstrings():
    for name in ("print", "init", "getSegmentList", "SprintNnPythonLayer", "PythonControl"):
        obj = getattr(control, name)
        assert obj.__doc__, name
        assert getattr(sprint_control, name) is obj  # --*.pymod-name=sprint_control works too
    for cls, methods in SEED_METHODS.items():
        for m in methods:
            assert getattr(getattr(control, cls), m).__doc__, f"{cls}.{m}"
    assert control.PythonControl.Version == 1
    assert "instance" in vars(control.PythonControl)


@pytest.mark.parametrize("path,params", sorted(SEED_PARAMS.items()))
def test_seed_parameter_names(path, params):
    obj = control
    for part in path.split("."):
        obj = getattr(obj, part)
    sig = inspect.signature(obj)
    names = [p for p in sig.parameters if p != "self"]
    assert names[: len(params)] == params
    if path in TAKES_EXTRA_KWARGS:  # RASR passes more keywords than the seed names
        assert any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def test_pymod_name_package_imports_the_api(tmp_path):
    import subprocess
    import sys

    code = (
        "import importlib; m = importlib.import_module('sprint_control');"
        "names = ('init', 'getSegmentList', 'SprintNnPythonLayer', 'PythonControl', 'print');"
        "print(all(callable(getattr(m, n)) for n in names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"


def test_parse_config():
    assert control.parse_config("") == {}
    assert control.parse_config("a:1,b:x:y,,c:") == {"a": "1", "b": "x:y", "c": ""}
    assert control.parse_config("verbose:true,verbose:false") == {"verbose": "false"}  # last wins
    assert control.parse_config(b"k:v") == {"k": "v"}
    with pytest.raises(SprintControlError, match="no ':'"):
        control.parse_config("c2p_fd:3,oops")


def test_init_requires_the_pipe_fds():
    with pytest.raises(SprintControlError, match="c2p_fd"):
        control.init(name="x", reference=None, config="p2c_fd:4")
    with pytest.raises(SprintControlError, match="integer"):
        control.init(name="x", reference=None, config="p2c_fd:4,c2p_fd:three")


def test_init_refuses_closed_fds():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(SprintControlError, match="not an open file descriptor"):
        control.init(name="x", reference=None, config=f"c2p_fd:{w},p2c_fd:{r}")
    assert control.PythonControl.instance is None


def test_init_returns_one_shared_instance(link_pair):
    cb = FakeSprintCallback()
    a = control.init(name="sprint_control.PythonSegmentOrder", reference="corpus", config=link_pair.config)
    b = sprint_init(link_pair.config + ",unknownKey:value", cb, unit="FeedForwardTrainer")
    layer = control.SprintNnPythonLayer(config=link_pair.config)
    assert a is b is layer.control is control.PythonControl.instance
    assert b.sprint_callback is cb and b.sprint_unit == "FeedForwardTrainer" and b.sprint_version_number == 5
    assert b.config["unknownKey"] == "value"  # passed through
    assert layer.isTrainable() is True and layer.getNumberOfFreeParameters() == 0


def test_log_space_keys():
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    try:
        ctl = control.init(name="x", reference=None,
                           config=f"c2p_fd:{c2p_w},p2c_fd:{p2c_r},posteriorsInLogSpace:false,sprintInputInLogSpace:0")
        assert ctl.posteriors_in_log_space is False and ctl.sprint_knows_log_space is False
        with pytest.raises(SprintControlError, match="boolean"):
            control.init(name="x", reference=None, config=f"c2p_fd:{c2p_w},p2c_fd:{p2c_r},verbose:maybe")
    finally:
        control.PythonControl.instance.close()
        os.close(c2p_r)
        os.close(p2c_w)


@pytest.mark.parametrize("version", [1, None])
def test_old_sprint_is_refused_and_the_parent_learns_why(link_pair, version):
    with pytest.raises(SprintControlError, match=r"version >= 2 is needed"):
        sprint_init(link_pair.config, FakeSprintCallback(), version=version)
    with pytest.raises(SprintRemoteError, match=r"version >= 2 is needed"):
        link_pair.parent.handshake()


def test_log_lines_carry_the_pid_and_quiet_silences_all_but_errors(capsys):
    control._log("hello")
    out = capsys.readouterr()
    assert f"[pid {os.getpid()}] hello" in out.out
    control._log_state.quiet = True
    control._log("not shown")
    control.print("neither")
    control._log("shown", error=True)
    out = capsys.readouterr()
    assert out.out == "" and "shown" in out.err


def test_verbose_lines_only_when_verbose(capsys):
    control._log("detail", verbose=True)
    assert capsys.readouterr().out == ""
    control._log_state.verbose = True
    control._log("detail", verbose=True)
    assert "detail" in capsys.readouterr().out


def test_quiet_key_in_config(link_pair, capsys):
    control.init(name="x", reference=None, config=link_pair.config + ",quiet:true")
    assert capsys.readouterr().out == ""


def test_bytes_segment_name_and_numpy_seg_len_on_v1(link_pair):
    cb = FakeSprintCallback()
    order: list = []
    t = link_pair.start(drive_flow_a, link_pair.config, cb, {"s/ä": "abc"}, order)
    link_pair.parent.handshake(protocol=1)
    post = random_log_posteriors(np.random.default_rng(0), 3, 4)
    link_pair.parent.send_v1(("get_loss_and_error_signal", "s/ä".encode(), np.int32(3), post))
    loss, err = link_pair.parent.recv_loss_result(post.shape)
    assert np.isfinite(loss)
    link_pair.parent.send_exit()
    t.finish()
    assert order == ["s/ä"]
    (_, kw), = [c for c in cb.calls if c[0] == "calculate_criterion"]
    assert kw["segment_name"] == "s/ä" and kw["orthography"] == "abc"


def test_bad_request_is_answered_with_an_error(link_pair):
    t = link_pair.start(drive_flow_a, link_pair.config, FakeSprintCallback(), {}, [])
    link_pair.parent.handshake(protocol=1)
    post = np.zeros((3, 2), np.float32)
    link_pair.parent.send_v1(("get_loss_and_error_signal", "s", 4, post))  # wrong length
    with pytest.raises(SprintRemoteError, match="does not match"):
        link_pair.parent.recv_loss_result(post.shape)
    with pytest.raises(SprintRemoteError, match="not supported"):
        link_pair.parent.call("use_protocol", 9, {})
    link_pair.parent.send_exit()
    t.finish()


def test_death_of_the_control_thread_reaches_parent_and_ends_segment_list(link_pair, capsys):
    order: list = []
    t = link_pair.start(drive_flow_a, link_pair.config, FakeSprintCallback(), {}, order)
    link_pair.parent.handshake(protocol=2)
    ctl = control.PythonControl.instance

    real_recv = ctl.link.recv_command

    def broken_recv():
        message = real_recv()
        if message[0] == "get_loss_and_error_signal" and message[1] == "s2":
            raise RuntimeError("the control thread broke")
        return message

    ctl.link.recv_command = broken_recv  # an unexpected failure outside any command handler
    post = random_log_posteriors(np.random.default_rng(0), 2, 2)
    link_pair.parent.send_loss_request("s", post)
    link_pair.parent.recv_loss_result((2, 2))
    link_pair.parent.send_loss_request("s2", post)
    with pytest.raises(SprintRemoteError, match="the control thread broke"):
        link_pair.parent.recv_loss_result((2, 2))
    t.finish()  # RASR's segment list ended
    assert "the control thread broke" in capsys.readouterr().err


def test_process_segment_for_an_unknown_segment_is_loud(link_pair):
    ctl = sprint_init(link_pair.config, FakeSprintCallback())
    ctl.init_processing(input_dim=-1, output_dim=-1)
    with pytest.raises(SprintControlError, match="python-segment-order"):
        ctl.process_segment(name="other", orthography=b"x")


def test_init_processing_needs_the_callback(link_pair):
    ctl = control.init(name="Sprint.PythonControl", reference=None, config=link_pair.config, version_number=5)
    with pytest.raises(SprintControlError, match="callback"):
        ctl.init_processing(input_dim=-1, output_dim=-1)


def test_verbose_config_logs_each_step(link_pair, capsys):
    config = link_pair.config + ",verbose:true"
    t = link_pair.start(drive_flow_a, config, FakeSprintCallback(), {"s1": "ab"}, [])
    link_pair.parent.handshake(protocol=2)
    post = random_log_posteriors(np.random.default_rng(0), 3, 4)
    link_pair.parent.send_loss_request("s1", post)
    link_pair.parent.recv_loss_result(post.shape)
    link_pair.parent.send_exit()
    t.finish()
    out = capsys.readouterr().out
    for step in ("using protocol 2", "loss request: 's1'", "segment list: 's1'", "process_segment: 's1'"):
        assert step in out, step


def test_max_payload_in_the_config_is_the_childs_limit(link_pair):
    t = link_pair.start(drive_flow_a, link_pair.config + ",max_payload:4096", FakeSprintCallback(), {"s": "ab"}, [])
    link_pair.parent.handshake(protocol=1)
    assert control.PythonControl.instance.link.max_payload == 4096
    big = np.zeros((1100, 300), np.float32)  # 1.3 MB: over 4 kB plus v1's slack for the pickle
    link_pair.parent.send_loss_request("s", big)
    with pytest.raises(SprintRemoteError, match="exceeds the limit of 4096 bytes"):
        link_pair.parent.recv_loss_result(big.shape)
    post = random_log_posteriors(np.random.default_rng(0), 3, 4)
    link_pair.parent.send_loss_request("s", post)  # the message was dropped whole: the next one is read
    assert np.isfinite(link_pair.parent.recv_loss_result(post.shape)[0])
    link_pair.parent.send_exit()
    t.finish()


@pytest.mark.parametrize("value", ["0", "-3", "big"])
def test_max_payload_must_be_a_positive_number(link_pair, value):
    with pytest.raises(SprintControlError, match="max_payload"):
        control.init(name="x", reference=None, config=f"{link_pair.config},max_payload:{value}")
