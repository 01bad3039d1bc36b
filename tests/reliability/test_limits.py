"""What the child cannot take is refused by the parent before anything is sent, with the limit and
the option that raises it in the message; the child stays usable. Both protocols."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from test_child_faults import CORPUS, _check_segment, _posteriors

from sprint_control import ProtocolError, SprintPool
from sprint_control.parent import SprintInstancePool, SprintSubprocessInstance
from sprint_control.wire.constants import DEFAULT_MAX_NAME, DEFAULT_MAX_PAYLOAD

pytestmark = pytest.mark.usefixtures("no_leaks")

SEG = CORPUS.segments[0]


def _closing(inst):
    return contextlib.closing(inst)


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_segment_over_the_default_limit_is_refused_before_sending(emulator, protocol):
    # 8,100 x 12,001 float32 = 388,832,400 bytes > DEFAULT_MAX_PAYLOAD, as a view that costs no memory
    huge = np.broadcast_to(np.float32(-1.0), (8100, 12001))
    with _closing(SprintSubprocessInstance(**emulator(protocol=protocol))) as inst:
        expected = rf"388832400 bytes exceed max_payload = {DEFAULT_MAX_PAYLOAD} bytes.*raise the option max_payload"
        with pytest.raises(ProtocolError, match=expected):
            inst.get_loss_and_error_signal(SEG.name, huge)
        assert inst.alive and not inst.busy and inst.restarts == 0
        _check_segment(inst)


@pytest.mark.parametrize("protocol", [1, 2])
def test_max_payload_is_an_option_of_every_parent_class_and_reaches_the_child(emulator, protocol):
    x = _posteriors(SEG)
    small = x.nbytes - 4
    with _closing(SprintSubprocessInstance(**emulator(protocol=protocol), max_payload=small)) as inst:
        assert f"max_payload:{small}" in ",".join(inst.build_sprint_args(3, 4))
        with pytest.raises(ProtocolError, match=f"exceed max_payload = {small} bytes"):
            inst.get_loss_and_error_signal(SEG.name, x)
        assert inst.segments_done == 0
        _check_segment(inst, index=1)  # (fits: shorter segments pass)
    opts = emulator(protocol=protocol)
    pool_args = dict(sprint_exec=opts.pop("sprintExecPath"), sprint_args=opts.pop("sprintConfigStr"))
    with SprintPool(2, **pool_args, **opts, max_payload=small) as pool:
        with pytest.raises(ProtocolError, match=f"{SEG.name}.*max_payload = {small}"):
            pool.compute(np.stack([x, x], axis=1), [SEG.num_frames, 3], [SEG.name, SEG.name])
        assert all(inst.segments_done == 0 for inst in pool.instances)  # nothing was sent
    rpool = SprintInstancePool({"sprintExecPath": pool_args["sprint_exec"], "sprintConfigStr": pool_args["sprint_args"],
                                **opts, "max_payload": small})
    try:
        with pytest.raises(ProtocolError, match=f"max_payload = {small}"):
            rpool.get_batch_loss_and_error_signal(x[:, None], [SEG.num_frames], [SEG.name])
    finally:
        rpool.close()


@pytest.mark.parametrize("max_payload", [0, -1, 1.5, "big"])
def test_max_payload_must_be_a_positive_byte_count(emulator, max_payload):
    with pytest.raises(ValueError, match="max_payload"):
        SprintSubprocessInstance(**emulator(), max_payload=max_payload, start=False)


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_tag_over_the_name_limit_is_refused_before_sending(emulator, protocol):
    long_name = "x" * 100_000
    x = _posteriors(SEG)
    with _closing(SprintSubprocessInstance(**emulator(protocol=protocol))) as inst:
        for call in (lambda: inst.get_loss_and_error_signal(long_name, x),
                     lambda: inst.export_allophone_state_fsa(long_name)):
            with pytest.raises(ValueError, match=f"100000 bytes.*at most {DEFAULT_MAX_NAME} bytes"):
                call()
        assert inst.alive and inst.restarts == 0 and inst.segments_done == 0
        _check_segment(inst)
    opts = emulator(protocol=protocol)
    with SprintPool(2, opts.pop("sprintExecPath"), opts.pop("sprintConfigStr"), **opts) as pool:
        batch = np.stack([x, x], axis=1)
        with pytest.raises(ValueError, match=f"at most {DEFAULT_MAX_NAME} bytes"):
            pool.compute(batch, [SEG.num_frames] * 2, [SEG.name, long_name])
        with pytest.raises(ValueError, match=f"at most {DEFAULT_MAX_NAME} bytes"):
            pool.automata([SEG.name, long_name])
        assert all(inst.segments_done == 0 for inst in pool.instances)
        _check_segment(pool)

