"""A pool of 1 vs. 2 children sharing a (time, batch, label) batch over v2.

``emulator``: ``SprintPool`` with RASR-emulator children (criterion ``bench``), as a user runs it;
``pipe``: the minimal pipe children of ``sprint_control.tools.bench`` (transport only).
"""

from __future__ import annotations

import time

import numpy as np

from ._pipes import PipePool, expected_error_signal


def _batch(shape):
    t, b, l_ = shape
    post = np.empty(shape, dtype=np.float32)
    post[...] = np.arange(l_, dtype=np.float32)[None, None, :] * np.float32(-1e-3)
    post[0] = np.random.default_rng(0).standard_normal((b, l_), dtype=np.float32)
    return post


class _EmulatorPool:
    """``SprintPool`` of emulator children behind the ``run_batch`` call of ``PipePool``."""

    def __init__(self, n, labels):
        from sprint_control import SprintPool

        args = f"--*.training-criterion=bench --*.corpus.num-labels={labels} --*.corpus.synthetic=1"
        self.pool = SprintPool(num_instances=n, sprint_args=args, timeout=300)
        self.pool.start()

    def run_batch(self, posteriors, seq_lengths, out=None):
        tags = ["synthetic/rec0000/seg"] * posteriors.shape[1]
        res = self.pool.compute(posteriors, np.asarray(seq_lengths), tags)
        return res.loss, res.error_signal

    def close(self):
        self.pool.close()


def _pool(child, n, labels):
    return _EmulatorPool(n, labels) if child == "emulator" else PipePool(n)


class Pool:
    """One batch through a pool of ``children`` children (sequences spread longest first)."""

    params = [[1, 2], ["emulator", "pipe"]]
    param_names = ["children", "child"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 600
    #: (time, batch, label) of the batch; every sequence has the full length
    batch_shape = (300, 16, 4501)

    def setup(self, children, child):
        self.post = _batch(self.batch_shape)
        self.lengths = [self.batch_shape[0]] * self.batch_shape[1]
        self.out = np.zeros_like(self.post)
        self.pool = _pool(child, children, self.batch_shape[2])
        loss, out = self.pool.run_batch(self.post, self.lengths, out=self.out)
        ok = out.shape == self.post.shape and bool(np.isfinite(loss).all())
        if child == "pipe":
            ok = ok and np.array_equal(out[:, 0, :], expected_error_signal(self.post[:, 0, :]))
        if not ok:
            self.pool.close()
            raise AssertionError(f"pool of {child} children: wrong answer")

    def teardown(self, children, child):
        self.pool.close()

    def time_batch(self, children, child):
        self.pool.run_batch(self.post, self.lengths, out=self.out)


class PoolSpeedup:
    """Segments/s of 2 children over 1 on the same batch, measured side by side in one run."""

    params = [["emulator", "pipe"]]
    param_names = ["child"]
    number = 1
    repeat = 1
    timeout = 900
    batch_shape = Pool.batch_shape
    rounds = 5

    def setup(self, child):
        self.post = _batch(self.batch_shape)
        self.lengths = [self.batch_shape[0]] * self.batch_shape[1]
        self.out = np.zeros_like(self.post)
        self.pools = {}
        try:
            for n in (1, 2):
                self.pools[n] = _pool(child, n, self.batch_shape[2])
                self.pools[n].run_batch(self.post, self.lengths, out=self.out)  # warm-up
        except BaseException:
            self.teardown(child)
            raise

    def teardown(self, child):
        for p in self.pools.values():
            p.close()

    def track_two_over_one(self, child):
        times = {1: [], 2: []}
        for _ in range(self.rounds):
            for n, pool in self.pools.items():
                t0 = time.perf_counter()
                pool.run_batch(self.post, self.lengths, out=self.out)
                times[n].append(time.perf_counter() - t0)
        return float(np.median(times[1]) / np.median(times[2]))

    track_two_over_one.unit = "ratio"
