"""Pools over shared memory: the same results as over the pipe, batch buffers used in place, and a
region that grows with the segments while the children follow."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from sprint_control import SprintPool
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leaks")

SEGMENTS = 8
CORPUS = synthetic_corpus(SEGMENTS, seed=3, max_frames=80)
ARGS = [f"--*.corpus.synthetic={SEGMENTS}", "--*.corpus.seed=3", "--*.corpus.max-frames=80",
        "--*.log-level=warning", "--*.training-criterion=ctc"]


def _batch(pool, labels, seed):
    rng = np.random.default_rng(seed)
    segs = CORPUS.segments
    lengths = np.array([s.num_frames for s in segs])
    a = rng.standard_normal((lengths.max(), len(segs), labels))
    logp = a - np.log(np.exp(a).sum(-1, keepdims=True))
    x = pool.empty(logp.shape) if pool is not None else np.empty(logp.shape, np.float32)
    x[...] = logp
    return x, lengths, [s.name for s in segs]


@pytest.mark.parametrize("num_instances", [1, 2])
def test_shared_memory_pool_equals_the_pipe_pool(num_instances):
    labels = criteria.num_labels("ctc")
    with SprintPool(num_instances, sprint_args=ARGS, timeout=60) as pipe_pool:
        x, lengths, tags = _batch(None, labels, seed=1)
        expected = pipe_pool.compute(x, lengths, tags)
        assert not pipe_pool.uses_shared_memory
    with SprintPool(num_instances, sprint_args=ARGS, timeout=60, shm=True, shm_inline_below=0) as pool:
        assert pool.uses_shared_memory and pool.protocol == 2
        xs, _, _ = _batch(pool, labels, seed=1)
        assert pool.region.locate(xs[:, 0]) is not None  # the batch lives in the region
        got = pool.compute(xs, lengths, tags)
        assert pool.region.locate(got.error_signal[:, 0]) is not None  # and so does the answer
        plain = pool.compute(x, lengths, tags)  # an ordinary array goes through the links' slots
        del xs, got
    assert plain.loss.tobytes() == expected.loss.tobytes()
    assert plain.error_signal.tobytes() == expected.error_signal.tobytes()
    gc.collect()


def test_region_grows_for_a_long_segment_and_children_follow():
    labels = criteria.num_labels("ctc")
    with SprintPool(1, sprint_args=ARGS, timeout=60, shm=4096, shm_max_size=1 << 28, shm_inline_below=0) as pool:
        x, lengths, tags = _batch(pool, labels, seed=2)
        res = pool.compute(x, lengths, tags)
        assert pool.region.generation >= 1 and pool.uses_shared_memory
        exp = [criteria.compute_criterion("ctc", x[: lengths[b], b], orthography=s.orthography)
               for b, s in enumerate(CORPUS.segments)]
        for b, (loss, err) in enumerate(exp):
            if loss is None:
                assert res.loss[b] == np.inf
                continue
            np.testing.assert_allclose(res.loss[b], loss, rtol=1e-5)
            np.testing.assert_allclose(res.error_signal[: lengths[b], b], err, atol=1e-6)
        del x, res
    gc.collect()


def test_a_capped_region_falls_back_to_the_pipe():
    labels = criteria.num_labels("ctc")
    with SprintPool(1, sprint_args=ARGS, timeout=60, shm=4096, shm_max_size=8192, shm_inline_below=0) as pool:
        x, lengths, tags = _batch(None, labels, seed=4)
        res = pool.compute(x, lengths, tags)
    loss0, err0 = criteria.compute_criterion("ctc", x[: lengths[0], 0], orthography=CORPUS.segments[0].orthography)
    np.testing.assert_allclose(res.loss[0], loss0, rtol=1e-5)
