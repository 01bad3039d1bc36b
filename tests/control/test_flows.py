"""The three ways RASR uses the module, driven by a scripted RASR in a thread, with the test as parent
on real pipes, on both protocol versions."""

from __future__ import annotations

import numpy as np
import pytest
from control_fakes import (
    FakeSprintCallback,
    alignment_from_orthography,
    drive_control_loop,
    drive_flow_a,
    drive_flow_b,
    fsa_of,
    random_log_posteriors,
    reference_ce,
)

from sprint_control import control
from sprint_control.errors import SprintRemoteError

PROTOCOLS = [1, 2]


@pytest.fixture(autouse=True)
def both_framing_cores(framing_impl, monkeypatch):
    """Every flow runs over the compiled framing core and over its pure-Python twin."""
    from sprint_control.wire import framing

    for name in ("read_frame", "write_frame", "read_header", "read_payload"):
        monkeypatch.setattr(framing, name, getattr(framing_impl, name))
    return framing_impl

ORTHS = {"seg/a": "hello world", "seg/b": "grüße", "seg/c": "x", "seg/ü": "ünïcode text"}


def _segments(rng, labels=7):
    return [(name, random_log_posteriors(rng, frames, labels)) for name, frames in
            [("seg/a", 11), ("seg/b", 5), ("seg/c", 1), ("seg/ü", 23)]]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_a_criterion_via_callback(link_pair, proto):
    rng = np.random.default_rng(1)
    cb = FakeSprintCallback()
    order: list = []
    t = link_pair.start(drive_flow_a, link_pair.config, cb, ORTHS, order)
    assert link_pair.parent.handshake(protocol=proto) == proto
    for name, post in _segments(rng):
        link_pair.parent.send_loss_request(name, post)
        loss, err = link_pair.parent.recv_loss_result(post.shape)
        expected_loss, expected_err = reference_ce(post, alignment_from_orthography(ORTHS[name], *post.shape))
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        np.testing.assert_allclose(err, expected_err, atol=1e-5)
    link_pair.parent.send_exit()
    t.finish()
    assert order == [n for n, _ in _segments(rng)]
    crit = [kw for cmd, kw in cb.calls if cmd == "calculate_criterion"]
    assert [kw["output_error_type"] for kw in crit] == ["error-signal"] * 4  # log space, RASR knows
    assert cb.fast_path_inputs == 4  # every posteriors matrix came F-contiguous
    assert all(isinstance(kw["orthography"], str) for kw in crit)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_a_with_rasr_alignments(link_pair, proto):
    """RASR's uint32 alignment goes to the criterion as a float vector, without the orthography."""
    rng = np.random.default_rng(12)
    segs = _segments(rng, labels=5)
    alignments = {name: rng.integers(0, 5, size=post.shape[0]) for name, post in segs}
    cb = FakeSprintCallback()
    t = link_pair.start(drive_flow_a, link_pair.config, cb, ORTHS, [], alignments)
    link_pair.parent.handshake(protocol=proto)
    for name, post in segs:
        link_pair.parent.send_loss_request(name, post)
        loss, err = link_pair.parent.recv_loss_result(post.shape)
        expected_loss, expected_err = reference_ce(post, alignments[name])
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        np.testing.assert_allclose(err, expected_err, atol=1e-5)
    link_pair.parent.send_exit()
    t.finish()
    for cmd, kw in cb.calls:
        if cmd == "calculate_criterion":
            assert kw["alignment"].dtype == np.float32 and "orthography" not in kw


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_a_exponentiates_when_sprint_does_not_know_log_space(link_pair, proto):
    rng = np.random.default_rng(2)
    cb = FakeSprintCallback()
    config = link_pair.config + ",sprintInputInLogSpace:false"
    t = link_pair.start(drive_flow_a, config, cb, ORTHS, [])
    link_pair.parent.handshake(protocol=proto)
    post = random_log_posteriors(rng, 9, 5)
    link_pair.parent.send_loss_request("seg/a", post)
    loss, err = link_pair.parent.recv_loss_result(post.shape)
    (cmd, kw), = [c for c in cb.calls if c[0] == "calculate_criterion"]
    assert kw["output_error_type"] == "error-signal-before-softmax"
    np.testing.assert_allclose(kw["posteriors"], np.exp(post).T, rtol=1e-6)
    expected_loss, expected_err = reference_ce(post, alignment_from_orthography(ORTHS["seg/a"], 9, 5))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(err, expected_err, atol=1e-5)
    link_pair.parent.send_exit()
    t.finish()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_a_skip_and_failure_keep_serving(link_pair, proto, capsys):
    rng = np.random.default_rng(3)
    cb = FakeSprintCallback(discard=("seg/b",), fail=("seg/c",))
    t = link_pair.start(drive_flow_a, link_pair.config, cb, ORTHS, [])
    link_pair.parent.handshake(protocol=proto)
    segs = dict(_segments(rng))
    # discarded by the criterion: loss inf, zero error signal
    link_pair.parent.send_loss_request("seg/b", segs["seg/b"])
    loss, err = link_pair.parent.recv_loss_result(segs["seg/b"].shape)
    assert loss == float("inf")
    assert err.shape == segs["seg/b"].shape and not err.any()
    # the criterion raises: the parent gets the traceback, the child goes on
    link_pair.parent.send_loss_request("seg/c", segs["seg/c"])
    with pytest.raises(SprintRemoteError) as info:
        link_pair.parent.recv_loss_result(segs["seg/c"].shape)
    assert "criterion failed on seg/c" in str(info.value)
    assert "Traceback" in info.value.remote_traceback
    link_pair.parent.send_loss_request("seg/a", segs["seg/a"])
    loss, err = link_pair.parent.recv_loss_result(segs["seg/a"].shape)
    assert np.isfinite(loss) and err.any()
    link_pair.parent.send_exit()
    t.finish()
    out = capsys.readouterr().out
    assert "seg/b" in out and "skipped" in out


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_b_python_layer(link_pair, proto):
    rng = np.random.default_rng(4)
    segs = _segments(rng, labels=6)
    alignments = {name: rng.integers(0, 6, size=post.shape[0]) for name, post in segs}
    results: list = []
    order: list = []
    t = link_pair.start(drive_flow_b, link_pair.config, alignments, order, results=results)
    link_pair.parent.handshake(protocol=proto)
    received = {}
    for name, post in segs:
        link_pair.parent.send_loss_request(name, post)
        loss, err = link_pair.parent.recv_loss_result(post.shape)
        expected_loss, expected_err = reference_ce(post, alignments[name])
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        np.testing.assert_allclose(err, expected_err, atol=1e-5)
        received[name] = post
    link_pair.parent.send_exit()
    t.finish()
    assert order == [n for n, _ in segs]
    for step in results:
        if step[0] == "forward":
            out = step[2]
            assert out.dtype == np.float32 and out.flags.f_contiguous  # RASR's memcpy path
            np.testing.assert_array_equal(out.T, received[step[1]])
        else:
            _, name, err_in, grads = step
            assert isinstance(grads, tuple) and len(grads) == 1
            assert grads[0].shape == (3, err_in.shape[1]) and grads[0].flags.f_contiguous and not grads[0].any()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_flow_b_segment_left_without_error_signal_is_skipped(link_pair, proto, capsys):
    rng = np.random.default_rng(5)
    segs = _segments(rng, labels=4)
    alignments = {name: rng.integers(0, 4, size=post.shape[0]) for name, post in segs}
    t = link_pair.start(drive_flow_b, link_pair.config, alignments, [], skip=("seg/b",))
    link_pair.parent.handshake(protocol=proto)
    for name, post in segs:
        link_pair.parent.send_loss_request(name, post)
        loss, err = link_pair.parent.recv_loss_result(post.shape)
        if name == "seg/b":
            assert loss == float("inf") and not err.any()
        else:
            assert loss == pytest.approx(reference_ce(post, alignments[name])[0], rel=1e-5)
    link_pair.parent.send_exit()
    t.finish()
    out = capsys.readouterr().out
    assert "'seg/b' skipped" in out
    assert "backpropagate" in out and "notify_segment_loss" in out  # which steps never happened


def test_flow_b_forward_returns_the_received_buffer(link_pair):
    """forward hands RASR a transposed view of the very array the posteriors were read into."""
    ctl = control.init(name="Sprint.PythonControl", reference=None, config=link_pair.config,
                       version_number=5, callback=FakeSprintCallback())
    layer = control.SprintNnPythonLayer(config=link_pair.config)
    layer.setInputDimension(0, 2)
    layer.setOutputDimension(3)
    post = np.arange(12, dtype=np.float32).reshape(4, 3)
    seg = ctl.segments.post("s", 4, post)
    with ctl.cond:
        ctl.segments.pending, ctl.segments.active = None, seg
    out = layer.forward([np.zeros((2, 4), np.float32)])
    assert out.base is post or np.shares_memory(out, post)
    assert out.flags.f_contiguous and out.shape == (3, 4)
    err_in = np.asfortranarray(np.ones((3, 4), np.float32))
    layer.backpropagate(err_in)
    assert np.shares_memory(seg.error_signal, err_in)  # kept as it came
    ctl.notify_segment_loss(segment_name="s", loss=2.5)
    assert seg.done and seg.loss == 2.5


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_control_loop_loss_and_fsa(link_pair, proto):
    rng = np.random.default_rng(6)
    cb = FakeSprintCallback(orthographies=ORTHS, fail=("seg/c",))
    t = link_pair.start(drive_control_loop, link_pair.config, cb)
    link_pair.parent.handshake(protocol=proto)
    for name in ("seg/a", "seg/ü"):
        ns, ne, edges, weights = link_pair.parent.request_fsa(name)
        ens, ene, eedges, eweights = fsa_of(name)
        assert (ns, ne) == (ens, ene)
        np.testing.assert_array_equal(edges, eedges)
        np.testing.assert_array_equal(weights, eweights)
    with pytest.raises(SprintRemoteError, match="no automaton"):
        link_pair.parent.request_fsa("seg/c")
    post = random_log_posteriors(rng, 8, 5)
    link_pair.parent.send_loss_request("seg/a", post)
    loss, err = link_pair.parent.recv_loss_result(post.shape)
    expected_loss, expected_err = reference_ce(post, alignment_from_orthography(ORTHS["seg/a"], 8, 5))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(err, expected_err, atol=1e-5)
    # an unknown command is answered with an error, the loop goes on
    with pytest.raises(SprintRemoteError, match="unknown command"):
        link_pair.parent.call("no_such_command", 1)
    assert link_pair.parent.request_fsa("seg/b")[0] == fsa_of("seg/b")[0]
    link_pair.parent.send_exit()
    t.finish()
    assert cb.threads == {"fake-rasr-main"}  # RASR's callback only ever ran in RASR's thread


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_fsa_in_threaded_mode_uses_sprints_callback(link_pair, proto):
    cb = FakeSprintCallback()
    t = link_pair.start(drive_flow_a, link_pair.config, cb, ORTHS, [])
    link_pair.parent.handshake(protocol=proto)
    ns, ne, edges, weights = link_pair.parent.request_fsa("seg/b")
    np.testing.assert_array_equal(edges, fsa_of("seg/b")[2])
    link_pair.parent.send_exit()
    t.finish()


@pytest.mark.parametrize("driver", ["a", "b"])
def test_parent_gone_ends_the_segment_list(link_pair, driver):
    rng = np.random.default_rng(7)
    post = random_log_posteriors(rng, 4, 3)
    if driver == "a":
        t = link_pair.start(drive_flow_a, link_pair.config, FakeSprintCallback(), ORTHS, [])
    else:
        t = link_pair.start(drive_flow_b, link_pair.config, {"seg/a": np.zeros(4, np.int64)}, [])
    link_pair.parent.handshake(protocol=2)
    link_pair.parent.send_loss_request("seg/a", post)
    link_pair.parent.recv_loss_result(post.shape)
    link_pair.parent.close()  # no exit, just gone
    t.finish()


def test_exit_closes_the_pipes(link_pair):
    t = link_pair.start(drive_flow_a, link_pair.config, FakeSprintCallback(), ORTHS, [])
    link_pair.parent.handshake(protocol=1)
    link_pair.parent.send_exit()
    t.finish()
    ctl = control.PythonControl.instance
    assert ctl.link.read_fd == -1 and ctl.link.write_fd == -1
    with pytest.raises(EOFError):  # the child's write end is closed
        link_pair.parent.recv_v1()


def test_handshake_announces_both_protocols(link_pair):
    t = link_pair.start(drive_flow_a, link_pair.config, FakeSprintCallback(), ORTHS, [])
    assert link_pair.parent.handshake(protocol=1) == 1
    caps = link_pair.parent.peer_capabilities
    assert caps["protocols"] == [1, 2] and caps["sprint_version_number"] == 5
    import os

    assert caps["pid"] == os.getpid()
    link_pair.parent.send_exit()
    t.finish()


@pytest.mark.parametrize("flow", ["A", "B"])
def test_error_signal_from_rasr_is_sent_without_a_copy(link_pair, flow):
    """The (time, label) error signal handed to the link is a view of RASR's (label, time) array."""
    rng = np.random.default_rng(8)
    post = random_log_posteriors(rng, 6, 4)
    sent = []
    returned = []

    class Recording(FakeSprintCallback):
        def _criterion(self, *args, **kwargs):
            loss, err = super()._criterion(*args, **kwargs)
            returned.append(err)
            return loss, err

    if flow == "A":
        t = link_pair.start(drive_flow_a, link_pair.config, Recording(), ORTHS, [])
    else:
        results: list = []
        t = link_pair.start(drive_flow_b, link_pair.config, {"seg/a": rng.integers(0, 4, 6)}, [], results=results)
    link_pair.parent.handshake(protocol=2)
    ctl = control.PythonControl.instance
    real_reply = ctl.link.reply_loss

    def recording_reply(seg_name, loss, error_signal, skipped=False):
        sent.append(error_signal)
        return real_reply(seg_name, loss, error_signal, skipped=skipped)

    ctl.link.reply_loss = recording_reply
    link_pair.parent.send_loss_request("seg/a", post)
    link_pair.parent.recv_loss_result(post.shape)
    link_pair.parent.send_exit()
    t.finish()
    if flow == "B":
        returned = [step[2] for step in results if step[0] == "backpropagate"]
    assert len(sent) == 1 and len(returned) == 1
    assert sent[0].flags.c_contiguous and np.shares_memory(sent[0], returned[0])
