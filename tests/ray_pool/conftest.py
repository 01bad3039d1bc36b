"""Fixtures of the Ray pool tests: one local Ray cluster per test module (2 CPUs, no dashboard, no usage
statistics, the node given as 127.0.0.1), and the emulator's arguments with a small synthetic corpus.

The folder is not called ``ray``: tests/ is on ``sys.path``, and a folder ``tests/ray`` would then be
importable as ``ray`` where Ray is not installed, so ``pytest.importorskip("ray")`` would not skip."""

from __future__ import annotations

import os
import sys

import pytest
from support import extra_reason

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from raylib import NODE_LABEL, require_loopback_only  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the whole test module (starting one costs seconds)."""
    ray = pytest.importorskip("ray", reason=extra_reason("ray"))
    require_loopback_only()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", labels=NODE_LABEL,
             log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    try:
        yield ray
    finally:
        ray.shutdown()
