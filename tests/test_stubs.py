"""The type stubs of the compiled modules (``wire/_framing.pyi``, ``fsa/_fsa.pyi``) describe the API both
twins provide, parameter by parameter, and are shipped with the package."""

from __future__ import annotations

import ast
import importlib
import inspect
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: stub -> (the package whose ``API`` lists the names, the pure-Python twin)
STUBS = {
    "sprint_control/wire/_framing.pyi": ("sprint_control.wire.framing", "sprint_control.wire._framing_py"),
    "sprint_control/fsa/_fsa.pyi": ("sprint_control.fsa", "sprint_control.fsa._fsa_py"),
}


def stub_functions(path: str) -> dict[str, list[str]]:
    """name -> parameter names, of every function the stub declares."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            found[node.name] = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    return found


def stub_names(path: str) -> set:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set(stub_functions(path))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("stub", sorted(STUBS))
def test_a_stub_declares_the_whole_api(stub):
    package, _ = STUBS[stub]
    missing = set(importlib.import_module(package).API) - stub_names(stub)
    assert not missing, f"{stub} lacks {sorted(missing)}"


@pytest.mark.parametrize("stub", sorted(STUBS))
def test_a_stub_s_parameters_are_the_twin_s(stub):
    _, twin_name = STUBS[stub]
    twin = importlib.import_module(twin_name)
    functions = stub_functions(stub)
    assert functions, f"{stub} declares no function: the parser is wrong"
    for name, params in functions.items():
        if name.startswith("_") and not hasattr(twin, name):
            continue  # the compiled module's own diagnostics
        assert params == list(inspect.signature(getattr(twin, name)).parameters), f"{stub}: {name}"


def test_the_stubs_are_shipped():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    with open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8") as f:
        manifest = f.read()
    assert '"*.pyi"' in pyproject.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    assert "*.pyi" in manifest
    assert os.path.exists(os.path.join(ROOT, "sprint_control", "py.typed"))
