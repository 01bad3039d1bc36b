"""``sprint_control.returnn.install()``: where it puts the pool, idempotence, ``uninstall()``, and the
child options it derives from RETURNN's ``sprint_opts`` (the command-line rewrite)."""

from __future__ import annotations

import os
import sys

import pytest
from support import extra_reason

error_signals = pytest.importorskip("returnn.sprint.error_signals", reason=extra_reason("returnn.sprint.error_signals"))

from sprint_control import returnn as bridge  # noqa: E402
from sprint_control.parent import DEFAULT_MODULE_NAME, SprintInstancePool, default_module_path  # noqa: E402

RETURNN_POOL = error_signals.SprintInstancePool
RETURNN_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(error_signals.__file__))))


@pytest.fixture(autouse=True)
def _always_uninstalled():
    bridge.uninstall()
    yield
    bridge.uninstall()


def test_install_swaps_the_pool_and_uninstall_restores_it():
    assert RETURNN_POOL.__module__ == "returnn.sprint.error_signals"
    cls = bridge.install()
    assert cls is bridge.ReturnnInstancePool and issubclass(cls, SprintInstancePool)
    assert error_signals.SprintInstancePool is cls and bridge.installed()
    bridge.uninstall()
    assert error_signals.SprintInstancePool is RETURNN_POOL and not bridge.installed()
    # what does not hold RETURNN's class is left alone
    assert sys.modules["sprint_control.parent"].SprintInstancePool is SprintInstancePool
    assert sys.modules["sprint_control.returnn"].ReturnnInstancePool is cls


def test_install_is_idempotent_and_one_uninstall_undoes_it():
    bridge.install()
    bridge.install()
    bridge.install(rewrite_child=False)
    assert error_signals.SprintInstancePool is bridge.ReturnnInstancePool
    assert bridge.ReturnnInstancePool.rewrite_child is False  # the last call's setting
    bridge.uninstall()
    assert error_signals.SprintInstancePool is RETURNN_POOL
    bridge.uninstall()  # not installed: nothing to do
    assert error_signals.SprintInstancePool is RETURNN_POOL
    assert bridge.ReturnnInstancePool.rewrite_child is True


def test_a_module_that_imported_the_name_before_install_is_swapped_too(monkeypatch):
    import types

    holder = types.ModuleType("a_returnn_config_module")
    holder.SprintInstancePool = RETURNN_POOL  # ``from returnn.sprint.error_signals import SprintInstancePool``
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    bridge.install()
    assert holder.SprintInstancePool is bridge.ReturnnInstancePool
    later = types.ModuleType("imported_after_install")
    later.SprintInstancePool = error_signals.SprintInstancePool  # what a later import binds
    monkeypatch.setitem(sys.modules, later.__name__, later)
    bridge.uninstall()
    assert holder.SprintInstancePool is RETURNN_POOL and later.SprintInstancePool is RETURNN_POOL


def test_child_options_rewrite_returnns_module_with_and_without_path():
    returnn_args = (f"--*.pymod-path={RETURNN_ROOT} --*.pymod-name=returnn.sprint.control"
                    f" --*.python-segment-order-pymod-path={RETURNN_ROOT}"
                    " --*.python-segment-order-pymod-name=returnn.sprint.control --*.corpus.file=c.txt")
    opts = bridge.child_options({"sprintExecPath": "/x/nn-trainer", "sprintConfigStr": returnn_args})
    assert opts["sprintConfigStr"] == [
        f"--*.pymod-path={default_module_path()}", f"--*.pymod-name={DEFAULT_MODULE_NAME}",
        f"--*.python-segment-order-pymod-path={default_module_path()}",
        f"--*.python-segment-order-pymod-name={DEFAULT_MODULE_NAME}", "--*.corpus.file=c.txt"]
    assert "module_name" not in opts and "module_path" not in opts  # the pool's default: ours
    # a name alone (any selector), and a path alone (RETURNN's module is the default name)
    opts = bridge.child_options({"sprintConfigStr": "--trainer.pymod-name=returnn.sprint.control"})
    assert opts["sprintConfigStr"] == [f"--trainer.pymod-name={DEFAULT_MODULE_NAME}"]
    opts = bridge.child_options({"sprintConfigStr": f"--pymod-path={RETURNN_ROOT}"})
    assert opts["sprintConfigStr"] == [f"--pymod-path={default_module_path()}"]
    # the option of this package's pool naming RETURNN's module
    opts = bridge.child_options({"module_name": "returnn.sprint.control", "module_path": RETURNN_ROOT})
    assert "module_name" not in opts and "module_path" not in opts


def test_child_options_leave_a_users_own_module_alone():
    args = "--*.pymod-path=/my/dir --*.pymod-name=my_control --*.python-segment-order-pymod-name=my_order"
    opts = bridge.child_options({"sprintConfigStr": args, "module_name": "my_control", "module_path": "/my/dir"})
    assert opts["sprintConfigStr"] == args.split()
    assert (opts["module_name"], opts["module_path"]) == ("my_control", "/my/dir")
    # only the segment-order family names RETURNN's module (the last name given wins, as in RASR)
    args = "--*.pymod-name=returnn.sprint.control --*.pymod-name=mine --*.python-segment-order-pymod-path=/r"
    assert bridge.child_options({"sprintConfigStr": args})["sprintConfigStr"] == [
        "--*.pymod-name=returnn.sprint.control", "--*.pymod-name=mine",
        f"--*.python-segment-order-pymod-path={default_module_path()}"]


def test_child_options_without_rewrite_keep_returnns_child():
    args = "--*.pymod-name=returnn.sprint.control --*.corpus.synthetic=3"
    opts = bridge.child_options({"sprintConfigStr": args}, rewrite_child=False)
    assert opts["sprintConfigStr"] == args.split()
    assert (opts["module_name"], opts["module_path"]) == ("returnn.sprint.control", RETURNN_ROOT)


def test_child_options_read_sprint_config_str_as_returnn_does(monkeypatch):
    from returnn.config import Config

    monkeypatch.setenv("SC_TEST_EXTRA", "--*.corpus.seed=4")
    opts = bridge.child_options({"sprintConfigStr": lambda: ["--*.corpus.synthetic=2", "$SC_TEST_EXTRA"]})
    assert opts["sprintConfigStr"] == ["--*.corpus.synthetic=2", "--*.corpus.seed=4"]
    config = Config({"my_sprint_args": "--*.pymod-name=returnn.sprint.control --*.log-level=error"})
    monkeypatch.setattr("returnn.config.get_global_config", lambda *a, **k: config)
    opts = bridge.child_options({"sprintConfigStr": "config:my_sprint_args"})
    assert opts["sprintConfigStr"] == [f"--*.pymod-name={DEFAULT_MODULE_NAME}", "--*.log-level=error"]
