"""RaySprintPool on a local Ray cluster against the RASR emulator: the same answers as the local pool,
the Ray options (placement group, node label), and nothing left behind by ``close``."""

from __future__ import annotations

import numpy as np
import pytest
from support import extra_reason

pytest.importorskip("ray", reason=extra_reason("ray"))

from raylib import EMULATOR_ARGS, NODE_LABEL, TAGS, batch, wait_gone  # noqa: E402

from sprint_control import SprintChildError, SprintControlError, SprintTimeoutError  # noqa: E402
from sprint_control.parent import Automata, BatchResult, SprintPool, schedule_longest_first  # noqa: E402
from sprint_control.ray import RaySprintPool  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    """The local pool's answers (two emulator children): what the Ray pool must reproduce exactly."""
    x, lengths, tags = batch(empty=(3,))
    with SprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60) as pool:
        res = pool.compute(x, lengths, tags)
        aut = pool.automata(TAGS)
        seg = pool.compute_segment(tags[0], x[: lengths[0], 0])
    return (x, lengths, tags), res, aut, seg


#: half a CPU per actor: the module's pool and one more pool of two fit the cluster's two CPUs together
HALF = {"num_cpus": 0.5}


@pytest.fixture(scope="module")
def ray_pool(ray_cluster):
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, resources=HALF) as pool:
        yield pool


def test_batch_automata_and_segment_equal_the_local_pool(ray_pool, reference):
    (x, lengths, tags), res, aut, seg = reference
    before = [info["segments_done"] for info in ray_pool.actor_info()]
    got = ray_pool.compute(x, lengths, [t.encode() for t in tags])  # bytes tags, as RETURNN hands them over
    assert isinstance(got, BatchResult) and got.protocol == 2 == ray_pool.protocol
    np.testing.assert_array_equal(got.loss, res.loss)
    np.testing.assert_array_equal(got.error_signal, res.error_signal)
    assert got.loss[3] == 0 and not got.error_signal[:, 3].any()  # the empty sequence: no round trip
    assert got.bytes_moved == res.bytes_moved
    # the batch was spread: each actor served its longest-first share, the empty sequence went nowhere
    shares = [[b for b in job if lengths[b]] for job in schedule_longest_first(lengths, 2)]
    after = [info["segments_done"] for info in ray_pool.actor_info()]
    assert [a - b for a, b in zip(after, before)] == [len(s) for s in shares]
    got_aut = ray_pool.automata(TAGS)
    assert isinstance(got_aut, Automata)
    for mine, theirs in zip(got_aut, aut):
        np.testing.assert_array_equal(mine, theirs)
    got_seg = ray_pool.compute_segment(tags[0], x[: lengths[0], 0])
    assert got_seg.name == seg.name and got_seg.loss == seg.loss
    np.testing.assert_array_equal(got_seg.error_signal, seg.error_signal)
    loss, err = ray_pool.get_batch_loss_and_error_signal(x, np.array(lengths), tags)  # RETURNN's call
    np.testing.assert_array_equal(err, res.error_signal)


def test_a_wider_batch_than_actors_and_a_float64_input(ray_pool, reference):
    (x, lengths, tags), res, _, _ = reference
    got = ray_pool.compute(x.astype(np.float64), lengths, tags)  # converted once, as the local pool does
    np.testing.assert_array_equal(got.error_signal, res.error_signal)
    single = ray_pool.compute(x[:, :1], lengths[:1], tags[:1])  # fewer sequences than actors
    np.testing.assert_array_equal(single.error_signal[:, 0], res.error_signal[:, 0])


def test_sprint_loss_through_the_ray_pool(ray_pool, reference):
    torch = pytest.importorskip("torch", reason=extra_reason("torch"))
    from sprint_control.torch import sprint_loss

    (x, lengths, tags), res, _, _ = reference
    logits = torch.from_numpy(x.copy()).requires_grad_()
    loss = sprint_loss(logits, lengths, tags, ray_pool)
    loss.sum().backward()
    # x is already normalised (log of a distribution): log_softmax leaves it, so the answers are the pool's
    torch.testing.assert_close(loss, torch.from_numpy(res.loss), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits.grad, torch.from_numpy(res.error_signal), rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused_before_anything_is_sent(ray_pool):
    x, lengths, tags = batch(segments=[0, 1])
    with pytest.raises(ValueError, match="one tag per sequence"):
        ray_pool.compute(x, lengths, tags[:1])
    with pytest.raises(ValueError, match=r"seq_lengths must lie in \[0, "):
        ray_pool.compute(x, [1, x.shape[0] + 1], tags)
    with pytest.raises(ValueError, match="no frames"):
        ray_pool.compute_segment(tags[0], x[:0, 0])
    with pytest.raises(ValueError, match="must not be empty"):
        ray_pool.compute_segment("", x[:2, 0])
    got = ray_pool.compute(x, lengths, tags)  # the pool is unharmed
    assert np.isfinite(got.loss).all()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(no_such_option=1), TypeError, r"unknown option\(s\) \['no_such_option'\]"),
    (dict(resources={"num_cpus": -1}), ValueError, "resource 'num_cpus' must be a non-negative number"),
    (dict(resources=4), TypeError, "resources must be a mapping"),
    (dict(placement="EVERYWHERE"), ValueError, "placement must be one of PACK, SPREAD"),
    (dict(placement="PACK", scheduling_strategy="SPREAD"), ValueError, "not both"),
    (dict(node_label={"a": 1}), TypeError, "node_label must map label names to values"),
    (dict(actor_timeout=0), ValueError, "actor_timeout must be a positive number of seconds"),
    (dict(timeout=-1), ValueError, "timeout must be a positive number"),  # SprintPool's own check
    (dict(num_instances=0), ValueError, "num_instances must be a whole number of at least 1"),
])
def test_bad_options_are_refused_before_ray_is_asked(kwargs, error, match):
    with pytest.raises(error, match=match):
        RaySprintPool(**{"sprint_args": EMULATOR_ARGS, **kwargs})


def test_placement_group_and_node_label(ray_cluster):
    from ray.util import placement_group_table

    x, lengths, tags = batch(segments=[0, 1, 2])
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, placement="PACK", node_label=NODE_LABEL, timeout=60,
                       resources=HALF) as pool:
        group = pool._placement_group
        assert placement_group_table(group)["state"] == "CREATED"
        assert np.isfinite(pool.compute(x, lengths, tags).loss).all()
    assert placement_group_table(group)["state"] == "REMOVED"


def test_an_actor_no_node_can_take_is_a_timeout_not_a_hang(ray_cluster):
    with pytest.raises(SprintTimeoutError, match=r"Ray actor 0 did not start within 3\.0 s: no node offers.*"
                                                 r"with labels \{'sprint-test': 'no'\}"):
        RaySprintPool(1, sprint_args=EMULATOR_ARGS, node_label={"sprint-test": "no"}, actor_timeout=3)


def test_a_child_that_cannot_start_on_its_node_is_named(ray_cluster):
    with pytest.raises(SprintChildError, match=r"^Ray actor 0 \(node .*, actor pid \d+, Sprint child pid None\): its"
                                               r" Sprint child could not start: Sprint executable '/no/such/nn-trainer'"
                                               r" does not exist"):
        RaySprintPool(1, sprint_exec="/no/such/nn-trainer", resources=HALF)


def test_close_leaves_no_actor_or_process_behind(ray_cluster):
    pool = RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, resources=HALF)
    infos = pool.actor_info()
    pids = {p for info in infos for p in (info["pid"], info["child_pid"])}
    assert len(pids) == 4 and all(pids)
    handles = [slot.handle for slot in pool.slots]
    pool.close()
    assert wait_gone(pids) == set()
    for handle in handles:  # Ray knows them as dead
        with pytest.raises(ray_cluster.exceptions.RayActorError):
            ray_cluster.get(handle.info.remote(), timeout=30)
    with pytest.raises(SprintControlError, match="closed"):
        pool.compute(*batch(segments=[0]))
    pool.close()  # twice is fine
    assert ray_cluster.is_initialized()  # the pool did not start Ray, so it leaves it running


def test_the_overhead_benchmark_measures_both_pools(ray_cluster, tmp_path):
    from sprint_control.tools.bench_ray import format_rows, measure_ray_overhead

    rows = measure_ray_overhead([(5, 7)], batch=3, num_instances=2, repeats=3, ray_options={"resources": HALF})
    (row,) = rows
    assert (row["time"], row["labels"], row["batch"], row["mb"]) == (5, 7, 3, round(5 * 3 * 7 * 4 / 1e6, 3))
    assert row["local_ms"] > 0 and row["ray_ms"] > 0
    assert row["overhead_ms"] == pytest.approx(row["ray_ms"] - row["local_ms"], abs=2e-3)
    table = format_rows(rows).splitlines()
    assert table[0].startswith("| time x label | batch |") and table[2].startswith("| 5 x 7 | 3 |")
    assert ray_cluster.is_initialized()  # it used the running cluster and left it running


def test_lazy_start_spread_strategy_and_non_finite_input_refused_before_any_actor(ray_cluster, reference):
    (x, lengths, tags), res, _, _ = reference
    with RaySprintPool(2, sprint_args=EMULATOR_ARGS, timeout=60, resources=HALF, scheduling_strategy="SPREAD",
                       reject_non_finite=True, start=False) as pool:
        assert pool.slots == [] and pool.protocol is None
        bad = x.copy()
        bad[1, 0, 2] = np.nan
        with pytest.raises(ValueError, match=rf"segment {tags[0]!r} hold 1 non-finite values"):
            pool.compute(bad, lengths, tags)
        assert pool.slots == []  # refused before Ray was asked for anything
        got = pool.compute(x, lengths, tags)
        assert len(pool.slots) == 2 and pool.protocol == 2
        np.testing.assert_array_equal(got.error_signal, res.error_signal)
