"""SprintSubprocessInstance against the fake Sprint child: command line, fds, both protocols,
failures (child death, remote exception, timeout) and the life cycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fake_child import criterion

from sprint_control import (
    ProtocolError,
    SprintChildError,
    SprintControlError,
    SprintRemoteError,
    SprintTimeoutError,
)
from sprint_control.parent import DEFAULT_MODULE_NAME, SprintSubprocessInstance, default_module_path
from sprint_control.wire.constants import DEFAULT_MAX_PAYLOAD

pytestmark = pytest.mark.usefixtures("no_leaks")


def _post(t, labels, seed=0):
    return np.random.default_rng(seed).standard_normal((t, labels)).astype(np.float32)


def test_command_line_and_fds_match_the_reference(fake_exec, tmp_path):
    argv_file = tmp_path / "argv.json"
    inst = SprintSubprocessInstance(
        fake_exec, minPythonControlVersion=3, sprintConfigStr=f"--fake.argv-file={argv_file} --x.y='a b'",
        sprintControlConfig={"verbose": "true", "EnableAutoNumpySharedMemPickling": "False"},
    )
    try:
        seen = json.loads(argv_file.read_text())
    finally:
        inst.close()
    argv = seen["argv"][1:]  # without the script itself
    config = dict(kv.split(":", 1) for kv in argv[3].split("=", 1)[1].split(","))
    c2p, p2c = int(config["c2p_fd"]), int(config["p2c_fd"])
    expected_config = (f"c2p_fd:{c2p},p2c_fd:{p2c},minPythonControlVersion:3,max_payload:{DEFAULT_MAX_PAYLOAD},"
                       "EnableAutoNumpySharedMemPickling:False,verbose:true")
    path = default_module_path()
    assert argv == [
        "--*.python-control-enabled=true",
        f"--*.pymod-path={path}",
        f"--*.pymod-name={DEFAULT_MODULE_NAME}",
        f"--*.pymod-config={expected_config}",
        "--*.python-segment-order=true",
        f"--*.python-segment-order-pymod-path={path}",
        f"--*.python-segment-order-pymod-name={DEFAULT_MODULE_NAME}",
        f"--*.python-segment-order-config={expected_config}",
        "--*.python-segment-order-allow-copy=false",
        f"--fake.argv-file={argv_file}",
        "--x.y=a b",
    ]
    # exactly stdio and the two pipe ends reach the child
    assert seen["fds"] == sorted({0, 1, 2, c2p, p2c})


def test_without_python_segment_order_and_custom_module(fake_exec, tmp_path):
    argv_file = tmp_path / "argv.json"
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr=[f"--fake.argv-file={argv_file}"],
                                    usePythonSegmentOrder=False, module_name="returnn.sprint.control",
                                    module_path="/opt/x")
    inst.close()
    argv = json.loads(argv_file.read_text())["argv"][1:]
    assert argv[:3] == ["--*.python-control-enabled=true", "--*.pymod-path=/opt/x",
                        "--*.pymod-name=returnn.sprint.control"]
    assert not any("segment-order" in a for a in argv)


@pytest.mark.parametrize("protocol", [1, 2])
def test_segment_round_trip(fake_exec, protocol):
    inst = SprintSubprocessInstance(fake_exec, protocol=protocol)
    try:
        assert inst.protocol == protocol
        x = _post(9, 5)
        inst.get_loss_and_error_signal__send("seg-1", np.int64(9), x)
        assert inst.is_calculating
        inst._link.timeout = None
        seg, loss, err = inst.get_loss_and_error_signal__read()
        exp_loss, exp_err = criterion(x)
        assert seg == "seg-1" and loss == pytest.approx(exp_loss, rel=1e-6)
        np.testing.assert_array_equal(err, exp_err)
        assert not inst.is_calculating
        # bytes names and float64 posteriors are accepted (converted once)
        seg, loss, err = inst.get_loss_and_error_signal(b"seg-2", x.astype(np.float64))
        assert seg == "seg-2"
        np.testing.assert_array_equal(err, exp_err)
    finally:
        assert inst.close() == 0


def test_v2_reads_straight_into_a_strided_slice(fake_exec):
    inst = SprintSubprocessInstance(fake_exec)
    try:
        assert inst.protocol == 2
        batch = np.random.default_rng(1).standard_normal((6, 3, 4)).astype(np.float32)
        out = np.zeros_like(batch)
        view = out[:5, 1]
        inst.get_loss_and_error_signal__send("s", 5, batch[:5, 1])
        _, _, err = inst.get_loss_and_error_signal__read(out=view)
        assert err is view  # no temporary: the answer landed in the slice itself
        np.testing.assert_array_equal(out[:5, 1], criterion(batch[:5, 1])[1])
        assert not out[:, [0, 2]].any() and not out[5:].any()
    finally:
        inst.close()


def test_child_without_v2_falls_back_to_v1(fake_exec):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.protocols=1")
    try:
        assert inst.protocol == 1
        _, _, err = inst.get_loss_and_error_signal("a", _post(3, 2))
        np.testing.assert_array_equal(err, criterion(_post(3, 2))[1])
    finally:
        inst.close()


def test_have_data(fake_exec):
    inst = SprintSubprocessInstance(fake_exec)
    try:
        with pytest.raises(SprintControlError, match="no request is pending"):
            inst.get_loss_and_error_signal__have_data()
        inst.get_loss_and_error_signal__send("a", 4, _post(4, 3))
        with pytest.raises(SprintControlError, match="still pending"):
            inst.get_loss_and_error_signal__send("b", 4, _post(4, 3))
        import select

        select.select([inst._link.read_fd], [], [], 10)
        assert inst.get_loss_and_error_signal__have_data()
        inst.get_loss_and_error_signal__read()
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_remote_exception_keeps_the_link(fake_exec, protocol):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.error-on=bad", protocol=protocol)
    try:
        with pytest.raises(SprintRemoteError, match="bad segment bad"):
            inst.get_loss_and_error_signal("bad", _post(3, 2))
        assert inst.alive and not inst.is_calculating
        _, loss, _ = inst.get_loss_and_error_signal("good", _post(3, 2))
        assert loss == pytest.approx(criterion(_post(3, 2))[0], rel=1e-6)
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_dead_child_is_reported_with_status_and_stderr_then_restarted(fake_exec, protocol):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.crash-on=boom", protocol=protocol)
    try:
        old_pid = inst.child_pid
        with pytest.raises(SprintChildError) as info:
            inst.get_loss_and_error_signal("boom", _post(4, 3))
        err = info.value
        assert err.returncode == 3
        assert "exited with status 3" in str(err) and "'boom'" in str(err)
        assert "fatal: cannot handle segment boom" in err.stderr_tail
        assert not inst.alive
        with pytest.raises(SprintChildError, match="init"):
            inst.get_loss_and_error_signal("x", _post(4, 3))
        inst.init()
        assert inst.alive and inst.child_pid != old_pid and inst.protocol == protocol
        _, _, e = inst.get_loss_and_error_signal("x", _post(4, 3))
        np.testing.assert_array_equal(e, criterion(_post(4, 3))[1])
    finally:
        inst.close()


def test_killed_child_reports_the_signal(fake_exec):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.segv-on=s")
    try:
        with pytest.raises(SprintChildError, match="SIGSEGV") as info:
            inst.get_loss_and_error_signal("s", _post(4, 3))
        assert info.value.returncode == -signal.SIGSEGV
    finally:
        inst.close()


def test_child_that_fails_to_start(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import sys\nprint('ImportError: no module named foo', file=sys.stderr)\nsys.exit(7)\n")
    with pytest.raises(SprintChildError, match="status 7") as info:
        SprintSubprocessInstance([sys.executable, str(script)])
    assert "no module named foo" in info.value.stderr_tail
    assert info.value.returncode == 7


def test_missing_executable():
    with pytest.raises(SprintChildError, match="does not exist"):
        SprintSubprocessInstance("/nonexistent/nn-trainer.linux-x86_64-standard")


def test_timeout_restarts_the_child(fake_exec):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.sleep-on=slow", timeout=0.5)
    try:
        pid = inst.child_pid
        with pytest.raises(SprintTimeoutError, match="restarted"):
            inst.get_loss_and_error_signal("slow", _post(4, 3))
        assert inst.alive and inst.child_pid != pid and inst.restarts == 1
        _, loss, _ = inst.get_loss_and_error_signal("fast", _post(4, 3))
        assert loss == pytest.approx(criterion(_post(4, 3))[0], rel=1e-6)
    finally:
        inst.close()


def test_close_kills_a_child_that_ignores_exit(fake_exec):
    inst = SprintSubprocessInstance(fake_exec, sprintConfigStr="--fake.ignore-exit=true", exit_timeout=0.3)
    rc = inst.close()
    assert rc == -signal.SIGKILL
    assert inst.close() is None  # idempotent


def test_shape_checks(fake_exec):
    inst = SprintSubprocessInstance(fake_exec)
    try:
        with pytest.raises(ValueError, match="does not match"):
            inst.get_loss_and_error_signal__send("a", 5, _post(4, 3))
        with pytest.raises(ValueError, match=r"\(time, label\)"):
            inst.get_loss_and_error_signal__send("a", 4, np.zeros((4, 3, 1), np.float32))
        with pytest.raises(ValueError, match="non-empty"):
            inst.get_loss_and_error_signal__send("", 4, _post(4, 3))
        with pytest.raises(ValueError, match="protocol must be"):
            SprintSubprocessInstance(["x"], protocol=3)
        assert isinstance(ProtocolError("x"), SprintControlError)
    finally:
        inst.close()


def test_atexit_closes_children_of_an_exiting_parent(fake_exec, tmp_path):
    """A parent that exits without closing leaves no child behind."""
    pid_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import sys
        from sprint_control.parent import SprintPool
        pool = SprintPool(2, {fake_exec!r})
        open({str(pid_file)!r}, "w").write(" ".join(str(i.child_pid) for i in pool.instances))
        sys.exit(0)  # no close: atexit must do it
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=os.getcwd())
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"child {pid} outlived its parent"


def test_bad_out_buffer_is_refused_before_reading(fake_exec):
    inst = SprintSubprocessInstance(fake_exec)
    try:
        x = _post(4, 3)
        inst.get_loss_and_error_signal__send("a", 4, x)
        with pytest.raises(ValueError, match="shape"):
            inst.get_loss_and_error_signal__read(out=np.zeros((5, 3), np.float32))
        with pytest.raises(ValueError, match="contiguous rows"):
            inst.get_loss_and_error_signal__read(out=np.zeros((4, 6), np.float32)[:, ::2])
        # the answer is still there and the child alive
        out = np.zeros((4, 3), np.float32)
        _, _, err = inst.get_loss_and_error_signal__read(out=out)
        assert err is out and inst.alive
        np.testing.assert_array_equal(out, criterion(x)[1])
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_an_answer_that_does_not_match_its_request_is_a_protocol_error(fake_exec, protocol):
    # whatever the link finds wrong with an answer (another segment, sequence number or shape) is a
    # ProtocolError for the caller, never a loss; the child, now out of step, is stopped and restarted
    from sprint_control import ProtocolError
    from sprint_control.parent import MalformedAnswerError

    inst = SprintSubprocessInstance(fake_exec, protocol=protocol)
    try:
        pid = inst.child_pid
        link = inst._link

        def mismatched(shape, out=None):
            raise ProtocolError("answer for segment 'other' (seq 7), the request was 'good' (seq 1)")

        link.recv_loss_result = mismatched
        with pytest.raises(ProtocolError, match="malformed answer .* 'other'") as info:
            inst.get_loss_and_error_signal("good", _post(3, 2))
        assert isinstance(info.value, MalformedAnswerError) and isinstance(info.value, SprintChildError)
        assert not inst.alive
        inst.init()
        assert inst.child_pid != pid
        _, loss, _ = inst.get_loss_and_error_signal("good", _post(3, 2))
        assert loss == pytest.approx(criterion(_post(3, 2))[0], rel=1e-6)
    finally:
        inst.close()
