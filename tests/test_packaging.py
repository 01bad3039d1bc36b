"""The sdist holds what a user needs to build, test and read the package, and nothing that was built.

The sdist is built from a copy of this checkout (build outputs included, some planted on purpose),
without build isolation, by the setuptools of the running Python; its file list is compared with the
tree's own files, chosen by rules written here and not by MANIFEST.in. The build must also be quiet:
no "no files found matching" line (a MANIFEST.in pattern that matches nothing) and no setuptools
deprecation (the license as a TOML table, license classifiers).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

import sprint_control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_TEST_EXTRA = 'needs the test extra: pip install "sprint_control[test]"'

#: folders of a checkout that are not sources (venvs, caches, build outputs): never copied, never expected
NOT_SOURCES = {".git", ".venv", "venv", ".asv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis",
               ".ruff_cache", ".mypy_cache", ".tox", ".nox", "wheelhouse"}
#: what the sdist must hold at its top (besides the folders below and setuptools' own metadata)
TOP_FILES = {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "setup.py", "MANIFEST.in"}
#: folders shipped whole: every source file in them
SOURCE_FOLDERS = ("sprint_control", "csrc", "tests", "docs")
#: what setuptools writes into every sdist: PKG-INFO, a setup.cfg of egg_info tags, and the egg-info
SETUPTOOLS_FILES = {"PKG-INFO", "setup.cfg"} | {
    f"sprint_control.egg-info/{n}"
    for n in ("PKG-INFO", "SOURCES.txt", "dependency_links.txt", "entry_points.txt", "requires.txt", "top_level.txt")
}
#: build outputs that a checkout may hold and the sdist must not
BUILD_OUTPUT = re.compile(r"(\.so|\.o|\.pyd|\.py[co])$|(^|/)(__pycache__|build|dist)/|\.egg-info/"
                          r"|^sprint_control/.*/(_[^/]*\.c(pp)?|[^/]*\.html)$")  # Cython's C and annotations
#: files planted in the copy, each a kind of build output
PLANTED = ("sprint_control/wire/_stale.c", "sprint_control/fsa/_fsa.html", "sprint_control/wire/_old.cpython-39.so",
           "csrc/frame_io.o", "tests/control/sprint_host.o", "tests/__pycache__/conftest.cpython-311.pyc",
           "sprint_control/__pycache__/cli.cpython-311.pyc", "build/lib/sprint_control/cli.py",
           "stray.egg-info/PKG-INFO")
#: what setuptools prints for the problems this test guards against
WARNINGS = re.compile(r"^warning: |no files found matching|no previously-included|SetuptoolsDeprecationWarning"
                      r"|SetuptoolsWarning|is deprecated", re.MULTILINE)


def _tree_files() -> set[str]:
    """The checkout's files that are not ignored build outputs, as paths relative to the root: git's
    view (tracked and untracked-but-not-ignored) where git is there, else a walk that skips NOT_SOURCES."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        return {p for p in out.split("\0") if p and os.path.isfile(os.path.join(ROOT, p))}
    except (OSError, subprocess.CalledProcessError):
        found = set()
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in NOT_SOURCES and not d.endswith(".egg-info")]
            rel = os.path.relpath(folder, ROOT)
            found |= {os.path.normpath(os.path.join(rel, n)) for n in names}
        return {p for p in found if not BUILD_OUTPUT.search(p)}


def expected_members(tree: set[str]) -> set[str]:
    """What the sdist of a tree with these files must hold."""
    ship = {p for p in tree if p in TOP_FILES or p.split("/", 1)[0] in SOURCE_FOLDERS and "/" in p}
    return ship | SETUPTOOLS_FILES


def _copy_checkout(dest: str) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in NOT_SOURCES and n not in ("__pycache__", "build") or n.startswith(".venv")}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    for rel in PLANTED:
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("planted build output\n")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tuple[list[str], str, dict]:
    """(the sdist's member files, the build's output, its PKG-INFO fields) of a build of this checkout."""
    pytest.importorskip("build", reason=NEEDS_TEST_EXTRA)
    setuptools = pytest.importorskip("setuptools", reason=NEEDS_TEST_EXTRA)
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than 77; {NEEDS_TEST_EXTRA}")
    pytest.importorskip("Cython", reason=NEEDS_TEST_EXTRA)
    base = tmp_path_factory.mktemp("sdist")
    src, out = str(base / "src"), str(base / "dist")
    _copy_checkout(src)
    env = {k: v for k, v in os.environ.items() if k != "SPRINT_CONTROL_PURE_PYTHON"}
    # the build's own requirement check is skipped: an older numpy than [build-system] asks for makes
    # the same sdist, and setuptools and Cython were checked above
    run = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
                          "--outdir", out, src],
                         cwd=src, env=env, capture_output=True, text=True, timeout=600, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, f"the sdist build failed:\n{log[-4000:]}"
    (archive,) = os.listdir(out)
    top = f"sprint_control-{sprint_control.__version__}"
    assert archive == f"{top}.tar.gz"
    with tarfile.open(os.path.join(out, archive)) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    assert all(m.startswith(top + "/") for m in members), [m for m in members if not m.startswith(top + "/")]
    fields: dict = {}
    for line in pkg_info.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    return [m[len(top) + 1 :] for m in members], log, fields


def test_the_sdist_holds_no_build_output(sdist):
    members, _, _ = sdist
    built = sorted(m for m in members if m not in SETUPTOOLS_FILES and BUILD_OUTPUT.search(m))
    assert built == [], f"build outputs in the sdist: {built}"


def test_the_sdist_holds_exactly_the_sources(sdist):
    members, _, _ = sdist
    want = expected_members(_tree_files())
    got = set(members)
    assert len(got) == len(members), "a file is in the sdist twice"
    assert not want - got and not got - want, f"missing: {sorted(want - got)}; not expected: {sorted(got - want)}"


def test_the_sdist_has_what_a_build_and_the_tests_need(sdist):
    """The rules above are not vacuous: the compiled core's sources, the C the tests compile, a wire
    fixture, the typing marker and the docs are all named."""
    members = set(sdist[0])
    for path in ("sprint_control/wire/_framing.pyx", "sprint_control/fsa/_fsa.pyx", "sprint_control/py.typed",
                 "sprint_control/_version.py", "csrc/frame.h", "csrc/frame_io.c", "tests/control/sprint_host.c",
                 "tests/wire/fixtures/v2_exit.bin", "tests/conftest.py", "docs/architecture.md", "LICENSE",
                 "CHANGELOG.md"):
        assert path in members, path
    assert not any(m.startswith(("benchmarks/", ".ci/")) for m in members)


def test_the_build_prints_no_packaging_warning(sdist):
    _, log, _ = sdist
    found = sorted({line.strip() for line in log.splitlines() if WARNINGS.search(line)})
    assert found == [], "\n".join(found)


def test_the_metadata_has_the_spdx_license_and_the_one_version(sdist):
    _, _, fields = sdist
    assert fields["License-Expression"] == ["MIT"]
    assert fields["License-File"] == ["LICENSE"]
    assert "License" not in fields, "the old free-text License field is still written"
    assert not [c for c in fields.get("Classifier", []) if c.startswith("License ::")]
    assert fields["Version"] == [sprint_control.__version__]


def test_the_version_is_written_once():
    """pyproject.toml takes the version from _version.py, which holds a plain literal (setuptools reads
    it without importing the package), and the package re-exports that same string."""
    import ast

    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \[[^]]*"version"', project, re.MULTILINE), "version is not dynamic"
    assert not re.search(r"^version\s*=", project, re.MULTILINE), "pyproject.toml states a version of its own"
    assert re.search(r'^version = \{ attr = "sprint_control\._version\.__version__" \}', pyproject, re.MULTILINE)
    with open(os.path.join(ROOT, "sprint_control", "_version.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    (value,) = [n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                and [t.id for t in n.targets if isinstance(t, ast.Name)] == ["__version__"]]
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", value), value
    assert sprint_control.__version__ == value


def test_the_console_command_prints_the_version(capsys):
    from sprint_control import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"sprint-control {sprint_control.__version__}"
