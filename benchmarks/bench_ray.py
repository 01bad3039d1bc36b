"""What Ray adds per batch: ``RaySprintPool`` against ``SprintPool`` on the same batches, two
emulator children each (``sprint_control.tools.bench_ray``).

Where Ray is not installed the benchmark does not exist (the suite's own runner, like asv, then
has nothing to run); with Ray, a local cluster (no dashboard) is started for each run. Ray's servers
listen on every interface whatever node address they are given, so the benchmark exists only where
loopback is the only interface: run asv inside ``unshare -n`` (as ``.ci/run`` does)."""

from __future__ import annotations

import importlib.util
import socket


def _ray_stays_on_this_machine() -> bool:
    return importlib.util.find_spec("ray") is not None and all(n == "lo" for _, n in socket.if_nameindex())


if _ray_stays_on_this_machine():

    class RayOverhead:
        """Milliseconds per batch of 2 sequences that the Ray pool takes over the local pool, at a
        small size and at (1000, 9001) (time, label)."""

        params = [[(20, 88), (1000, 9001)]]
        param_names = ["size"]
        number = 1
        repeat = 1
        timeout = 600
        rounds = 5

        def track_overhead_ms(self, size):
            from sprint_control.tools.bench_ray import measure_ray_overhead

            (row,) = measure_ray_overhead([size], batch=2, num_instances=2, repeats=self.rounds)
            return row["overhead_ms"]

        track_overhead_ms.unit = "ms"
