"""A real Sprint child (the RASR emulator with the Sprint-side module) that dies, fails to start,
raises, or blocks: the parent ends each case with a clear error within a bounded time, leaves no
zombie and no fd behind, and the restarted child computes the next batch correctly. Both protocols."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from rel_helpers import EMULATOR_ARGS, ERROR_BOUND, process_state

from sprint_control import SprintChildError, SprintPool, SprintRemoteError, SprintTimeoutError
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.parent import SprintSubprocessInstance
from sprint_control.wire import framing

pytestmark = pytest.mark.usefixtures("no_leaks")

CORPUS = synthetic_corpus(8, seed=3, max_frames=30)
LABELS = criteria.num_labels("ctc")
SEG0, SEG1, SEG2 = (s.name for s in CORPUS.segments[:3])


def _log_softmax(a):
    a = a - a.max(axis=-1, keepdims=True)
    return (a - np.log(np.exp(a).sum(axis=-1, keepdims=True))).astype(np.float32)


def _posteriors(seg, seed=0):
    return _log_softmax(np.random.default_rng(seed).standard_normal((seg.num_frames, LABELS)))


def _check_segment(inst_or_pool, index=1, seed=1):
    """One segment through the child, compared with the criterion computed here."""
    seg = CORPUS.segments[index]
    x = _posteriors(seg, seed)
    if isinstance(inst_or_pool, SprintPool):
        res = inst_or_pool.compute(x[:, None, :], [seg.num_frames], [seg.name])
        loss, err = float(res.loss[0]), res.error_signal[:, 0]
    else:
        _, loss, err = inst_or_pool.get_loss_and_error_signal(seg.name, x)
    exp_loss, exp_err = criteria.compute_criterion("ctc", x, orthography=seg.orthography)
    assert loss == pytest.approx(exp_loss, rel=1e-4)
    np.testing.assert_allclose(err, exp_err, atol=1e-4)


def _wait_for(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path):
            return
        time.sleep(0.01)
    raise AssertionError(f"the child never reached the fault ({path})")


def _assert_reaped(pid):
    assert process_state(pid) == "", f"child {pid} is still there (state {process_state(pid)!r})"


@pytest.mark.parametrize("protocol", [1, 2])
def test_sigkill_while_the_parent_waits_for_an_answer(emulator, tmp_path, protocol):
    mark = tmp_path / "mark"
    inst = SprintSubprocessInstance(**emulator(protocol=protocol, env={"FAULTY_HANG": SEG0, "FAULTY_MARK": str(mark)}))
    try:
        assert inst.protocol == protocol
        pid = inst.child_pid
        killed_at = []

        def killer():
            _wait_for(mark)
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        with pytest.raises(SprintChildError) as info:
            inst.get_loss_and_error_signal(SEG0, _posteriors(CORPUS.segments[0]))  # blocks in the read
        elapsed = time.monotonic() - killed_at[0]
        thread.join()
        assert elapsed < ERROR_BOUND, f"the parent needed {elapsed:.2f} s to report the dead child"
        err = info.value
        assert err.returncode == -signal.SIGKILL
        assert "was killed by SIGKILL" in str(err) and repr(SEG0) in str(err)
        assert f"sprint_control[pid {pid}]" in err.stderr_tail  # the child's own last lines
        assert "last lines of the child's stderr" in str(err)
        _assert_reaped(pid)
        assert not inst.alive
        inst.init()
        assert inst.child_pid != pid and inst.protocol == protocol
        _check_segment(inst)
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_sigkill_while_the_parent_writes_a_large_frame(emulator, protocol):
    inst = SprintSubprocessInstance(**emulator(protocol=protocol))
    try:
        pid = inst.child_pid
        big = np.zeros((2000, 8000), np.float32)  # 64 MB: far more than the pipe holds
        os.kill(pid, signal.SIGSTOP)  # the child reads nothing: the parent's write blocks
        killed_at = []

        def killer():
            time.sleep(0.3)
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        with pytest.raises(SprintChildError) as info:
            inst.get_loss_and_error_signal(SEG0, big)
        elapsed = time.monotonic() - killed_at[0]
        thread.join()
        assert elapsed < ERROR_BOUND, f"the parent needed {elapsed:.2f} s to report the dead child"
        err = info.value
        assert err.returncode == -signal.SIGKILL and "was killed by SIGKILL" in str(err)
        assert "while sending segment" in str(err) and f"sprint_control[pid {pid}]" in err.stderr_tail
        _assert_reaped(pid)
        inst.init()
        _check_segment(inst)
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", [1, 2])
def test_write_timeout_when_the_child_stops_reading(emulator, framing_impl, monkeypatch, protocol):
    """A child that reads nothing (stopped) makes a large write end in SprintTimeoutError after the
    link's timeout, not hang; the child is restarted. Both framing cores (the parent's writes)."""
    for name in ("write_frame", "read_frame", "read_header", "read_payload"):
        monkeypatch.setattr(framing, name, getattr(framing_impl, name))
    timeout = 0.5
    inst = SprintSubprocessInstance(**emulator(protocol=protocol, timeout=timeout))
    try:
        pid = inst.child_pid
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(SprintTimeoutError, match=r"did not take the request within 0.5 s") as info:
            inst.get_loss_and_error_signal(SEG0, np.zeros((2000, 8000), np.float32))
        elapsed = time.monotonic() - started
        assert "restarted" in str(info.value)
        # bounded: the timeout, the kill and a fresh child's start-up
        assert elapsed < timeout + 10.0, elapsed
        _assert_reaped(pid)
        assert inst.alive and inst.child_pid != pid and inst.restarts == 1
        _check_segment(inst)
    finally:
        inst.close()


START_FAILURES = {
    "bad module name": (dict(module_name="no_such_module_xyz"), {},
                        "cannot import module 'no_such_module_xyz'", 1),
    "bad config": (dict(sprintConfigStr=list(EMULATOR_ARGS) + ["--*.corpus.seed=x"]), {},
                   "option corpus.seed: expected an integer, got 'x'", 1),
    "import error": (dict(), {"FAULTY_IMPORT_ERROR": "libfoo.so.3: cannot open shared object file"},
                     "libfoo.so.3: cannot open shared object file", 1),
    "version too old": (dict(minPythonControlVersion=99), {},
                        "this RASR's PythonControl has version 5, but version >= 99 is needed", None),
}


@pytest.mark.parametrize("case", sorted(START_FAILURES))
@pytest.mark.parametrize("protocol", [1, 2])
def test_start_up_failure_carries_the_childs_message(emulator, case, protocol):
    kwargs, env, message, status = START_FAILURES[case]
    args = emulator(protocol=protocol, env=env)
    args.update(kwargs)
    started = time.monotonic()
    with pytest.raises(SprintChildError) as info:
        SprintSubprocessInstance(**args)
    assert time.monotonic() - started < 60
    err = info.value
    first_line = str(err).splitlines()[0]
    assert message in first_line, str(err)  # the reason itself, not only "EOFError"
    assert message in err.stderr_tail
    if status is not None:
        assert err.returncode == status and f"exited with status {status}" in first_line


@pytest.mark.parametrize("protocol", [1, 2])
def test_exception_in_the_criterion_comes_back_with_its_traceback(emulator, protocol):
    with SprintPool(**_pool_args(emulator(protocol=protocol, env={"FAULTY_RAISE": SEG0}))) as pool:
        pid = pool.instances[0].child_pid
        seg = CORPUS.segments[0]
        with pytest.raises(SprintRemoteError) as info:
            pool.compute(_posteriors(seg)[:, None], [seg.num_frames], [seg.name])
        text = info.value.remote_traceback
        assert "Traceback (most recent call last)" in text
        assert f"RuntimeError: the criterion of {SEG0} failed on purpose" in text
        assert "faulty_module.py" in text  # the frame where it was raised
        # the same child serves the next segment
        _check_segment(pool)
        assert pool.instances[0].child_pid == pid and pool.instances[0].restarts == 0


@pytest.mark.parametrize("protocol", [1, 2])
def test_blocking_criterion_times_out_and_the_child_is_restarted(emulator, tmp_path, protocol):
    mark = tmp_path / "mark"
    args = emulator(protocol=protocol, timeout=1.0, env={"FAULTY_HANG": SEG0, "FAULTY_MARK": str(mark)})
    with SprintPool(**_pool_args(args)) as pool:
        pid = pool.instances[0].child_pid
        seg = CORPUS.segments[0]
        started = time.monotonic()
        with pytest.raises(SprintTimeoutError, match=r"gave no answer within 1.0 s for segment .*restarted"):
            pool.compute(_posteriors(seg)[:, None], [seg.num_frames], [seg.name])
        assert time.monotonic() - started < 1.0 + 10.0
        assert mark.exists()  # it really was stuck in the criterion
        _assert_reaped(pid)
        inst = pool.instances[0]
        assert inst.child_pid != pid and inst.restarts == 1
        _check_segment(pool)


def test_timeout_is_off_by_default(emulator):
    with SprintPool(**_pool_args(emulator())) as pool:
        assert pool.instances[0].timeout is None and pool.instances[0]._link.timeout is None


def _pool_args(kwargs):
    """SprintSubprocessInstance keywords -> SprintPool keywords."""
    return dict(num_instances=1, sprint_exec=kwargs.pop("sprintExecPath"), sprint_args=kwargs.pop("sprintConfigStr"),
                **{("min_python_control_version" if k == "minPythonControlVersion" else k): v
                   for k, v in kwargs.items()})
