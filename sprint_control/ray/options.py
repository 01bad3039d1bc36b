"""The Ray-side options of ``RaySprintPool`` (where its actors run, what they reserve, how long a call
may take), checked once when the pool is made; the Sprint options are ``SprintPool``'s own."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any, Optional

from ..parent import SprintPool
from ..parent.options import checked_seconds

#: Placement-group strategies Ray knows; with one of them the pool reserves one bundle per child.
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: What each child's actor reserves unless told otherwise: the Sprint child is a CPU-bound process.
DEFAULT_RESOURCES: Mapping[str, float] = {"num_cpus": 1}
#: Resource keys that Ray takes as actor options of their own; any other key is a custom resource.
_BUILTIN_RESOURCES = ("num_cpus", "num_gpus", "memory")
#: Seconds added to each bound on a Ray call, for Ray's own scheduling and transfer.
RAY_GRACE = 10.0

#: The keyword arguments of ``SprintPool`` that a ``RaySprintPool`` passes on to each actor's pool.
_POOL_PARAMETERS = inspect.signature(SprintPool.__init__).parameters


def checked_pool_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``SprintPool``'s keyword arguments, unknown names refused (``start`` is the Ray pool's own)."""
    unknown = sorted(k for k in options if k not in _POOL_PARAMETERS or k in ("self", "num_instances", "start"))
    if unknown:
        known = sorted(k for k in _POOL_PARAMETERS if k not in ("self", "num_instances", "start"))
        raise TypeError(f"RaySprintPool got unknown option(s) {unknown}; it takes SprintPool's ({', '.join(known)})"
                        " and the Ray options")
    return dict(options)


def _checked_resources(resources: Optional[Mapping[str, Any]]) -> dict[str, float]:
    if resources is None:
        return dict(DEFAULT_RESOURCES)
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a mapping such as {{'num_cpus': 1}}, got {type(resources).__name__}")
    out: dict[str, float] = {}
    for key, value in resources.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"resource names must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"resource {key!r} must be a non-negative number, got {value!r}")
        out[key] = value
    return out


def _checked_labels(node_label: Optional[Mapping[str, str]]) -> Optional[dict[str, str]]:
    if node_label is None:
        return None
    if not isinstance(node_label, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in node_label.items()):
        raise TypeError(f"node_label must map label names to values (str to str), got {node_label!r:.100}")
    return dict(node_label)


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where the actors run and how long a call to one may take (see ``RaySprintPool``)."""

    address: Optional[str] = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    placement: Optional[str] = None
    scheduling_strategy: Any = None
    node_label: Optional[Mapping[str, str]] = None
    actor_timeout: Optional[float] = None
    ray_init: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def checked(cls, *, address: Optional[str], resources: Optional[Mapping[str, Any]], placement: Optional[str],
                scheduling_strategy: Any, node_label: Optional[Mapping[str, str]],
                actor_timeout: Optional[float], ray_init: Optional[Mapping[str, Any]]) -> RayOptions:
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a Ray address string such as 'auto' or 'ray://head:10001',"
                            f" got {address!r}")
        if placement is not None and placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)} (a placement group with one bundle"
                             f" per child) or None, got {placement!r}")
        if placement is not None and scheduling_strategy is not None:
            raise ValueError("give either placement (the pool makes a placement group) or scheduling_strategy,"
                             " not both")
        if ray_init is not None and not isinstance(ray_init, Mapping):
            raise TypeError(f"ray_init must be a mapping of ray.init keyword arguments, got {ray_init!r:.100}")
        return cls(address, _checked_resources(resources), placement, scheduling_strategy,
                   _checked_labels(node_label), checked_seconds("actor_timeout", actor_timeout),
                   dict(ray_init or {}))

    def bundle(self) -> dict[str, float]:
        """One placement-group bundle: Ray's resource names (``CPU``, ``GPU``, ``memory``, custom)."""
        names = {"num_cpus": "CPU", "num_gpus": "GPU"}
        return {names.get(k, k): v for k, v in self.resources.items() if v}

    def actor_options(self, placement_group: Any = None, bundle_index: int = -1) -> dict[str, Any]:
        """Keyword arguments of ``ActorClass.options`` for one child's actor."""
        opts: dict[str, Any] = {k: v for k, v in self.resources.items() if k in _BUILTIN_RESOURCES}
        custom = {k: v for k, v in self.resources.items() if k not in _BUILTIN_RESOURCES}
        opts.setdefault("num_cpus", 0)  # exactly what ``resources`` says (Ray would hold 1 CPU to place an actor)
        if custom:
            opts["resources"] = custom
        opts["max_restarts"] = 0  # the pool replaces a lost actor itself, so it can say which one was lost
        if self.node_label:
            opts["label_selector"] = dict(self.node_label)
        if placement_group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group, bundle_index)
        elif self.scheduling_strategy is not None:
            opts["scheduling_strategy"] = self.scheduling_strategy
        return opts
