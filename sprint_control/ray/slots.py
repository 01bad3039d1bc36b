"""The actors of a ``RaySprintPool``: one ``ActorSlot`` per Sprint child (its actor, where that runs,
its replacement when it is lost), and ``collect``, which waits for a round of calls within a bound and
turns every way a call can fail into one error of the package's hierarchy that names the actor."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from ..errors import SprintChildError, SprintTimeoutError
from .actor import Failure, SprintActor
from .options import RayOptions

logger = logging.getLogger("sprint_control.ray")

_actor_class: Any = None


def actor_class() -> Any:
    """``SprintActor`` as a Ray actor class (made once; Ray imports the module by name on the nodes)."""
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(SprintActor)
    return _actor_class


def _node_addresses() -> dict[str, str]:
    """Node id -> the address the node serves on, from Ray's node table."""
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}


def _first_lines(exc: BaseException, n: int = 3) -> str:
    """The first ``n`` non-empty lines of an error's text, without the terminal colours Ray puts in."""
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return " / ".join(lines[:n]) + (" ..." if len(lines) > n else "")


def _segments(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ActorSlot:
    """The place of child ``index`` in the pool: the actor that holds it now, and where it runs."""

    def __init__(self, index: int, args: tuple, options: RayOptions, placement_group: Any = None):
        self.index = index
        self._args = args
        self._options = options
        self._placement_group = placement_group
        self.handle: Any = None
        self.info: Optional[dict[str, Any]] = None
        self._info_ref: Any = None
        self.replacements = 0

    def spawn(self) -> None:
        """Asks Ray for the actor (it starts its Sprint child in its constructor); does not wait."""
        opts = self._options.actor_options(self._placement_group, self.index if self._placement_group else -1)
        self.handle = actor_class().options(**opts).remote(*self._args)
        self._info_ref = self.handle.info.remote()
        self.info = None

    def describe(self) -> str:
        """Which actor, on which node, with which processes (as far as known)."""
        if self.info is None:
            return f"Ray actor {self.index} (not placed yet)"
        i = self.info
        return (f"Ray actor {self.index} (node {i['node_ip']} {i['hostname']}, node id {i['node_id'][:12]},"
                f" actor pid {i['pid']}, Sprint child pid {i['child_pid']})")

    def wait_ready(self, bound: Optional[float]) -> None:
        """Waits for the actor to run with its child; gives it up (and says why) when it does not."""
        if self.handle is None:
            self.spawn()
        if self.info is not None:
            return
        try:
            info = ray.get(self._info_ref, timeout=bound)
        except GetTimeoutError:
            self.kill()
            where = f" with labels {dict(self._options.node_label)}" if self._options.node_label else ""
            raise SprintTimeoutError(
                f"Ray actor {self.index} did not start within {bound} s: no node offers resources"
                f" {dict(self._options.resources)}{where}, or its Sprint child is slow to start; it was given up"
                " (the next call asks Ray again)") from None
        except RayActorError as exc:
            self.kill()
            raise SprintChildError(f"Ray actor {self.index} could not start its Sprint child: {_first_lines(exc, 8)}"
                                   ) from None
        info["node_ip"] = _node_addresses().get(info["node_id"], "?")
        self.info = info
        failure = info.pop("start_error")
        if failure is not None:
            where = self.describe()
            self.kill()
            raise failure.error(where)

    def refresh(self, bound: Optional[float]) -> Optional[dict[str, Any]]:
        """What the running actor says about itself now (None when there is no running actor)."""
        if self.info is None:
            return None
        info = ray.get(self.handle.info.remote(), timeout=bound)
        info["node_ip"] = self.info["node_ip"]
        del info["start_error"]
        self.info = info
        return dict(info)

    def replace(self) -> None:
        """The actor is lost or stuck: kill it and ask for a new one (started, not waited for)."""
        self.kill()
        self.replacements += 1
        self.spawn()

    def kill(self) -> None:
        if self.handle is not None:
            try:
                ray.kill(self.handle, no_restart=True)
            except Exception as exc:  # pragma: no cover - an actor Ray has forgotten already
                logger.debug("ray.kill of actor %d: %s", self.index, exc)
        self.handle = None
        self.info = None
        self._info_ref = None

    def close(self, bound: float) -> None:
        """Lets the child exit cleanly (bounded), then ends the actor and waits until Ray has seen it end."""
        handle = self.handle
        if handle is None:
            return
        if self.info is not None:
            try:
                ray.get(handle.close.remote(), timeout=bound)
            except Exception as exc:  # the actor is gone or stuck: the kill below ends it all the same
                logger.debug("closing actor %d: %s", self.index, _first_lines(exc, 1))
        self.kill()
        try:  # a call to a killed actor fails once Ray knows it is dead: wait for that, bounded
            ray.get(handle.info.remote(), timeout=bound)
        except Exception:
            pass


def collect(calls: Sequence[tuple[ActorSlot, Any, Sequence[str]]], bound: Optional[float], what: str,
            on_result: Callable[[int, Any], None]) -> None:
    """Waits for every call ``(slot, object ref, segment names)`` within ``bound`` seconds and hands
    each result to ``on_result(k, value)``. Then raises the first failure (the others are logged): a
    ``Failure`` as its own class, a lost actor as SprintChildError, a call past the bound as
    SprintTimeoutError; a lost or stuck actor is replaced."""
    deadline = None if bound is None else time.monotonic() + bound
    pending = {call[1]: k for k, call in enumerate(calls)}
    errors: list[BaseException] = []
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        # one at a time: an answer is copied out while the other actors still compute
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=remaining)
        if not ready:
            break
        for ref in ready:
            k = pending.pop(ref)
            slot, _, names = calls[k]
            try:
                value = ray.get(ref)
            except RayActorError as exc:
                where = slot.describe()
                slot.replace()
                errors.append(SprintChildError(
                    f"{where} was lost while computing {what} of segments {_segments(names)}: {_first_lines(exc)};"
                    " a new actor was started"))
                continue
            except Exception as exc:  # an unexpected error in the actor's own code: as Ray raised it
                errors.append(exc)
                continue
            if isinstance(value, Failure):
                errors.append(value.error(slot.describe()))
            else:
                on_result(k, value)
    for k in pending.values():  # past the bound: the node is gone or the actor stuck
        slot, _, names = calls[k]
        where = slot.describe()
        slot.replace()
        errors.append(SprintTimeoutError(
            f"{where} gave no answer within {bound} s while computing {what} of segments {_segments(names)};"
            " its node may be gone or the actor stuck: it was killed and a new actor started"))
    for extra in errors[1:]:
        logger.warning("also failed in the same call: %s", str(extra).splitlines()[0])
    if errors:
        raise errors[0]
