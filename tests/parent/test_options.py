"""The parent side's options: defined once (``ParentOptions``), checked once when they are given, the
same for ``SprintPool``, RETURNN's ``sprint_opts`` and ``SprintSubprocessInstance``; the parent's own
``--*.pymod-config`` keys cannot be overridden through ``control_config``."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sprint_control.parent import SprintInstancePool, SprintPool, SprintSubprocessInstance, emulator_command
from sprint_control.parent.options import DEFAULTS, RESERVED_CONFIG_KEYS, ParentOptions


@pytest.mark.parametrize("key", RESERVED_CONFIG_KEYS)
def test_control_config_cannot_set_the_parent_s_own_keys(key):
    with pytest.raises(ValueError, match=rf"control_config \(sprintControlConfig\) must not set {key}:"):
        SprintPool(1, start=False, control_config={key: 1})
    with pytest.raises(ValueError, match=f"must not set {key}"):
        SprintInstancePool({"sprintExecPath": emulator_command(), "sprintControlConfig": {key: "1"}})
    with pytest.raises(ValueError, match=f"must not set {key}"):
        SprintSubprocessInstance(emulator_command(), sprintControlConfig={key: 1}, start=False)


def test_every_reserved_key_is_named_at_once():
    with pytest.raises(ValueError) as info:
        ParentOptions(control_config={"p2c_fd": 3, "max_payload": 100, "verbose": "true"})
    assert "must not set p2c_fd, max_payload:" in str(info.value)
    assert "verbose" not in str(info.value)


def test_other_control_config_keys_reach_the_child_command_line():
    inst = SprintSubprocessInstance(emulator_command(), sprintControlConfig={"verbose": "true"}, start=False)
    args = inst.build_sprint_args(7, 8)
    config = next(a for a in args if a.startswith("--*.pymod-config="))
    version, limit = DEFAULTS.min_python_control_version, DEFAULTS.max_payload
    assert config == (f"--*.pymod-config=c2p_fd:7,p2c_fd:8,minPythonControlVersion:{version},"
                      f"max_payload:{limit},verbose:true")


def test_returnn_keys_and_own_names_give_the_same_options():
    returnn = ParentOptions.from_returnn({"sprintExecPath": "/x/nn-trainer", "numInstances": 3,
                                          "sprintConfigStr": "--a=1 --b=2", "sprintControlConfig": {"k": "v"},
                                          "usePythonSegmentOrder": False, "minPythonControlVersion": 4,
                                          "timeout": 7})
    own = ParentOptions(sprint_exec="/x/nn-trainer", num_instances=3, sprint_args=["--a=1", "--b=2"],
                        control_config={"k": "v"}, use_python_segment_order=False, min_python_control_version=4,
                        timeout=7.0)
    assert returnn == own
    assert returnn.sprint_args == ("--a=1", "--b=2") and returnn.timeout == 7.0


def test_a_pool_and_its_children_share_one_options_object():
    pool = SprintInstancePool({"sprintExecPath": emulator_command(), "numInstances": 2, "timeout": 9})
    try:
        inst = pool._new_instance(start=False)
        assert inst.options is pool.options
        assert inst.timeout == 9.0 and pool.max_num_instances == 2
    finally:
        pool.close()


@pytest.mark.parametrize("opts,message", [
    ({"sprintExecPath": "x", "bogus": 1}, "SprintInstancePool got unknown option(s) 'bogus'"),
    ({"sprintExecPath": "x", "numInstances": 0}, "num_instances must be a whole number of at least 1, got 0"),
    ({"sprintExecPath": "x", "timeout": -1}, "timeout must be a positive number of seconds or None"),
    ({"sprintExecPath": "x", "exit_timeout": None}, "exit_timeout must be a positive number of seconds, got None"),
    ({"sprintExecPath": "x", "max_payload": 0}, "max_payload must be a positive whole number of bytes"),
    ({"sprintExecPath": "x", "protocol": 3}, "protocol must be 1 or 2, got 3"),
    ({"sprintExecPath": "x", "sprint_exec": "y"}, "got option 'sprint_exec' twice"),
    ({"numInstances": 1}, "needs sprint_opts['sprintExecPath']"),
])
def test_bad_returnn_options_are_refused_when_the_pool_is_made(opts, message):
    with pytest.raises((TypeError, ValueError)) as info:
        SprintInstancePool(opts)
    assert message in str(info.value)


def test_an_instance_refuses_the_pool_s_options_and_a_mix_of_both_ways():
    with pytest.raises(TypeError, match="the pool's option"):
        SprintSubprocessInstance(emulator_command(), num_instances=2, start=False)
    with pytest.raises(TypeError, match="either options= or the options one by one"):
        SprintSubprocessInstance(emulator_command(), options=DEFAULTS, start=False)


def test_sprint_pool_s_signature_lists_every_option_with_its_default():
    params = inspect.signature(SprintPool.__init__).parameters
    for field in dataclasses.fields(ParentOptions):
        assert field.name in params, field.name
        assert params[field.name].default == field.default, field.name
    assert list(params)[:4] == ["self", "num_instances", "sprint_exec", "sprint_args"]
    assert params["start"].default is True
