"""What Ray adds per batch: ``RaySprintPool`` against ``SprintPool`` on the same batches, two
emulator children each (``sprint_control.tools.bench_ray``). Skipped where Ray is not installed."""

from __future__ import annotations


class RayOverhead:
    """Milliseconds per batch of 2 sequences that the Ray pool takes over the local pool, at a small
    size and at (1000, 9001); a local Ray cluster (loopback, no dashboard) is started for the run."""

    params = [[(20, 88), (1000, 9001)]]
    param_names = ["time_label"]
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, time_label):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise NotImplementedError("Ray is not installed (pip install 'sprint_control[ray]')") from None

    def track_overhead_ms(self, time_label):
        from sprint_control.tools.bench_ray import measure_ray_overhead

        (row,) = measure_ray_overhead([time_label], batch=2, num_instances=2, repeats=5)
        return row["overhead_ms"]

    track_overhead_ms.unit = "ms"
