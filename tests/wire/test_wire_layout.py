"""The wire's public names, the Sprint side's version, and the one child command loop (the old
import paths and the size limits are checked for the whole package in tests/test_layout.py)."""

from __future__ import annotations

import pathlib

import sprint_control

PACKAGE = pathlib.Path(sprint_control.__file__).parent


def test_the_protocol_module_offers_both_ends_and_the_constants():
    from sprint_control.wire import protocol
    from sprint_control.wire.child_link import ChildLink
    from sprint_control.wire.parent_link import ParentLink

    assert protocol.ParentLink is ParentLink and protocol.ChildLink is ChildLink
    assert issubclass(protocol.Link, ParentLink) and issubclass(protocol.Link, ChildLink)
    assert (protocol.PROTOCOL_V1, protocol.PROTOCOL_V2, protocol.SUPPORTED_PROTOCOLS) == (1, 2, (1, 2))
    assert protocol.INIT_VERSION == 1 and protocol.V1_MAX_MESSAGE == 2**31 - 1
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name


def test_the_sprint_side_keeps_its_module_and_version():
    from sprint_control import control
    from sprint_control.wire.protocol import INIT_VERSION

    assert control.PythonControl.Version == INIT_VERSION
    for name in ("init", "getSegmentList", "SprintNnPythonLayer", "PythonControl", "print"):
        assert getattr(sprint_control, name) is getattr(control, name), name  # --*.pymod-name=sprint_control
    assert callable(control.parse_config) and callable(control.guard_parent)


def _sources(*parts):
    for part in parts:
        path = PACKAGE / part
        yield from sorted(path.glob("*.py")) if path.is_dir() else [path]


def test_the_child_command_loop_exists_once():
    readers = [p.relative_to(PACKAGE).as_posix() for p in _sources("wire", "sprint", "tools", "control.py")
               if ".recv_command()" in p.read_text()]
    assert readers == ["wire/server.py"]
