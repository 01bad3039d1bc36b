"""RETURNN's calls at pool level, through the name RETURNN's module holds after ``install()``, against
emulator children: ``get_global_instance(sprint_opts)``, then under ``pool.lock``
``get_batch_loss_and_error_signal`` (``loss="sprint"``) and ``get_automata_for_batch`` (fast
Baum-Welch). Results are checked against the emulator's criterion computed here, and against
``SprintPool`` called directly."""

from __future__ import annotations

import numpy as np
import pytest
from returnn_helpers import (
    EMULATOR_ARGS,
    batch,
    check_automata,
    check_batch_result,
    sprint_opts,
)
from support import extra_reason

error_signals = pytest.importorskip("returnn.sprint.error_signals", reason=extra_reason("returnn.sprint.error_signals"))

from sprint_control import SprintPool  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_loss_and_error_signal_through_returnns_name(installed):
    opts = sprint_opts(num_instances=2)
    pool = error_signals.SprintInstancePool.get_global_instance(sprint_opts=opts)
    assert isinstance(pool, installed.ReturnnInstancePool)
    assert error_signals.SprintInstancePool.get_global_instance(sprint_opts=dict(opts)) is pool  # one per options
    log_post, lengths, tags = batch()
    with pool.lock:
        loss, err = pool.get_batch_loss_and_error_signal(log_posteriors=log_post, seq_lengths=lengths, tags=tags)
    assert pool.protocol == 2 and len(pool.instances) == 2  # this package's child module, two children
    check_batch_result(log_post, lengths, loss, err)
    # bytes tags, as TF's py_func hands them over
    with pool.lock:
        loss_b, err_b = pool.get_batch_loss_and_error_signal(log_post, lengths, [t.encode() for t in tags])
    np.testing.assert_array_equal(loss_b, loss)
    np.testing.assert_array_equal(err_b, err)
    with SprintPool(2, sprint_args=EMULATOR_ARGS) as direct:
        ref_loss, ref_err = direct.get_batch_loss_and_error_signal(log_post, lengths, tags)
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(err, ref_err)


def test_automata_through_returnns_name(installed):
    pool = error_signals.SprintInstancePool.get_global_instance(sprint_opts(num_instances=2))
    _, _, tags = batch()
    with pool.lock:
        edges, weights, start_end = pool.get_automata_for_batch(np.array(tags))
    assert edges.dtype == np.uint32 and weights.dtype == np.float32 and start_end.dtype == np.uint32
    check_automata(edges, weights, start_end)
    with SprintPool(1, sprint_args=EMULATOR_ARGS) as direct:
        ref = direct.get_automata_for_batch(tags)
    for got, want in zip((edges, weights, start_end), ref):
        np.testing.assert_array_equal(got, want)


def test_a_config_naming_returnns_child_gets_ours(installed):
    """A ``sprintConfigStr`` copied from a RETURNN setup names RETURNN's module and path explicitly."""
    import returnn

    extra = f"--*.pymod-path={returnn.__root_dir__} --*.pymod-name=returnn.sprint.control"
    pool = error_signals.SprintInstancePool.get_global_instance(sprint_opts(num_instances=1, extra=extra))
    log_post, lengths, tags = batch(seed=1)
    with pool.lock:
        loss, err = pool.get_batch_loss_and_error_signal(log_post, lengths, tags)
    assert pool.protocol == 2
    check_batch_result(log_post, lengths, loss, err)


def test_without_rewrite_the_children_run_returnns_module(installed):
    """``install(rewrite_child=False)``: our parent, RETURNN's child module (protocol v1), which serves
    automata (RETURNN's child has no loss path of its own in python-control-loop mode)."""
    installed.install(rewrite_child=False)
    pool = error_signals.SprintInstancePool.get_global_instance(sprint_opts(num_instances=1))
    _, _, tags = batch()
    with pool.lock:
        edges, weights, start_end = pool.get_automata_for_batch(tags)
    assert pool.protocol == 1
    check_automata(edges, weights, start_end)


def test_uninstall_closes_the_pools_it_handed_out(installed):
    pool = error_signals.SprintInstancePool.get_global_instance(sprint_opts(num_instances=1))
    with pool.lock:
        pool.get_automata_for_batch(batch()[2][:1])
    child = pool.instances[0]
    assert child.alive
    installed.uninstall()
    assert pool.closed and not child.alive
    assert error_signals.SprintInstancePool.__module__ == "returnn.sprint.error_signals"
