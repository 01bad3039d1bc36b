"""automata_for_batch: RASR's merged automaton as tensors, with a per-segment LRU cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import FakePool, ctc_automaton, labels_from_name, merge  # noqa: E402

from sprint_control.errors import ProtocolError  # noqa: E402
from sprint_control.torch import AutomataCache, Automaton, automata_for_batch  # noqa: E402


def _weighted_automaton(name):
    """CTC topology with distinct weights per segment, so mixing segments up cannot go unnoticed."""
    n, e, w = ctc_automaton(labels_from_name(name))
    seed = sum(map(ord, name))
    return n, e, np.random.default_rng(seed).uniform(0, 3, size=w.shape).astype(np.float32)


def _pool():
    return FakePool(automaton=_weighted_automaton)


TAGS = ["seg-1-2-2", "seg-3", "seg-2-1", "seg-4-4"]


def _assert_equal_to_numpy(aut, ref, index_dtype):
    edges, weights, start_end = ref
    assert isinstance(aut, Automaton)
    assert aut.edges.dtype == index_dtype and aut.start_end_states.dtype == index_dtype
    assert aut.weights.dtype == torch.float32
    assert aut.edges.shape == (4, edges.shape[1]) and aut.start_end_states.shape == (2, start_end.shape[1])
    np.testing.assert_array_equal(aut.edges.numpy(), edges.astype(np.int64))
    np.testing.assert_array_equal(aut.weights.numpy(), weights)
    np.testing.assert_array_equal(aut.start_end_states.numpy(), start_end.astype(np.int64))


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_tensors_equal_the_numpy_api(index_dtype):
    pool = _pool()
    ref = _pool().get_automata_for_batch(TAGS)
    _assert_equal_to_numpy(automata_for_batch(TAGS, pool, index_dtype=index_dtype), ref, index_dtype)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_cached_tensors_equal_the_numpy_api(index_dtype):
    pool = _pool()
    cache = AutomataCache()
    automata_for_batch(["seg-3", "seg-4-4"], pool, cache=cache)  # warm part of the batch, other order
    ref = _pool().get_automata_for_batch(TAGS)
    _assert_equal_to_numpy(automata_for_batch(TAGS, pool, cache=cache, index_dtype=index_dtype), ref, index_dtype)


def test_cache_asks_rasr_only_for_missing_segments():
    pool = _pool()
    cache = AutomataCache()
    automata_for_batch(TAGS[:2], pool, cache=cache)
    automata_for_batch(TAGS, pool, cache=cache)
    automata_for_batch(list(reversed(TAGS)), pool, cache=cache)  # next epoch, shuffled: nothing fetched
    assert pool.automata_calls == [TAGS[:2], TAGS[2:]]
    assert (cache.hits, cache.misses) == (2 + 4, 2 + 2)
    assert len(cache) == 4


def test_duplicate_tags_are_fetched_once_and_kept_apart_in_the_batch():
    pool = _pool()
    cache = AutomataCache()
    tags = ["seg-1-2", "seg-3", "seg-1-2"]
    aut = automata_for_batch(tags, pool, cache=cache)
    assert pool.automata_calls == [["seg-1-2", "seg-3"]]
    _assert_equal_to_numpy(aut, _pool().get_automata_for_batch(tags), torch.int64)


def test_lru_evicts_the_least_recently_used_segment():
    pool = _pool()
    cache = AutomataCache(maxsize=2)
    automata_for_batch(["seg-1"], pool, cache=cache)
    automata_for_batch(["seg-2"], pool, cache=cache)
    automata_for_batch(["seg-1"], pool, cache=cache)  # seg-1 is now the most recent
    automata_for_batch(["seg-3"], pool, cache=cache)  # evicts seg-2
    assert "seg-1" in cache and "seg-3" in cache and "seg-2" not in cache
    automata_for_batch(["seg-2"], pool, cache=cache)
    assert pool.automata_calls == [["seg-1"], ["seg-2"], ["seg-3"], ["seg-2"]]


def test_maxsize_zero_caches_nothing_and_clear_empties():
    pool = _pool()
    off = AutomataCache(maxsize=0)
    automata_for_batch(["seg-1"], pool, cache=off)
    automata_for_batch(["seg-1"], pool, cache=off)
    assert len(pool.automata_calls) == 2 and len(off) == 0
    cache = AutomataCache(maxsize=None)
    automata_for_batch(TAGS, pool, cache=cache)
    assert len(cache) == 4
    cache.clear()
    assert len(cache) == 0 and cache.hits == 0


def test_cache_is_safe_from_many_threads():
    pool = _pool()
    lock = threading.Lock()
    inner = pool.get_automata_for_batch

    def locked(tags):  # the real pool serializes its own calls
        with lock:
            return inner(tags)

    pool.get_automata_for_batch = locked
    cache = AutomataCache(maxsize=3)
    ref = {t: _pool().get_automata_for_batch([t, "seg-3"]) for t in TAGS}
    errors = []

    def run(i):
        try:
            for k in range(20):
                t = TAGS[(i + k) % len(TAGS)]
                aut = automata_for_batch([t, "seg-3"], pool, cache=cache)
                _assert_equal_to_numpy(aut, ref[t], torch.int64)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors and not any(th.is_alive() for th in threads)
    assert len(cache) <= 3


def test_automata_feed_the_fullsum_loss_end_to_end():
    from sprint_control.torch import fullsum_loss, fullsum_loss_for_batch

    pool = _pool()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, len(TAGS), 5, generator=g, dtype=torch.float64, requires_grad=True)
    lens = [9, 3, 6, 5]
    loss = fullsum_loss_for_batch(logits, lens, TAGS, pool, cache=AutomataCache())
    aut = automata_for_batch(TAGS, pool)
    ref = fullsum_loss(torch.log_softmax(logits, -1), lens, *aut)
    torch.testing.assert_close(loss, ref)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "answer, match",
    [
        ((np.zeros((3, 1), np.uint32), np.zeros(1, np.float32), np.zeros((2, 1), np.uint32)), r"shape \(4"),
        ((np.zeros((4, 1), np.uint32), np.zeros(2, np.float32), np.zeros((2, 1), np.uint32)), "weights"),
        ((np.zeros((4, 0), np.uint32), np.zeros(0, np.float32), np.zeros((2, 2), np.uint32)), "start_end"),
        ((np.array([[0], [5], [0], [0]], np.uint32), np.zeros(1, np.float32), np.array([[0], [2]], np.uint32)),
         "leaves the state range"),
    ],
)
def test_malformed_pool_answer_is_a_protocol_error(answer, match):
    class Bad:
        def get_automata_for_batch(self, tags):
            return answer

    with pytest.raises(ProtocolError, match=match):
        automata_for_batch(["seg-1"], Bad())


def test_bad_index_dtype_is_refused():
    with pytest.raises(TypeError, match="index_dtype"):
        automata_for_batch(TAGS, _pool(), index_dtype=torch.float32)


def test_merge_helper_agrees_with_the_parent_layout():
    # The test helper and the package's own merge (parent side) must describe one layout.
    from sprint_control import parent
    parts = [_weighted_automaton(t) for t in TAGS]
    ours = merge(parts)
    theirs = parent.merge_automata([(n, e.shape[1], e.reshape(-1), w) for n, e, w in parts])
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
