"""Measures how a batch's sequences go out: row by row from the (time, batch, label) array (writev of
row pointers, no copy) versus gathered into a contiguous copy first. Not a test; run it directly:

    python tests/parent/measure_send_paths.py [--frames 1000] [--labels 4501] [--batch 8] [--repeats 5]

The children only echo the posteriors back, so the figures are the transport alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    from sprint_control.parent import SprintPool
    from sprint_control.wire import framing

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--labels", type=int, default=4501)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((args.frames, args.batch, args.labels)).astype(np.float32)
    lengths = np.full(args.batch, args.frames)
    tags = [f"s{b}" for b in range(args.batch)]
    mb = 2 * x.nbytes / 1e6
    print(f"framing: {framing.IMPLEMENTATION}; batch {x.shape} float32, {mb:.0f} MB per batch both ways")
    for n in args.instances:
        for gather in (False, True):
            with SprintPool(n, [sys.executable, os.path.join(HERE, "fake_child.py")], "--fake.echo=true",
                            gather=gather) as pool:
                pool.compute(x, lengths, tags)  # warm-up
                best = float("inf")
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    res = pool.compute(x, lengths, tags)
                    best = min(best, time.perf_counter() - t)
                assert np.array_equal(res.error_signal, x)
            label = "gather copy  " if gather else "strided rows "
            print(f"{n} child(ren), {label}: best {best * 1e3:7.1f} ms  {mb / best:7.0f} MB/s")


if __name__ == "__main__":
    main()
