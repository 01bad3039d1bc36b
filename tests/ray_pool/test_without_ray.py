"""Without Ray installed, the package is unchanged and ``sprint_control.ray`` says what to install (run in
a subprocess where ``import ray`` fails, whether or not Ray is installed here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["ray"] = None  # what an interpreter without Ray sees: import ray fails
    import sprint_control
    from sprint_control import SprintPool
    import sprint_control.parent, sprint_control.tools.bench_ray
    assert SprintPool is sprint_control.parent.SprintPool
    try:
        import sprint_control.ray
    except ImportError as exc:
        print("refused:", exc)
    else:
        raise SystemExit("sprint_control.ray imported without Ray")
""")


def test_the_package_works_without_ray_and_the_extra_names_its_install():
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: sprint_control.ray needs Ray: pip install 'sprint_control[ray]'" in done.stdout
