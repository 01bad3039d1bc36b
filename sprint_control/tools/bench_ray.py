"""The cost of Ray per batch: the same batches through ``SprintPool`` (children on this machine) and
``RaySprintPool`` (each child in a Ray actor, the batch through the object store), side by side.

Both pools have ``num_instances`` RASR-emulator children computing the cheap ``bench`` criterion, so the
difference is what Ray adds: the share gathered and put into the object store, the actor calls, the
answers fetched and copied into the output array. A local Ray cluster is started (loopback, no dashboard)
unless Ray is initialised already. ``python -m sprint_control.tools.bench_ray [--json FILE]``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from ._cli import OneLineParser, positive_int, writable_file_problem

#: (time, label) of each sequence: a small batch (latency) and the large size of ``tools.bench``
SIZES: tuple[tuple[int, int], ...] = ((20, 88), (1000, 9001))
#: the one segment of the emulator's synthetic corpus; the bench criterion takes any length
SEGMENT = "synthetic/rec0000/seg"

__all__ = ["SIZES", "measure_ray_overhead", "format_rows", "main"]


def _posteriors(time_: int, batch: int, labels: int) -> np.ndarray:
    post = np.full((time_, batch, labels), -np.log(labels), dtype=np.float32)
    post[0] = np.random.default_rng(0).standard_normal((batch, labels), dtype=np.float32)
    return post


def _median_ms(pool: Any, post: np.ndarray, repeats: int) -> float:
    lengths = [post.shape[0]] * post.shape[1]
    tags = [SEGMENT] * post.shape[1]
    pool.compute(post, lengths, tags)  # warm: children started, buffers touched
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pool.compute(post, lengths, tags)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def measure_ray_overhead(sizes: Sequence[tuple[int, int]] = SIZES, batch: int = 2, num_instances: int = 2,
                         repeats: int = 10, ray_options: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Per size: median ms per batch of ``batch`` sequences through the local pool and the Ray pool,
    and the difference (Ray's overhead per batch, and per MB of posteriors). ``ray_options``: extra
    keyword arguments of the ``RaySprintPool`` (e.g. ``resources``)."""
    import ray

    from ..parent import SprintPool
    from ..ray import RaySprintPool

    started_ray = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=num_instances, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
        started_ray = True
    rows = []
    try:
        for time_, labels in sizes:
            args = f"--*.training-criterion=bench --*.corpus.num-labels={labels} --*.corpus.synthetic=1"
            post = _posteriors(time_, batch, labels)
            reps = max(3, min(repeats, int(2e9 // max(post.nbytes, 1))))
            with SprintPool(num_instances, sprint_args=args, timeout=300) as local:
                local_ms = _median_ms(local, post, reps)
            with RaySprintPool(num_instances, sprint_args=args, timeout=300, **(ray_options or {})) as remote:
                ray_ms = _median_ms(remote, post, reps)
            mb = post.nbytes / 1e6
            rows.append({"time": time_, "labels": labels, "batch": batch, "instances": num_instances,
                         "mb": round(mb, 3), "local_ms": round(local_ms, 3), "ray_ms": round(ray_ms, 3),
                         "overhead_ms": round(ray_ms - local_ms, 3),
                         "overhead_ms_per_mb": round((ray_ms - local_ms) / mb, 4)})
    finally:
        if started_ray:
            ray.shutdown()
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as the Markdown table of docs/distributed.md."""
    lines = ["| time x label | batch | MB in | local pool ms | Ray pool ms | overhead ms | overhead ms/MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['time']} x {r['labels']} | {r['batch']} | {r['mb']:.2f} | {r['local_ms']:.2f} |"
                     f" {r['ray_ms']:.2f} | {r['overhead_ms']:.2f} | {r['overhead_ms_per_mb']:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineParser(prog="sprint-control bench --ray", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=2, help="sequences per batch (default 2)")
    parser.add_argument("--instances", type=positive_int, default=2, help="children in each pool (default 2)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed batches per size (default 10)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    args = parser.parse_args(argv)
    problem = writable_file_problem(args.json) if args.json else None
    if problem:  # found now, not after the whole run
        parser.error(f"--json: {problem}")
    try:
        import ray  # noqa: F401
    except ImportError:
        parser.error("Ray is not installed: pip install 'sprint_control[ray]'")
    rows = measure_ray_overhead(batch=args.batch, num_instances=args.instances, repeats=args.repeats)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
