"""SprintInstancePool / SprintPool against the fake Sprint child: batches over 1 and 3 children and
both protocols, scheduling, automata offsets, failures inside a batch, the global registry."""

from __future__ import annotations

import numpy as np
import pytest
from fake_child import automaton, criterion

from sprint_control import SprintChildError, SprintControlError, SprintPool, SprintRemoteError
from sprint_control.parent import (
    Automata,
    BatchResult,
    SprintInstancePool,
    merge_automata,
    schedule_longest_first,
)

pytestmark = pytest.mark.usefixtures("no_leaks")


def _batch(lengths, labels=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(lengths) + 2, len(lengths), labels)).astype(np.float32)
    return x


def _expected(x, lengths):
    loss = np.zeros(len(lengths), np.float32)
    err = np.zeros_like(x)
    for b, t in enumerate(lengths):
        loss[b], err[:t, b] = criterion(x[:t, b])
    return loss, err


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("num_instances", [1, 3])
def test_batch_equals_direct_computation(fake_exec, protocol, num_instances):
    lengths = [7, 3, 9, 1, 6, 0, 4]
    x = _batch(lengths)
    with SprintPool(num_instances, fake_exec, protocol=protocol) as pool:
        assert len(pool.instances) == num_instances and pool.protocol == protocol
        res = pool.compute(x, lengths, [f"seg-{b}" for b in range(len(lengths))])
        assert isinstance(res, BatchResult) and res.protocol == protocol
        exp_loss, exp_err = _expected(x, lengths)
        assert res.loss.dtype == np.float32 and res.loss.shape == (len(lengths),)
        np.testing.assert_allclose(res.loss, exp_loss, rtol=1e-6)
        np.testing.assert_array_equal(res.error_signal, exp_err)
        assert res.bytes_moved == 2 * sum(lengths) * 6 * 4
        # the work really went to every child
        if num_instances == 3:
            assert all(inst.segments_done > 0 for inst in pool.instances)
        # the RETURNN-style tuple
        loss, err = pool.get_batch_loss_and_error_signal(x, np.array(lengths), [f"s{b}".encode() for b in
                                                                                 range(len(lengths))])
        np.testing.assert_array_equal(err, exp_err)
    assert all(inst.child_pid is None for inst in pool.instances)


@pytest.mark.parametrize("protocol", [1, 2])
def test_padding_is_zeroed_in_a_dirty_output_buffer(fake_exec, protocol, monkeypatch):
    """The batch output is not zero-filled as a whole: the children overwrite every frame of a
    sequence, the parent zeroes only the padding. A buffer full of NaN must come back exact."""
    lengths = [5, 2, 0, 4]
    x = _batch(lengths)
    with SprintPool(2, fake_exec, protocol=protocol) as pool:
        monkeypatch.setattr(pool, "empty", lambda shape, dtype=np.float32: np.full(shape, np.nan, dtype))
        loss, err = pool.get_batch_loss_and_error_signal(x, lengths, [f"s{b}" for b in range(len(lengths))])
    exp_loss, exp_err = _expected(x, lengths)
    np.testing.assert_array_equal(err, exp_err)  # NaN anywhere (padding or frames) would fail here
    np.testing.assert_allclose(loss, exp_loss, rtol=1e-6)


def test_gather_path_gives_the_same_result(fake_exec):
    lengths = [5, 8, 2]
    x = _batch(lengths, seed=3)
    with SprintPool(2, fake_exec, gather=True) as pool:
        res = pool.compute(x, lengths, ["a", "b", "c"])
    np.testing.assert_array_equal(res.error_signal, _expected(x, lengths)[1])


def test_non_contiguous_and_float64_input(fake_exec):
    lengths = [4, 6]
    x = _batch(lengths, labels=5, seed=4)
    big = np.zeros((x.shape[0], 2, 10), np.float64)
    big[:, :, ::2] = x  # last axis strided: converted once for the batch
    with SprintPool(1, fake_exec) as pool:
        res = pool.compute(big[:, :, ::2], lengths, ["a", "b"])
    np.testing.assert_array_equal(res.error_signal, _expected(x, lengths)[1])


def test_tags_as_uint8_matrix(fake_exec):
    lengths = [3, 2]
    x = _batch(lengths)
    tags = np.zeros((2, 8), np.uint8)
    tags[0, :3] = np.frombuffer(b"abc", np.uint8)
    tags[1, :5] = np.frombuffer(b"hello", np.uint8)
    with SprintPool(1, fake_exec) as pool:
        pool.compute(x, lengths, tags)
        a = pool.automata(tags)
    assert a.start_end_states.tolist() == [[0, automaton("abc")[0]],
                                           [automaton("abc")[0] - 1, automaton("abc")[0] + automaton("hello")[0] - 1]]


def test_schedule_longest_first():
    jobs = schedule_longest_first([3, 10, 4, 8, 1, 7], 3)
    # 10 -> 0, 8 -> 1, 7 -> 2, 4 -> 2 (load 7), 3 -> 1 (load 8), 1 -> 0 (load 10 vs 11, 11)
    assert jobs == [[1, 4], [3, 0], [5, 2]]
    assert schedule_longest_first([5, 5], 1) == [[0, 1]]
    assert schedule_longest_first([2], 3) == [[0], [], []]


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("num_instances", [1, 2])
def test_automata_offsets_by_hand(fake_exec, protocol, num_instances):
    # names of length 1, 2, 3 -> 3, 4, 5 states (len % 4 + 2), chains with self loops
    tags = ["a", "bb", "ccc"]
    with SprintPool(num_instances, fake_exec, protocol=protocol) as pool:
        a = pool.automata(tags)
    assert isinstance(a, Automata)
    assert a.start_end_states.dtype == np.uint32 and a.edges.dtype == np.uint32 and a.weights.dtype == np.float32
    assert a.start_end_states.tolist() == [[0, 3, 7], [2, 6, 11]]
    assert a.num_states == 12 and a.num_edges == 5 + 7 + 9
    # sequence 1 ("bb"): states 3..6; its first edges: 3->3 (emission 0), 3->4 (emission 1)
    seq1 = a.edges[:, a.edges[3] == 1]
    assert seq1[:, :2].tolist() == [[3, 3], [3, 4], [0, 1], [1, 1]]
    assert seq1[0].min() == 3 and seq1[1].max() == 6
    seq2 = a.edges[:, a.edges[3] == 2]
    assert seq2[0].min() == 7 and seq2[1].max() == 11
    # emission indices and weights are not offset
    np.testing.assert_array_equal(a.weights[a.edges[3] == 2], automaton("ccc")[3])
    assert a.edges[2].max() == 4


def test_merge_automata_rejects_bad_states():
    from sprint_control import ProtocolError

    with pytest.raises(ProtocolError, match="only 2 states"):
        merge_automata([(2, 1, np.array([0, 2, 0], np.uint32), np.zeros(1, np.float32))])


def test_failure_inside_a_batch_then_restart(fake_exec):
    lengths = [5, 4, 3, 2]
    x = _batch(lengths)
    tags = ["s0", "boom", "s2", "s3"]
    with SprintPool(2, fake_exec, sprint_args="--fake.crash-on=boom") as pool:
        with pytest.raises(SprintChildError, match="status 3"):
            pool.compute(x, lengths, tags)
        # the dead child is restarted for the next batch
        res = pool.compute(x, lengths, ["s0", "s1", "s2", "s3"])
        np.testing.assert_array_equal(res.error_signal, _expected(x, lengths)[1])
        assert sum(inst.restarts for inst in pool.instances) == 1


def test_remote_error_and_skipped_segment(fake_exec):
    lengths = [3, 3]
    x = _batch(lengths)
    with SprintPool(1, fake_exec, sprint_args="--fake.error-on=bad --fake.skip-on=skip") as pool:
        with pytest.raises(SprintRemoteError, match="bad segment"):
            pool.compute(x, lengths, ["ok", "bad"])
        res = pool.compute(x, lengths, ["ok", "skip"])
        assert res.skipped.tolist() == [False, True]
        assert np.isinf(res.loss[1]) and not res.error_signal[:, 1].any()
        seg = pool.compute_segment("one", x[:3, 0])
        assert seg.name == "one" and not seg.skipped
        np.testing.assert_array_equal(seg.error_signal, criterion(x[:3, 0])[1])


def test_input_checks(fake_exec):
    with SprintPool(1, fake_exec) as pool:
        x = _batch([3, 2])
        with pytest.raises(ValueError, match="tags"):
            pool.get_batch_loss_and_error_signal(x, [3, 2])
        with pytest.raises(ValueError, match="2 tags|got 1 tags"):
            pool.compute(x, [3, 2], ["a"])
        with pytest.raises(ValueError, match=r"seq_lengths must lie"):
            pool.compute(x, [3, 99], ["a", "b"])
        with pytest.raises(ValueError, match=r"\(time, batch, label\)"):
            pool.compute(x[:, 0], [3, 2], ["a", "b"])
    with pytest.raises(SprintControlError, match="closed"):
        pool.compute(x, [3, 2], ["a", "b"])


def test_global_instance_registry_and_free_instance(fake_exec):
    opts = {"sprintExecPath": fake_exec, "numInstances": 2, "sprintConfigStr": ""}
    pool = SprintInstancePool.get_global_instance(opts)
    try:
        assert SprintInstancePool.get_global_instance(dict(opts)) is pool
        other = SprintInstancePool.get_global_instance({**opts, "numInstances": 1})
        assert other is not pool and other.numInstances == 1
        assert pool.numInstances == 2 and pool.instances == []  # started lazily, as RETURNN does
        a = pool.get_free_instance()
        assert a is not None and a.alive
        a.get_loss_and_error_signal__send("x", 2, np.zeros((2, 3), np.float32))
        b = pool.get_free_instance()
        assert b is not None and b is not a
        b.get_loss_and_error_signal__send("y", 2, np.zeros((2, 3), np.float32))
        assert pool.get_free_instance() is None
        a.get_loss_and_error_signal__read()
        assert pool.get_free_instance() is a
        b.get_loss_and_error_signal__read()
    finally:
        pool.close()
        other.close()
    assert SprintInstancePool.get_global_instance(opts) is not pool  # a closed pool is replaced
    SprintInstancePool.get_global_instance(opts).close()


def test_timeout_inside_a_threaded_batch(fake_exec):
    lengths = [4, 3, 2]
    x = _batch(lengths)
    from sprint_control import SprintTimeoutError

    with SprintPool(2, fake_exec, sprint_args="--fake.sleep-on=slow", timeout=0.5) as pool:
        with pytest.raises(SprintTimeoutError, match="restarted"):
            pool.compute(x, lengths, ["a", "slow", "c"])
        res = pool.compute(x, lengths, ["a", "b", "c"])
        np.testing.assert_array_equal(res.error_signal, _expected(x, lengths)[1])
        assert sum(inst.restarts for inst in pool.instances) == 1


def test_echo_output_copies_the_childs_stderr(fake_exec, capfd):
    with SprintPool(1, fake_exec, echo_output=True) as pool:
        pool.compute(_batch([2]), [2], ["a"])
    assert "fake child started" in capfd.readouterr().err


def test_a_pool_dropped_without_close_leaves_no_worker_thread(fake_exec):
    import gc
    import threading
    import time

    lengths = [5, 4, 3]
    pool = SprintPool(3, fake_exec)
    pool.compute(_batch(lengths), lengths, ["a", "b", "c"])
    assert any(t.name.startswith("sprint-pool") for t in threading.enumerate())
    instances = pool.instances
    del pool
    gc.collect()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("sprint-pool") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert not any(t.name.startswith("sprint-pool") for t in threading.enumerate())
    finally:
        for inst in instances:
            inst.close()
