"""A pool of 1 vs. 2 children sharing a (time, batch, label) batch over v2."""

from __future__ import annotations

import time

import numpy as np

from ._pipes import PipePool, expected_error_signal


def _batch(shape):
    t, b, l_ = shape
    post = np.empty(shape, dtype=np.float32)
    post[...] = np.arange(l_, dtype=np.float32)[None, None, :] * np.float32(1e-3)
    post[0] = np.random.default_rng(0).standard_normal((b, l_), dtype=np.float32)
    return post


class Pool:
    """One batch through a pool of ``children`` pipe children (sequences spread longest first)."""

    params = [[1, 2]]
    param_names = ["children"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 600
    #: (time, batch, label) of the batch; every sequence has the full length
    batch_shape = (300, 16, 4501)

    def setup(self, children):
        self.post = _batch(self.batch_shape)
        self.lengths = [self.batch_shape[0]] * self.batch_shape[1]
        self.out = np.zeros_like(self.post)
        self.pool = PipePool(children)
        _, out = self.pool.run_batch(self.post, self.lengths, out=self.out)
        if not np.array_equal(out[:, 0, :], expected_error_signal(self.post[:, 0, :])):
            self.pool.close()
            raise AssertionError("pool: wrong error signal")

    def teardown(self, children):
        self.pool.close()

    def time_batch(self, children):
        self.pool.run_batch(self.post, self.lengths, out=self.out)


class PoolSpeedup:
    """Segments/s of 2 children over 1 on the same batch, measured side by side in one run."""

    number = 1
    repeat = 1
    timeout = 600
    batch_shape = Pool.batch_shape
    rounds = 3

    def setup(self):
        self.post = _batch(self.batch_shape)
        self.lengths = [self.batch_shape[0]] * self.batch_shape[1]
        self.out = np.zeros_like(self.post)
        self.pools = {n: PipePool(n) for n in (1, 2)}

    def teardown(self):
        for p in self.pools.values():
            p.close()

    def track_two_over_one(self):
        times = {1: [], 2: []}
        for _ in range(self.rounds):
            for n, pool in self.pools.items():
                t0 = time.perf_counter()
                pool.run_batch(self.post, self.lengths, out=self.out)
                times[n].append(time.perf_counter() - t0)
        return float(np.median(times[1]) / np.median(times[2]))

    track_two_over_one.unit = "ratio"
