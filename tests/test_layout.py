"""The package's layout keeps its promises: the old import paths still lead to the same objects,
every module and class fits in a reader's head, and every Cython module is built."""

from __future__ import annotations

import ast
import glob
import importlib
import os
import re

import pytest

import sprint_control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sprint_control")

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 350


# -- old import paths ---------------------------------------------------------------------------------

#: old path -> its home in the sub-packages
MOVED_MODULES = {
    "sprint_control.protocol": "sprint_control.wire.protocol",
    "sprint_control.framing": "sprint_control.wire.framing",
    "sprint_control.shm": "sprint_control.wire.shm",
}

#: what RASR configs and RETURNN-style code import from the Sprint side and the parent side
SPRINT_SIDE_NAMES = ("init", "getSegmentList", "SprintNnPythonLayer", "PythonControl", "print")
PARENT_SIDE_NAMES = ("SprintSubprocessInstance", "SprintInstancePool", "SprintPool")


@pytest.mark.parametrize("old,new", sorted(MOVED_MODULES.items()))
def test_old_module_paths_are_the_new_modules(old, new):
    old_mod = importlib.import_module(old)
    new_mod = importlib.import_module(new)
    assert old_mod is new_mod
    public = [n for n in dir(new_mod) if not n.startswith("_")]
    assert public, f"{new} exports nothing"
    for name in public:
        assert getattr(old_mod, name) is getattr(new_mod, name)


@pytest.mark.parametrize("old,new", sorted(MOVED_MODULES.items()))
def test_from_old_path_import_name_works(old, new):
    """``from sprint_control.protocol import X`` (not only ``import``) gives the new home's object."""
    new_mod = importlib.import_module(new)
    name = next(n for n in sorted(dir(new_mod)) if not n.startswith("_") and not isinstance(getattr(new_mod, n),
                                                                                          type(os)))
    namespace: dict = {}
    exec(f"from {old} import {name}", namespace)
    assert namespace[name] is getattr(new_mod, name)


def test_the_kernel_s_old_path_gives_the_fsa_layer_s_objects():
    old = importlib.import_module("sprint_control.emulator.fsa")
    new = importlib.import_module("sprint_control.fsa")
    for name in new.API:
        assert getattr(old, name) is getattr(new, name), name


def test_the_sprint_side_module_rasr_loads():
    control = importlib.import_module("sprint_control.control")
    for name in SPRINT_SIDE_NAMES:
        assert callable(getattr(control, name)), f"sprint_control.control.{name}"


def test_the_parent_side_module():
    parent = importlib.import_module("sprint_control.parent")
    for name in PARENT_SIDE_NAMES + ("emulator_command",):
        assert callable(getattr(parent, name)), f"sprint_control.parent.{name}"


@pytest.mark.parametrize("name", SPRINT_SIDE_NAMES + PARENT_SIDE_NAMES)
def test_the_package_s_lazy_names_are_the_sides_objects(name):
    home = "sprint_control.control" if name in SPRINT_SIDE_NAMES else "sprint_control.parent"
    namespace: dict = {}
    exec(f"from sprint_control import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(home), name)
    assert name in dir(sprint_control)


def test_an_unknown_package_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        sprint_control.no_such_name  # noqa: B018


# -- README and CI run the same commands --------------------------------------------------------------


def _readme_commands() -> list[str]:
    import runpy

    script = runpy.run_path(os.path.join(ROOT, ".ci", "readme_command.py"))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return script["quick_start_commands"](f.read())


def test_the_quick_start_has_the_demo_and_the_test_command():
    demo, test = _readme_commands()
    assert "sprint-control demo" in demo
    assert "pytest" in test and ".[test]" in test


def test_ci_runs_the_readme_s_test_command_as_written():
    """CI takes the command from README.md (it does not restate it), and runs it before anything else
    is installed into that venv."""
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    taken = ci.find("readme_command.py test")
    assert taken >= 0, ".ci/run does not take the test command from README.md"
    assert _readme_commands()[1] not in ci, ".ci/run restates the README's command instead of reading it"
    first_install = re.search(r"pip install (?!-q --upgrade pip)", ci)
    assert first_install is None or first_install.start() > taken, "something is installed before the README's command"


# -- the test folders ------------------------------------------------------------------------------

#: top-level modules the optional extras bring: tests/ is on sys.path, so a test folder of one of these
#: names would import as that module where the extra is absent, and its tests would error, not skip
OPTIONAL_MODULES = ("torch", "ray", "returnn", "tensorflow", "matplotlib", "i6_models", "triton", "asv")


def test_no_test_folder_shadows_an_optional_module():
    tests = os.path.join(ROOT, "tests")
    folders = {e for e in os.listdir(tests) if os.path.isdir(os.path.join(tests, e))}
    assert folders, "tests/ has no folders: the listing is wrong"
    assert sorted(folders & set(OPTIONAL_MODULES)) == []


# -- sizes ---------------------------------------------------------------------------------------------


def _python_modules() -> list[str]:
    return sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True))


def oversized() -> list[str]:
    """Every module over MAX_MODULE_LINES lines and every class over MAX_CLASS_LINES, with its size."""
    found = []
    for path in _python_modules():
        rel = os.path.relpath(path, ROOT)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(source, rel)):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = node.end_lineno - first + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{rel}: class {node.name}: {size} lines")
    return found


def test_the_size_check_sees_the_package():
    assert len(_python_modules()) > 20
    assert any(p.endswith(os.path.join("wire", "constants.py")) for p in _python_modules())


def test_no_module_or_class_is_too_large():
    assert oversized() == []


# -- the build -------------------------------------------------------------------------------------------


def setup_extensions() -> dict:
    """``EXTENSIONS`` of setup.py, read without running the build."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read(), "setup.py")
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "EXTENSIONS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no EXTENSIONS")


def test_every_pyx_is_built_under_its_module_name():
    pyx_files = sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                       for p in glob.glob(os.path.join(PACKAGE, "**", "*.pyx"), recursive=True))
    assert pyx_files, "no .pyx found: the glob is wrong"
    extensions = setup_extensions()
    assert sorted(pyx for pyx, _ in extensions.values()) == pyx_files
    for module, (pyx, _) in extensions.items():
        assert module == pyx[: -len(".pyx")].replace("/", ".")


def test_each_extension_links_the_c_sources_of_the_headers_it_declares():
    """A ``cdef extern from "x.h"`` whose ``csrc/x.c`` exists needs that file linked; nothing else is."""
    for module, (pyx, sources) in setup_extensions().items():
        with open(os.path.join(ROOT, pyx), encoding="utf-8") as f:
            headers = re.findall(r'^cdef extern from "([^"<>]+)\.h"', f.read(), flags=re.M)
        wanted = sorted(f"csrc/{h}.c" for h in headers if os.path.exists(os.path.join(ROOT, "csrc", f"{h}.c")))
        assert sorted(sources) == wanted, module


# -- the layers import one way ---------------------------------------------------------------------------

#: layer -> the layers its modules may import (the package root, errors and _env are "base")
ALLOWED_IMPORTS = {
    "base": {"base", "wire"},  # the root names IMPLEMENTATION (wire.framing); the sides load lazily by name
    "wire": {"base", "wire"},
    "fsa": {"base", "fsa"},  # the full-sum kernel: below the emulator's criteria and the torch bridge
    "emulator": {"base", "fsa", "emulator"},  # stands alone: it loads the Sprint-side module by name, as RASR does
    "sprint": {"base", "wire", "sprint"},  # the Sprint side's collaborators: below the module RASR loads
    "control": {"base", "wire", "sprint", "control"},  # the module RASR loads, a facade over sprint/
    "parent": {"base", "wire", "parent"},
    "torch": {"base", "wire", "parent", "fsa", "emulator", "torch"},
    # the switch for RETURNN users: a pool under RETURNN's name; for RETURNN's PyTorch engine (returnn_torch) also
    # the torch bridge, whose autograd functions its losses are
    "returnn": {"base", "wire", "parent", "torch", "returnn"},
    "ray": {"base", "wire", "parent", "ray"},  # the optional extra: the parent side on a Ray cluster
    "tools": {"base", "wire", "parent", "fsa", "emulator", "torch", "ray", "tools"},
    "cli": {"base", "tools", "cli"},
    "compat": {"wire"},  # the old module paths
}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    head = parts[0] if parts else ""
    if head in ("", "errors") or (head.startswith("_") and head != "__main__"):
        return "base"  # the root, the errors and private helpers such as _env
    if head in ("framing", "protocol", "shm"):
        return "compat"
    if head in ("cli", "__main__"):
        return "cli"
    if head == "returnn_torch":
        return "returnn"
    if head in ("wire", "fsa", "emulator", "control", "sprint", "parent", "torch", "returnn", "ray", "tools"):
        return head
    raise AssertionError(f"{module}: no layer known for it; add it to test_layout.layer_of")


def _is_module(name: str) -> bool:
    path = os.path.join(ROOT, *name.split("."))
    return os.path.isdir(path) or os.path.exists(path + ".py") or bool(glob.glob(path + ".*.so"))


def package_imports(path: str) -> set:
    """The sprint_control modules ``path`` imports (anywhere in it: also inside functions and under
    ``if TYPE_CHECKING``; a package's ``__init__`` that Python runs on the way is not counted)."""
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    package = rel.rsplit(".", 1)[0] if not rel.endswith("__init__") else rel[: -len(".__init__")]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), rel)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sprint_control"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "sprint_control":
                continue
            for alias in node.names:  # "from pkg import x": x is a module of pkg, or a name in pkg
                sub = f"{module}.{alias.name}"
                found.add(sub if _is_module(sub) else module)
    return found


def test_the_layers_import_one_way():
    wrong = []
    for path in _python_modules():
        module = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
        layer = layer_of(module)
        for imported in sorted(package_imports(path)):
            if layer_of(imported) not in ALLOWED_IMPORTS[layer]:
                wrong.append(f"{module} ({layer}) imports {imported} ({layer_of(imported)})")
    assert wrong == []


def _module_name(path: str) -> str:
    return os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")


def import_graph() -> dict:
    """module -> the package's modules it imports (every import, see ``package_imports``)."""
    graph = {_module_name(p): package_imports(p) for p in _python_modules()}
    return {m: {i for i in imported if i in graph and i != m} for m, imported in graph.items()}


def import_circles(graph: dict) -> list:
    """The groups of modules that import each other, directly or through others (the strongly connected
    components of more than one module, Tarjan's algorithm), each sorted, the list sorted."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    circles = []

    def visit(root: str) -> None:  # iterative: deep chains must not hit the recursion limit
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(circles)


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert import_circles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_imports_in_functions_and_type_checking_blocks():
    graph = import_graph()
    assert "sprint_control.fsa" in graph["sprint_control.emulator.criteria"]  # ``from .. import fsa``
    assert "sprint_control.sprint.segments" in graph["sprint_control.sprint.loop"]  # under ``if TYPE_CHECKING`` only
    assert "sprint_control.ray" in graph["sprint_control.tools.bench_ray"]  # inside a function only


def test_no_import_circle_in_the_package():
    assert import_circles(import_graph()) == []


def test_moved_names_stay_importable_where_they_were():
    from sprint_control import errors, parent
    from sprint_control.parent import failures

    assert parent.MalformedAnswerError is failures.MalformedAnswerError is errors.MalformedAnswerError


def test_the_package_s_all_lists_the_lazy_names():
    assert set(sprint_control._LAZY) <= set(sprint_control.__all__)
