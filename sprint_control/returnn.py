"""RETURNN users in one line: ``import sprint_control.returnn; sprint_control.returnn.install()``.

RETURNN looks its Sprint pool up by name at call time: ``returnn.sprint.error_signals.SprintInstancePool``,
and ``returnn.tf.sprint`` binds the same name at its import (``loss="sprint"`` through
``py_get_sprint_loss_and_error_signal``, fast Baum-Welch automata through
``py_get_sprint_automata_for_batch``; both call ``get_global_instance(sprint_opts)`` and then, under
``pool.lock``, ``get_batch_loss_and_error_signal`` or ``get_automata_for_batch``). ``install()`` puts
``ReturnnInstancePool`` (this package's pool) under that name in every module that holds RETURNN's
class, whatever was imported first: it imports ``returnn.sprint.error_signals`` itself, so a module
imported later (``from returnn.sprint.error_signals import SprintInstancePool``) binds ours, and an
import hook keeps the swap when that module is executed again (``importlib.reload``, a fresh import).
Old-style aliases (``returnn.TFSprint``, ``SprintErrorSignals``) are the same module objects.

RETURNN's pool starts its children with ``--*.pymod-name=returnn.sprint.control`` and
``--*.pymod-path=<RETURNN's root>``. The installed pool starts them with this package's Sprint-side
module instead (protocol v2, numpy 2), and rewrites a ``pymod-name=returnn.sprint.control`` given in
``sprintConfigStr`` (and the ``pymod-path`` of the same family) to this package's, unless
``install(rewrite_child=False)``: then the children run RETURNN's module, as RETURNN's pool would
start them (protocol v1). A module named inside a RASR config file (``--config=...``) is left alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import re
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any, Optional

from .parent import DEFAULT_MODULE_NAME, SprintInstancePool, default_module_path

__all__ = [
    "RETURNN_CHILD_MODULE",
    "RETURNN_POOL_MODULE",
    "ReturnnInstancePool",
    "child_options",
    "install",
    "installed",
    "uninstall",
]

#: The Sprint-side module RETURNN's pool names on the child's command line.
RETURNN_CHILD_MODULE = "returnn.sprint.control"
#: Where RETURNN defines its pool (every other holder imports the name from here).
RETURNN_POOL_MODULE = "returnn.sprint.error_signals"
POOL_NAME = "SprintInstancePool"

# ``--<selector>.pymod-name=`` / ``pymod-path`` and the ``python-segment-order-`` family; the
# selector is optional (``--pymod-name=x`` is a valid RASR argument).
_MODULE_ARG = re.compile(r"^--(?:.*\.)?(?P<family>python-segment-order-)?pymod-(?P<what>name|path)=(?P<value>.*)$",
                         re.S)


def _returnn_root() -> str:
    """The directory holding the ``returnn`` package (RETURNN's ``--*.pymod-path``)."""
    import returnn

    return returnn.__root_dir__


def _config_args(value: Any) -> list[str]:
    """``sprintConfigStr`` as RETURNN reads it: a ``config:<key>`` prefix names an entry of RETURNN's
    global config; strings are split like a shell, with ``$VAR`` and callables evaluated."""
    from returnn.util.basic import eval_shell_str

    if isinstance(value, str) and value.startswith("config:"):
        from returnn.config import get_global_config

        config = get_global_config()
        if config is None:
            raise ValueError(f"sprintConfigStr {value!r} names RETURNN's config, but no RETURNN config is loaded")
        value = config.typed_dict[value[len("config:"):]]
    return eval_shell_str(value)


def _rewrite_args(args: list[str]) -> list[str]:
    """Points every module family of ``args`` that ends up naming RETURNN's child at ours."""
    effective: dict[str, str] = {"": RETURNN_CHILD_MODULE, "python-segment-order-": RETURNN_CHILD_MODULE}
    for a in args:
        m = _MODULE_ARG.match(a)
        if m and m["what"] == "name":
            effective[m["family"] or ""] = m["value"]  # the last one wins, as in RASR
    out = []
    for a in args:
        m = _MODULE_ARG.match(a)
        if m and effective[m["family"] or ""] == RETURNN_CHILD_MODULE:
            ours = DEFAULT_MODULE_NAME if m["what"] == "name" else default_module_path()
            a = a[: m.start("value")] + ours
        out.append(a)
    return out


def child_options(sprint_opts: Mapping[str, Any], rewrite_child: bool = True) -> dict[str, Any]:
    """The options of ``sprint_control``'s pool for RETURNN's ``sprint_opts``: ``sprintConfigStr``
    evaluated as RETURNN does, and the child module this package's (``rewrite_child``) or RETURNN's
    (with RETURNN's root as its path, as RETURNN's pool starts it)."""
    opts = dict(sprint_opts)
    if "sprintConfigStr" in opts:
        args = _config_args(opts["sprintConfigStr"])
        opts["sprintConfigStr"] = _rewrite_args(args) if rewrite_child else args
    if rewrite_child:
        if opts.get("module_name", RETURNN_CHILD_MODULE) == RETURNN_CHILD_MODULE:
            opts.pop("module_name", None)
            opts.pop("module_path", None)
    elif "module_name" not in opts:
        opts["module_name"] = RETURNN_CHILD_MODULE
        opts.setdefault("module_path", _returnn_root())
    return opts


class ReturnnInstancePool(SprintInstancePool):
    """``sprint_control``'s pool under RETURNN's name: same ``get_global_instance``, ``lock``,
    ``get_batch_loss_and_error_signal`` and ``get_automata_for_batch``; ``sprint_opts`` are RETURNN's
    (see ``child_options``). One pool per distinct options, as in RETURNN."""

    class_lock = threading.RLock()
    global_instances: dict[Any, ReturnnInstancePool] = {}  # type: ignore[assignment]  # a registry of its own
    #: set by ``install``: whether the children load this package's module instead of RETURNN's
    rewrite_child = True

    @classmethod
    def get_global_instance(cls, sprint_opts: Mapping[str, Any]) -> ReturnnInstancePool:
        from returnn.util.basic import make_hashable

        key = (make_hashable(dict(sprint_opts)), cls.rewrite_child)
        with cls.class_lock:
            pool = cls.global_instances.get(key)
            if pool is None or pool.closed:
                pool = cls(sprint_opts)
                cls.global_instances[key] = pool
            return pool

    def __init__(self, sprint_opts: Mapping[str, Any]):
        super().__init__(child_options(sprint_opts, self.rewrite_child))

    @classmethod
    def close_global_instances(cls) -> None:
        with cls.class_lock:
            pools = list(cls.global_instances.values())
            cls.global_instances.clear()
        for pool in pools:
            pool.close()


_lock = threading.RLock()
_original: Optional[type] = None  # RETURNN's class while installed


def _module_dict(mod: Any) -> Optional[dict]:
    """A module's own namespace, without triggering a lazy module's import (RETURNN's old-style
    aliases load their module when their ``__dict__`` is asked for)."""
    if not isinstance(mod, types.ModuleType):
        return None
    try:
        d = object.__getattribute__(mod, "__dict__")
    except AttributeError:
        return None
    return d if isinstance(d, dict) else None


def _swap_everywhere(old: type, new: type) -> int:
    """Rebinds ``SprintInstancePool`` to ``new`` in every module where it is ``old``; returns how many."""
    count = 0
    for mod in list(sys.modules.values()):
        d = _module_dict(mod)
        if d is not None and d.get(POOL_NAME) is old:
            d[POOL_NAME] = new
            count += 1
    return count


class _Loader(importlib.abc.Loader):
    """Runs RETURNN's pool module with its own loader, then puts the installed class in it: a module
    executed again while installed (``importlib.reload``, or a fresh import after it was dropped from
    ``sys.modules``) keeps the swap, and so do the modules that import the name from it."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        global _original
        self.loader.exec_module(module)
        with _lock:
            fresh = vars(module).get(POOL_NAME)
            if _original is not None and isinstance(fresh, type) and fresh is not ReturnnInstancePool:
                _original = fresh  # RETURNN's class as it is now: what uninstall() puts back
                vars(module)[POOL_NAME] = ReturnnInstancePool


class _Finder(importlib.abc.MetaPathFinder):
    """Hands RETURNN's pool module to ``_Loader``; every other import passes untouched."""

    def find_spec(self, fullname, path, target=None):
        if fullname != RETURNN_POOL_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_finder = _Finder()


def install(rewrite_child: bool = True) -> type:
    """Makes RETURNN use ``sprint_control``'s pool (``ReturnnInstancePool``) wherever it looks its
    Sprint pool up, now and in modules imported later. ``rewrite_child`` (default True): the children
    load this package's Sprint-side module even where RETURNN names its own; False keeps RETURNN's
    module on the child side. Idempotent (a second call only updates ``rewrite_child``); returns the
    installed class."""
    global _original
    with _lock:
        ReturnnInstancePool.rewrite_child = bool(rewrite_child)
        try:
            pool_module = importlib.import_module(RETURNN_POOL_MODULE)
        except ImportError as exc:
            raise ImportError(f'sprint_control.returnn.install() needs RETURNN: pip install "sprint_control[returnn]"'
                              f" ({exc})") from exc
        if _original is None:
            original = getattr(pool_module, POOL_NAME)
            if original is ReturnnInstancePool:  # pragma: no cover - only if someone assigned it by hand
                raise RuntimeError(f"{RETURNN_POOL_MODULE}.{POOL_NAME} is already sprint_control's pool")
            _original = original
        _swap_everywhere(_original, ReturnnInstancePool)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        return ReturnnInstancePool


def uninstall() -> None:
    """Puts RETURNN's own pool back in every module that holds ``ReturnnInstancePool`` (also those
    imported after ``install``) and closes the pools handed out meanwhile. Does nothing when not
    installed."""
    global _original
    with _lock:
        if _original is None:
            return
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _swap_everywhere(ReturnnInstancePool, _original)
        _original = None
        ReturnnInstancePool.rewrite_child = True
    ReturnnInstancePool.close_global_instances()


def installed() -> bool:
    """True between ``install()`` and ``uninstall()``."""
    return _original is not None
