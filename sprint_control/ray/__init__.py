"""Sprint children on a Ray cluster: ``RaySprintPool`` is ``SprintPool`` with each child in a Ray actor.

An optional extra (``pip install "sprint_control[ray]"``); nothing else in the package imports this.
Modules: ``options`` (the Ray options, checked once), ``actor`` (what runs in each actor),
``slots`` (the actors as the driver sees them, and their failures), ``pool``. See docs/distributed.md.
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without Ray
    raise ImportError("sprint_control.ray needs Ray: pip install 'sprint_control[ray]' (or pip install 'ray>=2.9')"
                      ) from exc

from .pool import RaySprintPool

__all__ = ["RaySprintPool"]
